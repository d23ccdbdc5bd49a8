"""Importance ordering: permute the shared weights so every axis is sorted by importance.

After ``reorder``, "keep k" means "keep the k most important" on every axis — the weight-sharing contract.
A permutation of channels, heads or units, applied consistently to every weight that touches them, leaves
the full model's function unchanged (LayerNorm statistics are permutation-invariant).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .structure import permute, unit_magnitudes


@dataclass
class Importance:
    """Scores, higher = more important: embedding channels [E], each block's heads [H] and MLP units [M], and
    each block's query/key and value channels per head [H, head_dim] (ordered within each head)."""

    embed: torch.Tensor
    heads: list[torch.Tensor]
    mlp: list[torch.Tensor]
    qk: list[torch.Tensor]
    v: list[torch.Tensor]


@torch.no_grad()
def reorder(sn, imp: Importance) -> None:
    """Sort ``sn``'s shared weights (in place) by ``imp``, most important first, on every axis."""
    def order(scores):
        return torch.argsort(scores, descending=True, stable=True, dim=-1)

    orders = {"embed": order(imp.embed)}
    for i in range(sn.spec.depth):
        heads = order(imp.heads[i])
        orders[f"heads.{i}"], orders[f"mlp.{i}"] = heads, order(imp.mlp[i])
        # a head's channels move with it: their orders listed in the heads' new order
        orders[f"qk.{i}"], orders[f"v.{i}"] = order(imp.qk[i])[heads], order(imp.v[i])[heads]
    permute(sn, orders)


def magnitude_importance(sn) -> Importance:
    """A training-free baseline: L1 norms of the weights each unit owns (the learned gates replace it)."""
    m = unit_magnitudes(sn)
    depth = range(sn.spec.depth)
    flat = torch.ones(sn.spec.num_heads, sn.spec.head_dim)  # no qk axis (normalised q, k): nothing to order
    return Importance(embed=m["embed"], heads=[m[f"heads.{i}"] for i in depth], mlp=[m[f"mlp.{i}"] for i in depth],
                      qk=[m.get(f"qk.{i}", flat) for i in depth], v=[m[f"v.{i}"] for i in depth])
