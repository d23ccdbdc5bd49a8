"""Top-1 accuracy of a model, or of a supernet's subnet on shared weights."""
from __future__ import annotations

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
