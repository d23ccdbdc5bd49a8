"""NViT (Yang et al. 2023): first-order Taylor importance of weight groups — heads, query/key channels and
value channels of each head (apart, as the paper does), MLP units, embedding channels — accumulated over
batches, normalised by each group's *latency* cost (from the LatencyTable), and ranked globally: the
proposals remove the cheapest-to-lose latency first until a target is met.

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
        shapes = {"embed": (s.embed_dim,), "heads": (s.depth, s.num_heads), "mlp": (s.depth, s.mlp_hidden)}
        shapes |= {axis: (s.depth, s.num_heads, s.head_dim) for axis in ("qk", "v")
                   if len(getattr(sn.space, axis).choices) > 1}  # (qk is fixed under qk_norm)
        self.axes = list(shapes)
        for name, shape in shapes.items():
            setattr(self, name, nn.Parameter(torch.ones(shape)))
            self.register_buffer(f"taylor_{name}", torch.zeros(shape))

    def trainable(self, sn):
        return []  # the masks stay at 1: only their gradients are read

    def loss(self, sn, x, y, teacher):
        student = gated_forward(sn, x, Masks(**{a: getattr(self, a) for a in self.axes})).logits
        return task_loss(student, teacher.logits, y), {}

    def after_backward(self):
        for name in self.axes:
            getattr(self, f"taylor_{name}").add_(getattr(self, name).grad.detach() ** 2)

    def importance(self):
        # per unit of latency: what ranks groups of different kinds against each other (a channel of one head
        # costs a share of the channel of every head the config's width counts)
        c, H = self.costs, self.heads.shape[1]
        cost = {"embed": c.embed, "heads": c.head, "mlp": c.mlp, "qk": c.qk / H, "v": c.v / H}
        return {a: getattr(self, f"taylor_{a}") / max(cost[a], 1e-9) for a in self.axes}

    def proposals(self, sn):
        space, c, imp = sn.space, self.costs, self.importance()
        D = sn.spec.depth
        cost = {"embed": c.embed, "heads": c.head, "mlp": c.mlp, "qk": c.qk, "v": c.v}
        # every group, least important per ms first; a width group is one channel of every head of a block
        # (a config's width is per block): the k-th best channel of each head, their scores summed
        groups = [(float(v), "embed", 0) for v in imp["embed"]]
        groups += [(float(v), axis, i) for axis in ("heads", "mlp") for i in range(D) for v in imp[axis][i]]
        groups += [(float(v), axis, i) for axis in ("qk", "v") if axis in imp for i in range(D)
                   for v in imp[axis][i].sort(dim=-1, descending=True).values.sum(0)]
        groups.sort(key=lambda g: g[0])
        configs = []
        for level in self.levels:
            size = {"embed": [sn.spec.embed_dim], "heads": [sn.spec.num_heads] * D, "mlp": [sn.spec.mlp_hidden] * D,
                    "qk": [sn.spec.head_dim] * D, "v": [sn.spec.head_dim] * D}
            lowest = {"embed": space.embed_dim.min, "heads": space.heads.min, "mlp": space.mlp.min,
                      "qk": space.qk.min, "v": space.v.min}
            saved, target = 0.0, level * c.total
            for _, axis, i in groups:
                if saved >= target:
                    break
                if size[axis][i] > lowest[axis]:
                    size[axis][i] -= 1
                    saved += cost[axis]
            axes = {"heads": space.heads, "mlp": space.mlp, "qk": space.qk, "v": space.v}
            configs.append(make_config(space, embed=snap(space.embed_dim, size["embed"][0]),
                                       **{a: [snap(axes[a], n) for n in size[a]] for a in axes}))
        return unique(configs)
