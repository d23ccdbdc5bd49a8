"""The bundled workload (no download): handwritten digits placed on a larger, cluttered canvas.

The bundled task is built from scikit-learn's ``load_digits`` (1,797 real 8×8 handwritten digits shipped
inside scikit-learn): every digit is scaled up and placed at a random position on a larger canvas, with
clutter cut from other digits of the same split. The informative patches move from image to image, so
token pruning has to find them rather than keep a fixed window. Splits are made by *source* image, so no
handwritten digit appears in two splits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DigitsSpec:
    """Everything that determines the bundled images; part of the base-model cache key."""

    seed: int = 0
    canvas: int = 32
    digit_min: int = 20          # rendered digit side, pixels
    digit_max: int = 24
    clutter: int = 1             # fragments of other digits pasted per image
    jitter: int = 4              # max offset of the digit's centre from the canvas centre, pixels
    variants: tuple[int, int, int] = (8, 3, 3)   # renderings per source image for train / val / test
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)


def _split_sources(labels: np.ndarray, fractions, rng: np.random.Generator) -> list[np.ndarray]:
    """Stratified split of source-image indices, so every split has every class."""
    parts: list[list[int]] = [[], [], []]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        a = int(round(fractions[0] * len(idx)))
        b = a + int(round(fractions[1] * len(idx)))
        for part, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:])):
            part.extend(chunk.tolist())
    return [np.sort(np.array(p)) for p in parts]


def _render(digits: np.ndarray, labels: np.ndarray, variants: int, spec: DigitsSpec,
            rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n, s = len(digits), spec.canvas
    src = torch.from_numpy(digits).float().div_(16.0).view(n, 1, 8, 8)
    images = torch.zeros(n * variants, 1, s, s)
    out_labels = torch.from_numpy(np.tile(labels, variants)).long()
    for v in range(variants):
        for i in range(n):
            img = images[v * n + i, 0]
            # clutter first, so the digit itself is drawn on top
            for _ in range(spec.clutter):
                other = src[rng.integers(n), 0]
                size = int(rng.integers(spec.digit_min, spec.digit_max + 1))
                big = F.interpolate(other[None, None], size=(size, size), mode="bilinear",
                                    align_corners=False)[0, 0]
                ch, cw = (int(rng.integers(3, size // 2 + 1)) for _ in range(2))
                y0, x0 = int(rng.integers(0, size - ch + 1)), int(rng.integers(0, size - cw + 1))
                piece = big[y0:y0 + ch, x0:x0 + cw] * float(rng.uniform(0.25, 0.5))
                py, px = int(rng.integers(0, s - ch + 1)), int(rng.integers(0, s - cw + 1))
                img[py:py + ch, px:px + cw] = torch.maximum(img[py:py + ch, px:px + cw], piece)
            size = int(rng.integers(spec.digit_min, spec.digit_max + 1))
            digit = F.interpolate(src[i][None], size=(size, size), mode="bilinear",
                                  align_corners=False)[0, 0].clamp_(0, 1)
            py, px = (min(max(0, (s - size) // 2 + int(rng.integers(-spec.jitter, spec.jitter + 1))),
                          s - size) for _ in range(2))
            img[py:py + size, px:px + size] = torch.maximum(img[py:py + size, px:px + size], digit)
        images[v * n:(v + 1) * n] += 0.05 * torch.from_numpy(rng.standard_normal((n, 1, s, s))).float()
    # fixed normalisation (mean/std of the task), so every split uses the same statistics
    return (images - 0.1) / 0.25, out_labels


def rendering_sources(n_images: int, variants: int) -> np.ndarray:
    """The source digit (0 .. n_images / variants - 1) of each image of a split ``_render`` made: its
    ``variants`` renderings of every source come one rendering after another."""
    return np.arange(n_images) % (n_images // variants)


def digits_splits(spec: DigitsSpec = DigitsSpec()) -> dict[str, TensorDataset]:
    """The bundled workload as {"train", "val", "test"} tensor datasets; deterministic from ``spec.seed``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(spec.seed)
    sources = _split_sources(digits.target, spec.fractions, rng)
    out = {}
    for name, idx, variants in zip(SPLITS, sources, spec.variants):
        x, y = _render(digits.images[idx], digits.target[idx], variants, spec, rng)
        out[name] = TensorDataset(x, y)
    return out
