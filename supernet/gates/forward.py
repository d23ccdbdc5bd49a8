"""The full model's forward with what the gate methods need: multiplicative masks per embedding channel,
head and MLP unit, an MSA-vs-conv mix per block, a token keep policy with attention masking, and taps
(exit-head logits, attention maps, the tokens entering each block).

It is the supernet's own forward of the largest subnet (the modules of ``supernet/subnet.py`` on the shared
weights) with hooks on those modules, so there is no second description of the model: with no masks it is
``sn(x)`` (tested). Masks multiply a unit's output where the pruned unit's output would vanish: after the
norms for embedding channels (the inputs of every attention and MLP, as VTP gates them), on each head's
output where the projection reads it, on each hidden unit where the second MLP layer reads it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.func import functional_call

from ..subnet import conv_kernel, conv_mix, readout


@dataclass
class Masks:
    embed: torch.Tensor | None = None   # [E]
    heads: torch.Tensor | None = None   # [D, H]
    qk: torch.Tensor | None = None      # [D, H, head_dim]: each head's query/key channels (on q)
    v: torch.Tensor | None = None       # [D, H, head_dim]: each head's value channels
    mlp: torch.Tensor | None = None     # [D, M]
    msa: torch.Tensor | None = None     # [D]: weight of the MSA branch, the conv branch gets 1 - msa


@dataclass
class Trace:
    logits: torch.Tensor
    exits: dict[int, torch.Tensor] = field(default_factory=dict)   # depth -> logits of its exit head
    tokens: list[torch.Tensor] = field(default_factory=list)       # tokens entering each block
    attn: list[torch.Tensor] = field(default_factory=list)         # head-averaged attention per block
    final: torch.Tensor | None = None                              # tokens after the last block
    policies: list[torch.Tensor] = field(default_factory=list)     # keep policies decided on the way


def softmax_with_policy(logits: torch.Tensor, policy: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Attention where dropped tokens (policy 0) are invisible as keys to every other token (DynamicViT)."""
    B, T = policy.shape
    keys = policy.view(B, 1, 1, T)
    eye = torch.eye(T, dtype=logits.dtype, device=logits.device).view(1, 1, T, T)
    keys = keys + (1.0 - keys) * eye  # a token always sees itself, so no row is empty
    w = (logits - logits.amax(dim=-1, keepdim=True)).exp() * keys
    return (w + eps / T) / (w.sum(dim=-1, keepdim=True) + eps)


def gated_forward(sn, x: torch.Tensor, masks: Masks | None = None,
                  decide: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None,
                  exits: bool = False, taps: bool = False) -> Trace:
    """Forward the full-width model. ``decide(block, tokens, policy)`` may return a new patch keep policy
    ([B, N], 1 = keep) before a block; ``exits`` adds every exit head's logits; ``taps`` keeps tokens and
    attention maps."""
    s, m = sn.spec, masks or Masks()
    largest = sn.space.largest()
    model = sn.template(largest)
    H, hd, P = s.num_heads, s.head_dim, s.prefix
    trace = Trace(logits=None)
    state: dict = {"policy": None}  # over patch tokens; prefix tokens are always kept
    hooks = []

    def on(module, kind: str, fn):
        hooks.append(getattr(module, f"register_forward_{kind}")(fn))

    for i, blk in enumerate(model.blocks):
        attn = blk.mixer

        def enter(_, args, i=i):
            tokens = args[0]
            if decide is not None:
                B, T = tokens.shape[:2]
                current = state["policy"] if state["policy"] is not None else tokens.new_ones(B, T - P)
                new = decide(i, tokens, current)
                if new is not None:
                    state["policy"] = new
                    trace.policies.append(new)
            if taps:
                trace.tokens.append(tokens)

        def leave(_, args, out, i=i):
            if exits and str(i + 1) in sn.exits:
                trace.exits[i + 1] = readout(s, out[0], sn.exits[str(i + 1)])
            trace.final = out[0]

        on(blk, "pre_hook", enter)
        on(blk, "hook", leave)
        if m.embed is not None:
            for norm in (blk.norm1, blk.norm2):
                on(norm, "hook", lambda _, args, out: out * m.embed)
        if m.qk is not None:  # a query channel at 0 removes its term from every head's dot products
            on(attn.qkv, "hook", lambda _, args, out, i=i: (
                out.unflatten(-1, (3, H, hd)) * torch.stack([m.qk[i], torch.ones_like(m.qk[i]),
                                                             torch.ones_like(m.qk[i])])).flatten(-3))
        if m.heads is not None or m.v is not None:  # each head's output channels (under the conv mix too)
            def outputs(_, args, i=i):
                scale = (m.heads[i].view(H, 1) if m.heads is not None else 1) * (m.v[i] if m.v is not None else 1)
                return (args[0].unflatten(-1, (H, hd)) * scale).flatten(-2),
            on(attn.proj, "pre_hook", outputs)
        if m.mlp is not None:
            on(blk.mlp.fc2, "pre_hook", lambda _, args, i=i: (args[0] * m.mlp[i],))
        if decide is not None or taps:  # the attention map is masked by the keep policy, or read
            def attention(_, args, out):
                if state["policy"] is not None:
                    B = out.shape[0]
                    out = softmax_with_policy(args[0], torch.cat([state["policy"].new_ones(B, P), state["policy"]], 1))
                if taps:
                    trace.attn.append(out.mean(dim=1))
                return out
            on(attn.softmax, "hook", attention)
        if m.msa is not None:  # SPViT: the conv branch made of the same block's v and proj
            on(attn.qkv, "hook", lambda _, args, out: state.__setitem__("qkv", out))

            def mix(module, args, out, i=i):
                v = state["qkv"].unflatten(-1, (3, H * hd))[..., 2, :]
                conv = module.proj(conv_mix(v, conv_kernel(sn.conv_offsets[i], H, hd), P, s.grid))
                return m.msa[i] * out[0] + (1 - m.msa[i]) * conv, out[1]
            on(attn, "hook", mix)
    try:
        trace.logits = functional_call(model, sn.subnet_weights(largest), (x,), strict=True)
    finally:
        for h in hooks:
            h.remove()
    return trace
