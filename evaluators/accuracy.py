"""Top-1 accuracy of a model, or of a supernet's subnet on shared weights."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from supernet.config import ConfigError


@torch.inference_mode()
def correct_per_image(model: nn.Module, data: Dataset | DataLoader, cfg=None, device=None,
                      batch_size: int = 256) -> torch.Tensor:
    """Whether each image's top-1 prediction is right (bool, in the data's order). With ``cfg``, ``model`` is a
    Supernet and the subnet ``cfg`` is evaluated. The batches go to ``device``, by default the model's."""
    if device is None:
        device = next(model.parameters()).device
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size)
    was_training = model.training
    model.eval()
    correct = []
    try:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = model(x) if cfg is None else model(x, cfg)
            correct.append((logits.argmax(dim=1) == y).cpu())
    finally:
        model.train(was_training)
    if not correct:
        raise ConfigError("the dataset to evaluate on is empty; check the data split")
    return torch.cat(correct)


def evaluate_accuracy(model: nn.Module, data: Dataset | DataLoader, cfg=None, device=None,
                      batch_size: int = 256) -> float:
    """Top-1 accuracy in [0, 1] (``correct_per_image``'s mean)."""
    correct = correct_per_image(model, data, cfg, device, batch_size)
    return correct.sum().item() / len(correct)


def paired_gap(right_a, right_b, groups=None, draws: int = 2000) -> dict:
    """Model a's top-1 minus model b's in points, from ``correct_per_image`` of both on the same images: how many
    images only one of them gets right, and a 90% bootstrap interval of the gap. ``groups`` (an id per image)
    names images that err together, e.g. renderings of one source (``error_groups``); the bootstrap draws a
    group whole. None: every image is its own."""
    a, b = (np.asarray(r, dtype=bool) for r in (right_a, right_b))
    groups = np.arange(len(a)) if groups is None else np.asarray(groups)
    diff = np.bincount(groups, a.astype(float) - b)
    size = np.bincount(groups).astype(float)
    draw = np.random.default_rng(0).integers(len(size), size=(draws, len(size)))
    lo, hi = np.quantile(diff[draw].sum(1) / size[draw].sum(1), [0.05, 0.95]) * 100
    return {"gap": float(a.mean() - b.mean()) * 100, "only_a": int((a & ~b).sum()), "only_b": int((b & ~a).sum()),
            "interval_90": [float(lo), float(hi)], "groups": len(size), "images": len(a)}
