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
    """Scores, higher = more important: embedding channels [E], each block's heads [H] and MLP units [M]."""

    embed: torch.Tensor
    heads: list[torch.Tensor]
    mlp: list[torch.Tensor]


@torch.no_grad()
def reorder(sn, imp: Importance) -> None:
    """Sort ``sn``'s shared weights (in place) by ``imp``, most important first, on every axis."""
    def order(scores):
        return torch.argsort(scores, descending=True, stable=True)

    orders = {"embed": order(imp.embed)}
    for i in range(sn.spec.depth):
        orders[f"heads.{i}"], orders[f"mlp.{i}"] = order(imp.heads[i]), order(imp.mlp[i])
    permute(sn, orders)


def magnitude_importance(sn) -> Importance:
    """A training-free baseline: L1 norms of the weights each unit owns (the learned gates replace it)."""
    m = unit_magnitudes(sn)
    depth = range(sn.spec.depth)
    return Importance(embed=m["embed"], heads=[m[f"heads.{i}"] for i in depth], mlp=[m[f"mlp.{i}"] for i in depth])
