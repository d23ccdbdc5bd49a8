"""Class-token attention (EViT / DynamicViT's inference rule): keep the patches the class token attends to."""
from __future__ import annotations

import torch

from . import TokenScorer, register_scorer


@register_scorer
class ClsAttentionScorer(TokenScorer):
    name = "cls_attention"

    def forward(self, patches: torch.Tensor, summary: torch.Tensor, cls_attn: torch.Tensor | None) -> torch.Tensor:
        if cls_attn is not None:
            return cls_attn
        # No MSA block ran before this drop (only conv blocks, or a drop before block 0): fall back to the
        # summary token's dot-product affinity with each patch, the attention an identity-projected head gives.
        return torch.einsum("be,bne->bn", summary, patches) * patches.shape[-1] ** -0.5
