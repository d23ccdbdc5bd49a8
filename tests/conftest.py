import os
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

ROOT = Path(__file__).resolve().parent.parent
if os.environ.get("PYTEST_XDIST_WORKER"):  # one of several pytest processes (``-n auto``): one thread each, and
    os.environ["OMP_NUM_THREADS"] = "1"    # in what they start, or two processes' threads spin waiting for a core
    torch.set_num_threads(1)
sys.path.insert(0, str(ROOT))

import supernet  # noqa: E402,F401  (registers vitnas_* models)
from supernet import Supernet  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a GPU (run by benchmarks/gpu_check.sh; CI has none)")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Every test writes its caches into a temporary folder, never the user's."""
    monkeypatch.setenv("VITNAS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def micro_vit(seed: int = 0, name: str = "vitnas_micro", **kwargs) -> torch.nn.Module:
    """timm model ``name`` with random (non-trivial) weights: norms, biases and tokens perturbed so slicing
    bugs show."""
    torch.manual_seed(seed)
    vit = timm.create_model(name, **kwargs).eval()
    with torch.no_grad():
        for name, p in vit.named_parameters():
            if p.dim() == 1 or "token" in name or "pos_embed" in name:
                p.add_(0.1 * torch.randn_like(p))
    return vit


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """One cache for every command-line test: the tiny base model, table and supernet are made once."""
    return tmp_path_factory.mktemp("cli-cache")


@pytest.fixture
def sn() -> Supernet:
    return Supernet.from_timm(micro_vit()).eval()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def synthetic_table(sn, samples: int = 40, seed: int = 0):
    """A latency table fitted to noise-free ratios in which every shape term costs the same share of the
    largest subnet: deterministic predictions for tests of what consumes them (no timing)."""
    from evaluators import LatencySetting, LatencyTable
    from evaluators.lut import FEATURES, features, table_key

    big = features(sn.spec, sn.space.largest())
    costs = np.where(big > 0, 1.0 / np.maximum(big, 1e-12), 0.0) / len(FEATURES)
    rng = np.random.default_rng(seed)
    table = LatencyTable(key=table_key(sn, LatencySetting.resolve("cpu", threads=1)))
    table.points = [(c.to_dict(), float(features(sn.spec, c) @ costs))
                    for c in [sn.space.largest(), sn.space.smallest()] + [sn.space.sample(rng) for _ in range(samples)]]
    table.fit()
    return table
