"""Datasets: real ImageFolder data via timm, and data loaders. The bundled workload is in ``digits.py``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from supernet.config import ConfigError

from .digits import SPLITS, rendering_sources


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


def error_groups(data: dict, split: str, n_images: int) -> np.ndarray:
    """A group id per image of ``split`` (the config's ``data:`` section): the bundled workload's renderings of
    one source digit err together and form a group; any other data, each image its own."""
    if data["name"] == "digits":
        return rendering_sources(n_images, data["variants"][SPLITS.index(split)])
    return np.arange(n_images)
