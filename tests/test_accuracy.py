import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from evaluators import correct_per_image, evaluate_accuracy, paired_gap


def test_accuracy_is_the_mean_of_correct_per_image():
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(50, 4), torch.randint(0, 3, (50,)))
    model = nn.Linear(4, 3)
    right = correct_per_image(model, data, batch_size=7)
    assert right.dtype == torch.bool and len(right) == 50
    assert evaluate_accuracy(model, data) == right.sum().item() / 50


def test_paired_gap_counts_disagreements_and_draws_groups_whole():
    rng = np.random.default_rng(1)
    a = rng.random(600) < 0.9
    b = a.copy()
    flip = rng.choice(600, 30, replace=False)
    b[flip] = ~b[flip]
    g = paired_gap(a, b)
    assert g["only_a"] == int((a & ~b).sum()) and g["only_b"] == int((b & ~a).sum())
    assert abs(g["gap"] - (a.mean() - b.mean()) * 100) < 1e-9
    assert g["interval_90"][0] <= g["gap"] <= g["interval_90"][1] and g["groups"] == 600
    same = paired_gap(a, a)
    assert same["gap"] == 0 and same["interval_90"] == [0.0, 0.0] and same["only_a"] == same["only_b"] == 0
    # the same disagreements, each repeated on 3 images that err together (3 renderings of one source):
    # drawn image by image they look like 3x the evidence; drawn by source, the interval stays as wide
    a3, b3 = np.tile(a, 3), np.tile(b, 3)
    by_image = paired_gap(a3, b3)
    by_source = paired_gap(a3, b3, np.tile(np.arange(600), 3))
    width = lambda x: x["interval_90"][1] - x["interval_90"][0]  # noqa: E731
    assert by_source["groups"] == 600 and by_image["groups"] == 1800
    assert width(by_source) > 1.5 * width(by_image)
    assert abs(width(by_source) - width(g)) < 0.25 * width(g)
