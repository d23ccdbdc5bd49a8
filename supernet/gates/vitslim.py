"""ViT-Slim (Chavan et al. 2022): soft masks, initialised to 1, on every head and MLP hidden unit, with
L1 sparsity added to the task loss; one search, then rank the masks globally across blocks."""
from __future__ import annotations

import torch
from torch import nn

from . import GateMethod, global_counts, make_config, register_method, task_loss, unique
from .forward import Masks, gated_forward


@register_method
class ViTSlim(GateMethod):
    name = "vitslim"
    l1 = 0.5
    levels = (0.75, 0.5, 0.3)  # fractions of heads and MLP units kept, by one global threshold each

    def __init__(self, sn, costs):
        super().__init__(sn, costs)
        s = sn.spec
        self.heads = nn.Parameter(torch.ones(s.depth, s.num_heads))
        self.mlp = nn.Parameter(torch.ones(s.depth, s.mlp_hidden))

    def loss(self, sn, x, y, teacher):
        student = gated_forward(sn, x, Masks(heads=self.heads, mlp=self.mlp)).logits
        sparsity = self.heads.abs().mean() + self.mlp.abs().mean()
        return task_loss(student, teacher.logits, y) + self.l1 * sparsity, {"l1": sparsity.item()}

    def importance(self):
        return {"heads": self.heads.detach().abs(), "mlp": self.mlp.detach().abs()}

    def proposals(self, sn):
        imp, space = self.importance(), sn.space
        return unique([make_config(space, heads=global_counts(imp["heads"], f, space.heads),
                                   mlp=global_counts(imp["mlp"], f, space.mlp)) for f in self.levels])
