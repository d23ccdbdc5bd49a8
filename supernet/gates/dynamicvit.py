"""DynamicViT (Rao et al. 2021): a light predictor before a few blocks decides per image which tokens to
keep. Training samples hard decisions with Gumbel-softmax, masks dropped tokens out of every attention
(so they stop influencing the others) and minimises CE + logit distillation + token distillation +
keep-ratio MSE. At inference the ``dynamicvit`` scorer keeps the top-k of the predictor's scores.

Predictors exist before every block (the search may drop tokens anywhere), so each step trains three
randomly placed stages at a random keep ratio ρ, targets ρ, ρ², ρ³ as in the paper."""
from __future__ import annotations

import numpy as np
import torch.nn.functional as F

from . import GateMethod, make_config, register_method, snap_keep, task_loss, unique
from .forward import gated_forward


@register_method
class DynamicViT(GateMethod):
    name = "dynamicvit"
    stage = "tokens"
    lr = 1e-3
    scorer = "dynamicvit"
    ratios = (0.9, 0.8, 0.7, 0.6)  # proposals: keep ρ^k from the k-th of three evenly spaced stages

    def __init__(self, sn, costs):
        super().__init__(sn, costs)
        self.rng = np.random.default_rng(0)

    def trainable(self, sn):
        return list(sn.token_scorers[self.scorer].parameters())

    def loss(self, sn, x, y, teacher):
        D = sn.spec.depth
        stages = sorted(self.rng.choice(D, size=min(3, D), replace=False).tolist())
        rho = float(self.rng.uniform(0.5, 0.9))
        predictors = sn.token_scorers[self.scorer]

        def decide(i, tokens, policy):
            if i not in stages:
                return None
            logits = predictors[i].logits(tokens[:, sn.spec.prefix:], policy)
            return F.gumbel_softmax(logits, hard=True)[..., 0] * policy

        out = gated_forward(sn, x, decide=decide)
        targets = [rho ** (k + 1) for k in range(len(stages))]
        ratio = sum((p.mean(1) - t).pow(2).mean() for p, t in zip(out.policies, targets))
        keep = out.policies[-1].unsqueeze(-1)  # token distillation on the tokens kept to the end
        p = sn.spec.prefix
        tokens = ((out.final[:, p:] - teacher.final[:, p:]).pow(2) * keep).sum() / (
            keep.sum() * out.final.shape[-1]).clamp_min(1.0)
        loss = task_loss(out.logits, teacher.logits, y) + 2.0 * ratio + 0.5 * tokens
        return loss, {"ratio_mse": ratio.item(), "kept": out.policies[-1].mean().item()}

    def proposals(self, sn):
        space, D = sn.space, sn.spec.depth
        stages = sorted({max(0, round(D * k / 4)) for k in (1, 2, 3)})
        configs = []
        for rho in self.ratios:
            keep, current = [], 1.0
            for i in range(D):
                if i in stages:
                    current = rho ** (stages.index(i) + 1)
                keep.append(snap_keep(space.keep, current))
            configs.append(make_config(space, keep=keep))
        return unique(configs)
