"""The full model's forward with what the gate methods need: multiplicative masks per embedding channel,
head and MLP unit, an MSA-vs-conv mix per block, a token keep policy with attention masking, and taps
(exit-head logits, attention maps, the tokens entering each block).

It runs the timm model's own modules at full width, so with no masks it equals ``sn(x)`` (tested).
Masks multiply a unit's output where the pruned unit's output would vanish: after the norms for embedding
channels (the inputs of every attention and MLP, as VTP gates them), on each head's output before the
projection, on each hidden unit after the activation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..subnet import add_position, conv_kernel, conv_mix, mlp_hidden, readout


@dataclass
class Masks:
    embed: torch.Tensor | None = None   # [E]
    heads: torch.Tensor | None = None   # [D, H]
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
    vit, s = sn.vit, sn.spec
    m = masks or Masks()
    x = vit.norm_pre(add_position(s, vit.patch_embed(x), vit.pos_embed,
                                  [vit.cls_token, getattr(vit, "dist_token", None), vit.reg_token]))
    B, T, _ = x.shape
    H, hd, P = s.num_heads, s.head_dim, s.prefix
    policy = None  # over patch tokens; prefix tokens are always kept
    trace = Trace(logits=None)
    for i, blk in enumerate(vit.blocks):
        if decide is not None:
            new = decide(i, x, policy if policy is not None else x.new_ones(B, T - P))
            if new is not None:
                policy = new
                trace.policies.append(policy)
        if taps:
            trace.tokens.append(x)
        h = blk.norm1(x)
        if m.embed is not None:
            h = h * m.embed
        q, k, v = blk.attn.qkv(h).reshape(B, T, 3, H, hd).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = blk.attn.q_norm(q), blk.attn.k_norm(k)
        logits = (q * hd ** -0.5) @ k.transpose(-2, -1)
        if policy is not None:
            attn = softmax_with_policy(logits, torch.cat([policy.new_ones(B, P), policy], dim=1))
        else:
            attn = logits.softmax(dim=-1)
        if taps:
            trace.attn.append(attn.mean(dim=1))
        o = attn @ v
        if m.heads is not None:
            o = o * m.heads[i].view(1, H, 1, 1)
            v = v * m.heads[i].view(1, H, 1, 1)
        y = blk.attn.proj(o.transpose(1, 2).reshape(B, T, H * hd))
        if m.msa is not None:  # SPViT: the conv branch made of the same block's v and proj
            vt = v.transpose(1, 2).reshape(B, T, H * hd)
            conv = blk.attn.proj(conv_mix(vt, conv_kernel(sn.conv_offsets[i], H, hd), P, s.grid))
            y = m.msa[i] * y + (1 - m.msa[i]) * conv
        x = x + blk.ls1(y)
        h = blk.norm2(x)
        if m.embed is not None:
            h = h * m.embed
        u = mlp_hidden(s, blk.mlp, h)
        if m.mlp is not None:
            u = u * m.mlp[i]
        x = x + blk.ls2(blk.mlp.fc2(u))
        if exits and str(i + 1) in sn.exits:
            ex = sn.exits[str(i + 1)]
            trace.exits[i + 1] = readout(s, x, ex)
    trace.final = x
    trace.logits = readout(s, x, vit)
    return trace
