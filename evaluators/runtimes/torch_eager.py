"""The "torch-eager" runtime: plain PyTorch, module called in inference mode."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from . import Runtime, register_runtime


@register_runtime
class TorchEager(Runtime):
    name = "torch-eager"

    def prepare(
        self, model: nn.Module, example: Tensor, device: torch.device, threads: int
    ) -> Callable[[], Any]:
        # `threads` needs no handling here: the caller pins torch's intra-op pool for the run.
        model.to(device=device, dtype=example.dtype)

        def run() -> Tensor:
            with torch.inference_mode():
                return model(example)

        return run
