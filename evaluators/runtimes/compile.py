"""The "compile" runtime: ``torch.compile`` (Inductor). Compiling happens in ``prepare``, so its seconds are
reported as the measurement's setup time and never inside the latency."""

from __future__ import annotations

import torch

from . import register_runtime
from .torch_eager import TorchEager


@register_runtime
class TorchCompile(TorchEager):
    name = "compile"
    summary = "torch.compile (Inductor); compile time reported apart from latency"

    def compiled(self, model):
        return torch.compile(model, dynamic=False)
