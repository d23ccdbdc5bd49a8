"""The "onnxruntime" runtime: the model exported to ONNX and run by onnxruntime's CPU provider."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from . import Runtime, register_runtime


def export_onnx(model: nn.Module, example: Tensor, path: str | Path) -> None:
    """One self-contained ONNX file of ``model`` at ``example``'s shape."""
    # torch>=2.9 defaults to the torch.export-based ("dynamo") exporter; it handles timm ViTs (incl.
    # scaled_dot_product_attention) and topk + gather, and is the maintained path (the TorchScript one is
    # deprecated). external_data=False keeps weights in the one file; verbose=False silences its log.
    torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False, verbose=False)


@register_runtime
class OnnxRuntime(Runtime):
    name = "onnxruntime"

    def prepare(
        self, model: nn.Module, example: Tensor, device: torch.device, threads: int
    ) -> Callable[[], Any]:
        if device.type != "cpu":
            raise ValueError(
                f"the onnxruntime runtime runs on CPU only, not {device}; "
                "use --device cpu or --runtime torch-eager"
            )
        # Imported here so that torch-eager users never pay for (or need) onnxruntime.
        import onnxruntime as ort

        model.to(device="cpu", dtype=example.dtype)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            export_onnx(model, example, path)
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1  # one graph, run sequentially: no inter-op pool
            session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        feed = {session.get_inputs()[0].name: example.numpy()}
        return lambda: session.run(None, feed)
