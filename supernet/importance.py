"""Importance ordering: permute the shared weights so every axis is sorted by importance.

After ``reorder``, "keep k" means "keep the k most important" on every axis — the weight-sharing contract.
A permutation of channels, heads or units, applied consistently to every weight that touches them, leaves
the full model's function unchanged (LayerNorm statistics are permutation-invariant).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Importance:
    """Scores, higher = more important: embedding channels [E], each block's heads [H] and MLP units [M]."""

    embed: torch.Tensor
    heads: list[torch.Tensor]
    mlp: list[torch.Tensor]


def _take(t: torch.Tensor, dim: int, order: torch.Tensor) -> None:
    t.copy_(t.index_select(dim, order))  # in place: optimisers keep pointing at the same parameters


def _take_norm(norm: nn.Module, order: torch.Tensor) -> None:
    for p in (getattr(norm, "weight", None), getattr(norm, "bias", None)):
        if p is not None:
            _take(p, 0, order)


@torch.no_grad()
def reorder(sn, imp: Importance) -> None:
    """Sort ``sn``'s shared weights (in place) by ``imp``, most important first, on every axis."""
    vit, s = sn.vit, sn.spec
    e = torch.argsort(imp.embed, descending=True, stable=True).to(vit.cls_token.device)
    _take(vit.patch_embed.proj.weight, 0, e)
    _take(vit.patch_embed.proj.bias, 0, e)
    _take_norm(vit.patch_embed.norm, e)
    _take(vit.cls_token, 2, e)
    _take(vit.pos_embed, 2, e)
    _take_norm(vit.norm_pre, e)
    for i, blk in enumerate(vit.blocks):
        h = torch.argsort(imp.heads[i], descending=True, stable=True).to(e.device)
        m = torch.argsort(imp.mlp[i], descending=True, stable=True).to(e.device)
        attn, mlp = blk.attn, blk.mlp
        # embedding channels: inputs of qkv and fc1, outputs of proj and fc2, and the norms / layer scales
        for norm in (blk.norm1, blk.norm2):
            _take_norm(norm, e)
        _take(attn.qkv.weight, 1, e)
        _take(mlp.fc1.weight, 1, e)
        for lin in (attn.proj, mlp.fc2):
            _take(lin.weight, 0, e)
            if lin.bias is not None:
                _take(lin.bias, 0, e)
        if s.layer_scale:
            _take(blk.ls1.gamma, 0, e)
            _take(blk.ls2.gamma, 0, e)
        # heads: whole head blocks of q, k and v, the matching input columns of proj, SPViT's offsets
        _take(attn.qkv.weight.view(3, s.num_heads, s.head_dim, -1), 1, h)
        if attn.qkv.bias is not None:
            _take(attn.qkv.bias.view(3, s.num_heads, s.head_dim), 1, h)
        _take(attn.proj.weight.view(-1, s.num_heads, s.head_dim), 1, h)
        _take(sn.conv_offsets[i], 0, h)
        # MLP hidden units
        _take(mlp.fc1.weight, 0, m)
        if mlp.fc1.bias is not None:
            _take(mlp.fc1.bias, 0, m)
        _take(mlp.fc2.weight, 1, m)
    for scorers in sn.token_scorers.values():
        for scorer in scorers:
            scorer.reorder_embed(e)
    heads = [{"norm": vit.norm, "head": vit.head}] + list(sn.exits.values())
    for ex in heads:
        _take_norm(ex["norm"], e)
        _take(ex["head"].weight, 1, e)


def magnitude_importance(sn) -> Importance:
    """A training-free baseline: L1 norms of the weights each unit owns (the learned gates replace it)."""
    vit, s = sn.vit, sn.spec
    embed = vit.patch_embed.proj.weight.detach().abs().flatten(1).sum(1)
    heads, mlp = [], []
    for blk in vit.blocks:
        w = blk.attn.qkv.weight.detach().abs().view(3, s.num_heads, s.head_dim, -1)
        heads.append(w.sum(dim=(0, 2, 3)))
        mlp.append(blk.mlp.fc1.weight.detach().abs().sum(1) + blk.mlp.fc2.weight.detach().abs().sum(0))
        embed = embed + blk.mlp.fc2.weight.detach().abs().sum(1)
    return Importance(embed=embed, heads=heads, mlp=mlp)
