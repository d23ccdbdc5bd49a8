"""ViT-Slim (Chavan et al. 2022): soft masks, initialised to 1, on every head, every query/key and value
channel of every head, and every MLP hidden unit, with L1 sparsity added to the task loss; one search, then
rank the masks globally across blocks."""
from __future__ import annotations

import torch
from torch import nn

from . import GateMethod, global_counts, make_config, register_method, task_loss, unique
from .forward import Masks, gated_forward


@register_method
class ViTSlim(GateMethod):
    name = "vitslim"
    l1 = 0.5
    levels = (0.75, 0.5, 0.3)  # fractions of units kept, by one global threshold per axis each

    def __init__(self, sn, costs):
        super().__init__(sn, costs)
        s = sn.spec
        self.heads = nn.Parameter(torch.ones(s.depth, s.num_heads))
        self.mlp = nn.Parameter(torch.ones(s.depth, s.mlp_hidden))
        # per channel of each head; an axis the space fixes (qk under qk_norm) gets no mask
        self.widths = nn.ParameterDict({axis: nn.Parameter(torch.ones(s.depth, s.num_heads, s.head_dim))
                                        for axis in ("qk", "v") if len(getattr(sn.space, axis).choices) > 1})

    def loss(self, sn, x, y, teacher):
        student = gated_forward(sn, x, Masks(heads=self.heads, mlp=self.mlp, **self.widths)).logits
        sparsity = sum(m.abs().mean() for m in [self.heads, self.mlp, *self.widths.values()])
        return task_loss(student, teacher.logits, y) + self.l1 * sparsity, {"l1": sparsity.item()}

    def importance(self):
        return {axis: m.detach().abs() for axis, m in [("heads", self.heads), ("mlp", self.mlp),
                                                        *self.widths.items()]}

    def proposals(self, sn):
        imp, space = self.importance(), sn.space
        return unique([make_config(space, **{axis: global_counts(scores, f, getattr(space, axis))
                                             for axis, scores in imp.items()}) for f in self.levels])
