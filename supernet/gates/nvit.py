"""NViT (Yang et al. 2023): first-order Taylor importance of weight groups — heads, MLP units, embedding
channels — accumulated over batches, normalised by each group's *latency* cost (from the LatencyTable),
and ranked globally: the proposals remove the cheapest-to-lose latency first until a target is met.

The Taylor term of a group is (sum over its weights of gradient × weight)², which is the squared gradient
of a multiplicative mask on the group's output at 1 — so the masks below are never trained, only
differentiated. One-shot (NViT iterates prune / fine-tune; the sandwich phase does the fine-tuning here).
"""
from __future__ import annotations

import torch
from torch import nn

from . import GateMethod, make_config, register_method, snap, task_loss, unique
from .forward import Masks, gated_forward


@register_method
class NViT(GateMethod):
    name = "nvit"
    steps = 20
    levels = (0.25, 0.4, 0.55)  # fractions of the full model's latency to remove

    def __init__(self, sn, costs):
        super().__init__(sn, costs)
        s = sn.spec
        self.embed = nn.Parameter(torch.ones(s.embed_dim))
        self.heads = nn.Parameter(torch.ones(s.depth, s.num_heads))
        self.mlp = nn.Parameter(torch.ones(s.depth, s.mlp_hidden))
        for name in ("embed", "heads", "mlp"):
            self.register_buffer(f"taylor_{name}", torch.zeros_like(getattr(self, name)))

    def trainable(self, sn):
        return []  # the masks stay at 1: only their gradients are read

    def loss(self, sn, x, y, teacher):
        student = gated_forward(sn, x, Masks(embed=self.embed, heads=self.heads, mlp=self.mlp)).logits
        return task_loss(student, teacher.logits, y), {}

    def after_backward(self):
        for name in ("embed", "heads", "mlp"):
            getattr(self, f"taylor_{name}").add_(getattr(self, name).grad.detach() ** 2)

    def importance(self):
        c = self.costs  # per unit of latency: what ranks groups of different kinds against each other
        return {"embed": self.taylor_embed / max(c.embed, 1e-9), "heads": self.taylor_heads / max(c.head, 1e-9),
                "mlp": self.taylor_mlp / max(c.mlp, 1e-9)}

    def proposals(self, sn):
        space, c, imp = sn.space, self.costs, self.importance()
        D = sn.spec.depth
        # every group, least important per ms first
        groups = [(float(v), "embed", 0, c.embed) for v in imp["embed"]]
        groups += [(float(v), "heads", i, c.head) for i in range(D) for v in imp["heads"][i]]
        groups += [(float(v), "mlp", i, c.mlp) for i in range(D) for v in imp["mlp"][i]]
        groups.sort(key=lambda g: g[0])
        configs = []
        for level in self.levels:
            embed, heads, mlp = sn.spec.embed_dim, [sn.spec.num_heads] * D, [sn.spec.mlp_hidden] * D
            saved, target = 0.0, level * c.total
            for _, kind, i, cost in groups:
                if saved >= target:
                    break
                if kind == "embed" and embed > space.embed_dim.min:
                    embed -= 1
                elif kind == "heads" and heads[i] > space.heads.min:
                    heads[i] -= 1
                elif kind == "mlp" and mlp[i] > space.mlp.min:
                    mlp[i] -= 1
                else:
                    continue
                saved += cost
            configs.append(make_config(space, embed=snap(space.embed_dim, embed),
                                       heads=[snap(space.heads, h) for h in heads],
                                       mlp=[snap(space.mlp, m) for m in mlp]))
        return unique(configs)
