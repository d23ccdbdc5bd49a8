"""The CUDA paths, on a machine with a GPU (CI has none):

    python benchmarks/cuda_check.py

exactness of supernet vs extracted subnets on the GPU, synchronised latency of the bundled base shape
(random weights: latency does not depend on them) at batch 1 and 256, the extracted largest subnet vs the
timm model (interleaved), and the latency table's error on random subnets, all in torch eager.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import supernet  # noqa: E402,F401
from evaluators import LatencyTable, measure_latency, measure_latency_interleaved  # noqa: E402
from supernet import Supernet  # noqa: E402


def main() -> None:
    dev = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(dev)}, torch {torch.__version__}, timm {timm.__version__}")
    torch.manual_seed(0)
    vit = timm.create_model("vitnas_tiny", init_values=1e-4).eval()
    sn = Supernet.from_timm(vit).eval().to(dev)
    space, shape = sn.space, (1, 32, 32)
    rng = np.random.default_rng(0)
    x = torch.randn(64, *shape, device=dev)
    cfgs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(48)]
    with torch.no_grad():
        worst = max((sn(x, c) - sn.extract(c)(x)).abs().max().item() for c in cfgs)
        vs_timm = (sn(x, space.largest()) - vit(x)).abs().max().item()
    print(f"exactness on cuda, 50 configs: max |sn - extract| = {worst:.2e}; largest vs timm {vs_timm:.2e}")

    for batch in (1, 256):
        print(f"base latency, batch {batch}: {measure_latency(vit, shape, dev, batch, None, 20, 200)}")
    lat = measure_latency_interleaved({"timm": vit, "extracted": sn.extract(space.largest())}, shape, dev, 1,
                                      None, 20, 300)
    print(f"extracted largest / timm = {lat['extracted'].median_ms / lat['timm'].median_ms:.3f} "
          f"({lat['extracted']} vs {lat['timm']})")
    for name, cfg in [("depth/2", _half(space, "depth")), ("embed/2", _half(space, "embed_dim")),
                      ("keep 0.5 from block 3", _half(space, "keep"))]:
        pair = measure_latency_interleaved({"base": vit, name: sn.extract(cfg)}, shape, dev, 1, None, 20, 200)
        print(f"speed-up of {name} at batch 1: {pair['base'].median_ms / pair[name].median_ms:.2f}×")

    start = time.perf_counter()
    table = LatencyTable.build(sn, dev, 1, progress=False)
    print(f"latency table on cuda: {len(table.entries)} entries in {time.perf_counter() - start:.0f} s")
    errors = []
    for _ in range(30):
        cfg = space.sample(rng)
        measured = measure_latency(sn.extract(cfg), shape, dev, 1, None, 10, 50).median_ms
        errors.append(abs(table.predict(cfg) - measured) / measured)
    print(f"latency-table error on cuda, 30 subnets: median {np.median(errors):.1%}, "
          f"p90 {np.percentile(errors, 90):.1%}")


def _half(space, axis):
    cfg = space.largest()
    if axis == "depth":
        d = space.depth.max // 2
        return type(cfg)(cfg.embed_dim, d, cfg.heads[:d], cfg.mlp[:d], cfg.ops[:d], cfg.keep[:d])
    if axis == "embed_dim":
        cfg.embed_dim = space.embed_dim.max // 2
    else:
        cfg.keep = [1.0] * 3 + [0.5] * (cfg.depth - 3)
    return cfg


if __name__ == "__main__":
    main()
