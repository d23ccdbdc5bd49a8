import numpy as np
import pytest
import torch
from PIL import Image

from supernet.config import ConfigError
from evaluators.data import error_groups, imagefolder_splits
from evaluators.digits import DigitsSpec, _split_sources, digits_splits

SMALL = DigitsSpec(variants=(1, 1, 1))


def test_digits_are_deterministic_and_seeded():
    a, b = digits_splits(SMALL), digits_splits(SMALL)
    assert torch.equal(a["train"].tensors[0], b["train"].tensors[0])
    c = digits_splits(DigitsSpec(seed=1, variants=(1, 1, 1)))
    assert not torch.equal(a["val"].tensors[0], c["val"].tensors[0])


def test_splits_are_by_source_image_and_stratified():
    from sklearn.datasets import load_digits

    labels = load_digits().target
    parts = _split_sources(labels, (0.6, 0.2, 0.2), np.random.default_rng(0))
    assert sum(len(p) for p in parts) == len(labels)
    assert not set(parts[0]) & set(parts[1]) and not set(parts[0]) & set(parts[2]) and not set(parts[1]) & set(parts[2])
    for p in parts:
        assert set(labels[p]) == set(range(10))


def test_digits_shapes_sizes_and_moving_content():
    d = digits_splits(DigitsSpec(variants=(2, 1, 1)))
    x, y = d["train"].tensors
    assert x.shape[1:] == (1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(d["train"]) > 2 * len(d["val"])  # 60% of sources × 2 renderings vs 20% × 1
    assert set(y.tolist()) == set(range(10))
    # the digit moves: the brightest pixel's position varies across images of one class
    peaks = {int(x[i, 0].argmax()) for i in torch.nonzero(y == 0).flatten()[:50]}
    assert len(peaks) > 10


def test_imagefolder_splits(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    splits = imagefolder_splits(tmp_path, img_size=32, in_chans=3)
    assert set(splits) == {"train", "val", "test"} and splits["test"] is splits["val"]
    x, y = splits["val"][0]
    assert x.shape == (3, 32, 32) and y in (0, 1)
    assert len(splits["train"]) == 6
    with pytest.raises(ConfigError, match="in colour but the model has in_chans=1; set model.kwargs.in_chans: 3"):
        imagefolder_splits(tmp_path, img_size=32, in_chans=1)
    with pytest.raises(ConfigError, match="has 2 class folders but the model has num_classes=10; set "
                                          "model.kwargs.num_classes: 2"):
        imagefolder_splits(tmp_path, img_size=32, num_classes=10)


def test_imagefolder_labels_every_split_by_the_train_classes(tmp_path):
    """A class folder missing from val/ would shift val's labels if each split numbered its own folders."""
    for split, classes in (("train", ("ant", "bee", "cat")), ("val", ("ant", "cat"))):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            Image.fromarray(np.full((8, 8), 100, dtype=np.uint8)).save(tmp_path / split / c / "0.png")
    with pytest.raises(ConfigError, match=r"missing \['bee'\], extra \[\]"):
        imagefolder_splits(tmp_path, img_size=32, in_chans=1)
    (tmp_path / "val" / "bee").mkdir()
    Image.fromarray(np.full((8, 8), 100, dtype=np.uint8)).save(tmp_path / "val" / "bee" / "0.png")
    splits = imagefolder_splits(tmp_path, img_size=32, in_chans=1, num_classes=3)
    assert sorted(y for _, y in splits["val"]) == [0, 1, 2]
    assert splits["val"][0][0].shape == (1, 32, 32)


def test_imagefolder_missing_folders_say_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        imagefolder_splits(tmp_path / "nope", img_size=32)
    (tmp_path / "train").mkdir()
    with pytest.raises(ConfigError, match="no val/ folder"):
        imagefolder_splits(tmp_path, img_size=32)


def test_error_groups_are_the_renderings_of_one_source_digit():
    test = digits_splits(DigitsSpec(variants=(1, 1, 3)))["test"]
    groups = error_groups({"name": "digits", "variants": [1, 1, 3]}, "test", len(test))
    n = len(test) // 3
    assert sorted(set(groups.tolist())) == list(range(n)) and (groups.reshape(3, n) == groups[:n]).all()
    labels = test.tensors[1].reshape(3, n)  # a group's three renderings are of one source digit: one label
    assert (labels == labels[0]).all()
    assert (error_groups({"name": "imagefolder"}, "test", 5) == np.arange(5)).all()  # each image its own
