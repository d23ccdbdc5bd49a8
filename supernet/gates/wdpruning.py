"""WDPruning (Yu et al. 2022): binary width masks from learned saliency scores and learnable thresholds
(straight-through), pushed towards a target width, plus a classifier after every block trained by
distillation from the full model, so that a shallow exit can be chosen."""
from __future__ import annotations

import torch
from torch import nn

from ..importance import magnitude_importance
from . import GateMethod, make_config, register_method, snap, task_loss, unique
from .forward import Masks, gated_forward


def binary_mask(scores: torch.Tensor, threshold: torch.Tensor, temperature: float = 0.05):
    """1 where score > threshold; gradients flow as if it were the sigmoid (straight-through)."""
    soft = torch.sigmoid((scores - threshold.unsqueeze(-1)) / temperature)
    return (soft > 0.5).float() + soft - soft.detach(), soft


@register_method
class WDPruning(GateMethod):
    name = "wdpruning"
    lr = 2e-2
    target = 0.5          # fraction of heads and MLP units the thresholds aim to keep
    agreement = (0.97, 0.9, 0.8)  # propose the shallowest exits that agree this often with the full model

    def __init__(self, sn, costs):
        super().__init__(sn, costs)
        s = sn.spec
        # saliency starts at the weights' magnitude (scaled to [0, 1] per block), thresholds below it all
        imp = magnitude_importance(sn)
        heads, mlp = torch.stack(imp.heads), torch.stack(imp.mlp)
        self.head_scores = nn.Parameter(heads / heads.amax(1, keepdim=True))
        self.mlp_scores = nn.Parameter(mlp / mlp.amax(1, keepdim=True))
        self.head_threshold = nn.Parameter(torch.zeros(s.depth))
        self.mlp_threshold = nn.Parameter(torch.zeros(s.depth))
        self.register_buffer("agree", torch.zeros(s.depth + 1))   # running exit-vs-full agreement per depth
        self.register_buffer("seen", torch.zeros(()))

    def trainable(self, sn):
        return list(self.parameters()) + list(sn.exits.parameters())

    def masks(self):
        heads, heads_soft = binary_mask(self.head_scores, self.head_threshold)
        mlp, mlp_soft = binary_mask(self.mlp_scores, self.mlp_threshold)
        return heads, mlp, heads_soft, mlp_soft

    def loss(self, sn, x, y, teacher):
        heads, mlp, heads_soft, mlp_soft = self.masks()
        out = gated_forward(sn, x, Masks(heads=heads, mlp=mlp), exits=True)
        kept = 0.5 * (heads_soft.mean() + mlp_soft.mean())
        from ..train import distill_loss
        exit_kd = sum(distill_loss(logits, teacher.logits) for logits in out.exits.values()) / max(1, len(out.exits))
        loss = task_loss(out.logits, teacher.logits, y) + exit_kd + 10.0 * (kept - self.target) ** 2
        with torch.no_grad():  # how often each exit of the pruned model agrees with the full model
            top = teacher.logits.argmax(1)
            for d, logits in out.exits.items():
                self.agree[d] = 0.9 * self.agree[d] + 0.1 * (logits.argmax(1) == top).float().mean()
            self.seen += 1
        return loss, {"kept": kept.item(), "exit_kd": float(exit_kd.detach() if torch.is_tensor(exit_kd) else exit_kd)}

    def importance(self):
        return {"heads": self.head_scores.detach() - self.head_threshold.detach().unsqueeze(1),
                "mlp": self.mlp_scores.detach() - self.mlp_threshold.detach().unsqueeze(1)}

    def proposals(self, sn):
        space = sn.space
        heads, mlp, _, _ = self.masks()
        head_counts = [snap(space.heads, int(r.sum())) for r in heads.detach()]
        mlp_counts = [snap(space.mlp, int(r.sum())) for r in mlp.detach()]
        agree = self.agree / (1 - 0.9 ** self.seen.clamp_min(1))  # running mean, bias-corrected
        depths = [sn.spec.depth]
        for level in self.agreement:
            good = [d for d in space.depth.choices if d < sn.spec.depth and agree[d] >= level]
            if good:
                depths.append(min(good))
        return unique([make_config(space, depth=d, heads=head_counts, mlp=mlp_counts) for d in depths])
