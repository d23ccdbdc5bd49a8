"""DynamicViT (Rao et al. 2021): a learned predictor scores each token; keep the top-k at inference.

Trained by ``supernet.gates.dynamicvit`` with Gumbel-softmax decisions and attention masking.
"""
from __future__ import annotations

from . import register_scorer
from .predictor import TokenPredictor


@register_scorer
class DynamicViTScorer(TokenPredictor):
    name = "dynamicvit"
