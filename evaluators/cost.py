"""FLOPs and parameter counts of a model (fvcore), the device-independent side of cost."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import torch
from torch import nn

@dataclass(frozen=True)
class Cost:
    """FLOPs (multiply-adds, see `count_cost`) and parameter elements of a model."""

    flops: int
    params: int

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6


def _sdpa_flops(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::scaled_dot_product_attention: the q @ k^T and attn @ v matmuls (fvcore has no
    handle for it, so timm's fused attention would otherwise count as zero)."""
    from fvcore.nn.jit_handles import get_shape

    q, _, v = (get_shape(x) for x in inputs[:3])
    batch, nq, dqk = prod(q[:-2]), q[-2], q[-1]
    nk, dv = v[-2], v[-1]
    return batch * nq * nk * dqk + batch * nq * nk * dv


@functools.cache
def _handles() -> dict:
    """fvcore, imported on first use: it is slow to import and only FLOP counting needs it.

    The ops we count: fvcore's defaults also count norms, pooling and upsampling; we count only
    multiply-adds of matmuls and convolutions (the ViT-paper convention). The list is positive
    because fvcore's set_op_handle(op, None) does not remove a handle that is already set.
    """
    with warnings.catch_warnings():
        # fvcore.nn's __init__ runs torch.jit.script on a loss function, which torch 2.14 flags as
        # deprecated (FutureWarning) on every import; nothing of ours uses it.
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn.jit_handles import (addmm_flop_jit, bmm_flop_jit, conv_flop_jit, einsum_flop_jit,
                                           linear_flop_jit, matmul_flop_jit)
    return {
        "aten::_convolution": conv_flop_jit,
        "aten::addmm": addmm_flop_jit,
        "aten::bmm": bmm_flop_jit,
        "aten::einsum": einsum_flop_jit,
        "aten::linear": linear_flop_jit,
        "aten::matmul": matmul_flop_jit,
        "aten::mm": matmul_flop_jit,
        "aten::scaled_dot_product_attention": _sdpa_flops,
    }


def count_cost(model: nn.Module, input_shape: Sequence[int]) -> Cost:
    """FLOPs of one batch-1 forward pass and the number of parameter elements.

    FLOPs follow fvcore's convention: one multiply-add counts as one flop. Only convolutions,
    linears and matmuls (attention's included) are counted; norms, activations, softmax,
    elementwise ops and token selection (topk, gather) are not. `input_shape` is (C, H, W).
    The model is traced in eval mode; every module's training flag is restored afterwards.
    """
    param = next(model.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else ("cpu", torch.float32)
    example = torch.zeros((1, *input_shape), device=device, dtype=dtype)
    flags = [m.training for m in model.modules()]
    model.eval()
    try:
        handles = _handles()
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model, example).clear_op_handles().set_op_handle(**handles)
        # Ops without a handle are not matmuls (softmax, gelu, add, topk, ...): no warnings.
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        flops = int(analysis.total())
    finally:
        for module, flag in zip(model.modules(), flags):
            module.training = flag
    params = sum(p.numel() for p in model.parameters())
    return Cost(flops=flops, params=params)
