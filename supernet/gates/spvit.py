"""SPViT (He et al. 2022): each block's MSA can become a convolution made of its own weights (single
path: the conv reuses the block's value and output projections, see ``ConvMixer``); a learnable gate per
block picks MSA or conv, sampled as a hard binary-concrete variable, with a latency penalty that charges
every block kept as MSA what converting it would save (from the LatencyTable)."""
from __future__ import annotations

import torch
from torch import nn

from . import GateMethod, make_config, register_method, task_loss, unique
from .forward import Masks, gated_forward


@register_method
class SPViT(GateMethod):
    name = "spvit"
    lr = 5e-2
    penalty = 2.0   # weight of the latency term (ms saved / full-model ms)

    def __init__(self, sn, costs):
        super().__init__(sn, costs)
        self.logit = nn.Parameter(torch.full((sn.spec.depth,), 2.0))  # P(MSA) ≈ 0.88 at start

    def trainable(self, sn):
        return [self.logit, sn.conv_offsets]

    def loss(self, sn, x, y, teacher):
        u = torch.rand_like(self.logit).clamp(1e-6, 1 - 1e-6)
        soft = torch.sigmoid((self.logit + torch.log(u) - torch.log1p(-u)) / 0.5)
        msa = (soft > 0.5).float() + soft - soft.detach()   # hard sample, straight-through gradient
        student = gated_forward(sn, x, Masks(msa=msa)).logits
        p_msa = torch.sigmoid(self.logit)
        latency = (p_msa * self.costs.conv_saving).sum() / self.costs.total
        return task_loss(student, teacher.logits, y) + self.penalty * latency, {"p_msa": p_msa.mean().item()}

    def proposals(self, sn):
        space, D = sn.space, sn.spec.depth
        if "conv" not in space.ops:
            return []
        p_conv = 1 - torch.sigmoid(self.logit.detach())
        order = torch.argsort(p_conv, descending=True).tolist()
        counts = {int((p_conv > 0.5).sum()), max(1, D // 6), max(1, D // 3)}
        configs = []
        for k in sorted(c for c in counts if c > 0):
            ops = ["msa"] * D
            for i in order[:k]:
                ops[i] = "conv"
            configs.append(make_config(space, ops=ops))
        return unique(configs)
