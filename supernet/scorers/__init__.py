"""Token scorers: which patch tokens a block keeps. One file per scorer, registered by name.

A scorer maps the patch tokens entering a block (``patches``: [B, n, E]), the token the model summarises
them with (``summary``: [B, E], the class token, or the mean patch without one) and, when the subnet has
one, the most recent MSA block's attention to each patch (``cls_attn``: [B, n], ``subnet.patch_attention``)
to a score per patch token ([B, n]); the block keeps the top-k. A scorer may hold parameters: ``width`` is the subnet's
embedding width and ``base_width`` the base model's; the supernet holds one full-width scorer per block, and
``embed_dims`` declares which dimension of which parameter holds embedding channels: that is how it is cut
for a subnet and permuted with the embedding (``supernet.structure``); every other dimension stays whole.
"""
from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn

from ..config import ConfigError

SCORERS: dict[str, type["TokenScorer"]] = {}


class TokenScorer(nn.Module, metaclass=abc.ABCMeta):
    name: ClassVar[str]
    embed_dims: ClassVar[dict[str, int]] = {}  # parameter name -> its dimension of embedding channels

    def __init__(self, width: int, base_width: int):
        super().__init__()
        self.width, self.base_width = width, base_width

    @abc.abstractmethod
    def forward(self, patches: torch.Tensor, summary: torch.Tensor, cls_attn: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


def register_scorer(cls: type[TokenScorer]) -> type[TokenScorer]:
    SCORERS[cls.name] = cls
    return cls


def build_scorer(name: str, width: int, base_width: int) -> TokenScorer:
    if name not in SCORERS:
        raise ConfigError(f"unknown token scorer {name!r}; valid scorers are {sorted(SCORERS)}")
    return SCORERS[name](width, base_width)


def has_weights(name: str) -> bool:
    return any(True for _ in SCORERS[name](8, 8).parameters())


from . import cls_attention, dynamicvit, patchslim  # noqa: E402,F401  (each registers itself)
