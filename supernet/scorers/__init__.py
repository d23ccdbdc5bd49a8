"""Token scorers: which patch tokens a block keeps. One file per scorer, registered by name.

A scorer maps the tokens entering a block (``x``: [B, 1+n, E], class token first) and, when the subnet
has one, the class-token attention of the most recent MSA block (``cls_attn``: [B, n]) to a score per
patch token ([B, n]); the block keeps the top-k. Scorers may hold parameters sized by the embedding
width; ``width`` is the subnet's embedding width.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

SCORERS: dict[str, type["TokenScorer"]] = {}


class TokenScorer(nn.Module):
    name: ClassVar[str]

    def __init__(self, width: int):
        super().__init__()
        self.width = width

    def forward(self, x: torch.Tensor, cls_attn: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


def register_scorer(cls: type[TokenScorer]) -> type[TokenScorer]:
    SCORERS[cls.name] = cls
    return cls


def build_scorer(name: str, width: int) -> TokenScorer:
    if name not in SCORERS:
        raise ValueError(f"unknown token scorer {name!r}; valid scorers are {sorted(SCORERS)}")
    return SCORERS[name](width)


from . import cls_attention  # noqa: E402,F401  (registers itself)
