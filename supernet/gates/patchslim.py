"""Patch Slimming (Tang et al. 2022): patch importance computed top-down — the final class token's
dependence on each token, propagated from the last block back through every block's attention (with the
residual path) — and a predictor per block trained to estimate it from the tokens entering that block,
so the ``patchslim`` scorer can rank tokens in one forward pass. Proposals keep, per block, the patches
holding most of the top-down importance; a patch kept deeper is kept before (non-increasing keep)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..subnet import summary_token
from . import GateMethod, make_config, register_method, snap_keep, unique


def top_down_importance(attn: list[torch.Tensor], spec) -> list[torch.Tensor]:
    """Per block, each entering token's share of what the head reads (the class token, both distilled
    tokens, or the mean patch): [B, T] per block, rows sum to 1."""
    s = torch.zeros_like(attn[-1][:, 0])
    if spec.dist_token:
        s[:, :2] = 0.5
    elif spec.pool == "token":
        s[:, 0] = 1.0
    else:
        s[:, spec.prefix:] = 1.0 / (s.shape[1] - spec.prefix)
    out = []
    for a in reversed(attn):
        s = 0.5 * s + 0.5 * torch.einsum("bi,bij->bj", s, a)  # half residual, half attention
        out.append(s)
    return out[::-1]


@register_method
class PatchSlim(GateMethod):
    name = "patchslim"
    stage = "tokens"
    lr = 1e-3
    scorer = "patchslim"
    mass = (0.99, 0.95, 0.9)  # proposals: keep the patches holding this share of the importance

    def __init__(self, sn, costs):
        super().__init__(sn, costs)
        self.register_buffer("needed", torch.zeros(len(self.mass), sn.spec.depth))  # mean fraction of patches
        self.register_buffer("seen", torch.zeros(()))

    def trainable(self, sn):
        return list(sn.token_scorers[self.scorer].parameters())

    def loss(self, sn, x, y, teacher):
        predictors = sn.token_scorers[self.scorer]
        loss = 0.0
        s = sn.spec
        for i, imp in enumerate(top_down_importance(teacher.attn, s)):
            target = imp[:, s.prefix:] / imp[:, s.prefix:].sum(1, keepdim=True)
            tokens = teacher.tokens[i]
            score = predictors[i](tokens[:, s.prefix:], summary_token(s, tokens), None)
            loss = loss + F.kl_div(F.log_softmax(score, dim=1), target, reduction="batchmean")
            with torch.no_grad():
                cum = target.sort(dim=1, descending=True).values.cumsum(1)
                for j, q in enumerate(self.mass):
                    self.needed[j, i] += ((cum < q).sum(1) + 1).float().mean() / target.shape[1]
        self.seen += 1
        return loss / len(teacher.attn), {}

    def proposals(self, sn):
        configs = []
        for j in range(len(self.mass)):
            needed = (self.needed[j] / self.seen.clamp_min(1)).tolist()
            keep = [max(needed[i:]) for i in range(len(needed))]  # top-down: kept deeper => kept before
            configs.append(make_config(sn.space, keep=[snap_keep(sn.space.keep, k) for k in keep]))
        return unique(configs)
