"""Patch Slimming (Tang et al. 2022): keep the patches with the most impact on the final output.

The impact is computed top-down — from the class token after the last block back through every block's
attention — during training (``supernet.gates.patchslim``), where a predictor learns to estimate it from
the tokens entering a block; at inference the predictor's estimate ranks the tokens in one forward pass.
"""
from __future__ import annotations

from . import register_scorer
from .predictor import TokenPredictor


@register_scorer
class PatchSlimScorer(TokenPredictor):
    name = "patchslim"
