"""A light token predictor (DynamicViT's): per-token local features plus a global summary, two logits.

It reads only the first ``width`` embedding channels, so a subnet of any width slices the full-width
predictor (its hidden layer keeps the base model's size). Which target it learns — DynamicViT's
Gumbel-sampled keep decisions or Patch Slimming's top-down importance — is the training method's business.
"""
from __future__ import annotations

import torch
from torch import nn

from . import TokenScorer


class TokenPredictor(TokenScorer):
    embed_dims = {"norm.weight": 0, "norm.bias": 0, "fc_in.weight": 1}

    def __init__(self, width: int, base_width: int):
        super().__init__(width, base_width)
        hidden = max(8, base_width // 2)
        self.norm = nn.LayerNorm(width)
        self.fc_in = nn.Linear(width, hidden)
        self.fc_mid = nn.Linear(hidden, hidden // 2)
        self.fc_out = nn.Linear(hidden // 2, 2)  # logits of (keep, drop)
        self.act = nn.GELU()

    def logits(self, patches: torch.Tensor, policy: torch.Tensor | None = None) -> torch.Tensor:
        """[B, n, E] patch tokens (and their keep policy [B, n], during training) -> [B, n, 2] logits."""
        h = self.act(self.fc_in(self.norm(patches)))
        local, glob = h.chunk(2, dim=-1)
        if policy is None:
            glob = glob.mean(dim=1, keepdim=True)
        else:  # the summary covers the tokens still kept
            w = policy.unsqueeze(-1)
            glob = (glob * w).sum(dim=1, keepdim=True) / w.sum(dim=1, keepdim=True).clamp_min(1.0)
        h = torch.cat([local, glob.expand_as(local)], dim=-1)
        return self.fc_out(self.act(self.fc_mid(h)))

    def forward(self, patches: torch.Tensor, summary: torch.Tensor, cls_attn: torch.Tensor | None) -> torch.Tensor:
        logits = self.logits(patches)
        return logits[..., 0] - logits[..., 1]  # log-odds of keeping: top-k of these
