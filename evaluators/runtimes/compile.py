"""The "compile" runtime: ``torch.compile`` (Inductor). Compiling happens in ``prepare``, so its seconds are
reported as the measurement's setup time and never inside the latency."""

from __future__ import annotations

import torch

from . import Runtime, register_runtime
from .torch_eager import FLOATS


@register_runtime
class TorchCompile(Runtime):
    name = "compile"
    summary = "torch.compile (Inductor); compile time reported apart from latency"
    dtypes = {"cpu": ("float32", "bfloat16"), "cuda": FLOATS}

    def prepare(self, model, example, threads, workdir):
        model.to(device=example.device, dtype=example.dtype)
        compiled = torch.compile(model, dynamic=False)

        def run():
            with torch.inference_mode():
                return compiled(example)

        run()  # compiles now, inside setup time
        return run
