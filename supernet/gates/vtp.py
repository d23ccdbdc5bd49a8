"""VTP (Zhu et al. 2021): a real-valued gate per embedding channel, L1-regularised; importance = |gate|."""
from __future__ import annotations

import torch
from torch import nn

from . import GateMethod, make_config, register_method, snap, task_loss
from .forward import Masks, gated_forward


@register_method
class VTP(GateMethod):
    name = "vtp"
    l1 = 0.5
    levels = (0.75, 0.5, 0.375)  # fractions of the channels kept, by one global threshold on |gate|

    def __init__(self, sn, costs):
        super().__init__(sn, costs)
        self.gate = nn.Parameter(torch.ones(sn.spec.embed_dim))

    def loss(self, sn, x, y, teacher):
        student = gated_forward(sn, x, Masks(embed=self.gate)).logits
        sparsity = self.gate.abs().mean()
        return task_loss(student, teacher.logits, y) + self.l1 * sparsity, {"l1": sparsity.item()}

    def importance(self):
        return {"embed": self.gate.detach().abs()}

    def proposals(self, sn):
        E = sn.spec.embed_dim
        return [make_config(sn.space, embed=snap(sn.space.embed_dim, f * E)) for f in self.levels]
