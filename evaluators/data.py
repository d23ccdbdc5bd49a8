"""Datasets: the bundled digits workload (no download) and real ImageFolder data via timm.

The bundled task is built from scikit-learn's ``load_digits`` (1,797 real 8×8 handwritten digits shipped
inside scikit-learn): every digit is scaled up and placed at a random position on a larger canvas, with
clutter cut from other digits of the same split. The informative patches move from image to image, so
token pruning has to find them rather than keep a fixed window. Splits are made by *source* image, so no
handwritten digit appears in two splits.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from supernet.config import ConfigError

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


def imagefolder_splits(root: str | Path, img_size: int, in_chans: int = 3,
                       mean=None, std=None, num_classes: int | None = None) -> dict[str, Dataset]:
    """Real data: ``root/train`` and ``root/val`` (and optional ``root/test``) ImageFolder trees.

    Uses timm's dataset reader and eval transforms (resize, centre crop, normalise). With no ``test``
    folder, the test split is the validation split, and the caller is told so by the returned keys.
    Every split is labelled with train/'s class folders (sorted names), which every split must have; the
    class count and the images' colour are checked against the model (``num_classes``, ``in_chans``).
    """
    from timm.data import ImageDataset, create_transform
    from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"dataset root {root} does not exist; set data.root to a folder with "
                          "train/ and val/ subfolders of class folders")
    mean = tuple(mean or IMAGENET_DEFAULT_MEAN[:in_chans])
    std = tuple(std or IMAGENET_DEFAULT_STD[:in_chans])
    missing = [split for split in ("train", "val") if not (root / split).is_dir()]
    if missing:
        raise ConfigError(f"dataset root {root} has no {' or '.join(m + '/' for m in missing)} folder; "
                          "expected train/ and val/ (and optionally test/) class-folder trees")
    classes = _class_folders(root / "train")
    for split in SPLITS[1:]:
        if (root / split).is_dir() and _class_folders(root / split) != classes:
            other = _class_folders(root / split)
            raise ConfigError(f"{root / split} has other class folders than {root / 'train'}: missing "
                              f"{sorted(set(classes) - set(other))}, extra {sorted(set(other) - set(classes))}; "
                              "every split needs the same class folders (labels are numbered from train/)")
    if num_classes is not None and len(classes) != num_classes:
        raise ConfigError(f"{root / 'train'} has {len(classes)} class folders but the model has "
                          f"num_classes={num_classes}; set model.kwargs.num_classes: {len(classes)}")
    if in_chans == 1 and _is_colour(root / "train"):
        raise ConfigError(f"the images in {root / 'train'} are in colour but the model has in_chans=1; set "
                          "model.kwargs.in_chans: 3 (or convert the images to greyscale)")
    class_map = {name: i for i, name in enumerate(classes)}
    out: dict[str, Dataset] = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        transform = create_transform(img_size, is_training=split == "train", mean=mean, std=std,
                                     crop_pct=1.0 if img_size < 64 else None)
        try:
            out[split] = ImageDataset(str(folder), transform=transform, class_map=class_map,
                                      input_img_mode="L" if in_chans == 1 else "RGB")
        except RuntimeError as e:  # timm: "Found 0 images in subfolders of ..."
            raise ConfigError(f"{folder}: {e}") from None
    out.setdefault("test", out["val"])
    return out


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def _is_colour(folder: Path) -> bool:
    """Whether the first image found under ``folder`` has colour channels."""
    from PIL import Image

    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"):
            with Image.open(path) as image:
                return image.mode not in ("1", "L", "I", "I;16", "F")
    return False


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, drop_last=False)
