"""The CUDA paths, on a machine with a GPU (CI has none; run by benchmarks/gpu_check.sh):

    python benchmarks/cuda_check.py

exactness of supernet vs extracted subnets on the GPU; the bundled base shape's latency (random weights:
latency does not depend on them) in torch eager and under CUDA graphs, float32 and float16, at batch 1 and
256; the speed-up of halving each axis in each; and the latency predictor's error under CUDA graphs.
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
from evaluators import LatencyMeter, LatencySetting, LatencyTable  # noqa: E402
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

    for runtime in ("torch-eager", "cudagraph"):
        for dtype in ("float32", "float16"):
            for batch in (1, 256):
                s = LatencySetting.resolve(dev, runtime, dtype, batch, warmup=20, repeats=200, block=10)
                meter = LatencyMeter(s, shape, reference=vit)
                speedups = {name: 1 / meter.measure(sn.extract(cfg)).ratio for name, cfg in
                            [("depth/2", _half(space, "depth")), ("embed/2", _half(space, "embed_dim")),
                             ("keep 0.5 from block 3", _half(space, "keep"))]}
                print(f"{s.describe()}: base {meter.reference_latency}; speed-ups " +
                      ", ".join(f"{k} {v:.2f}x" for k, v in speedups.items()))

    s = LatencySetting.resolve(dev, "cudagraph", "float16")
    start = time.perf_counter()
    table = LatencyTable.build(sn, s, progress=False)
    meter = LatencyMeter(s, shape, reference=vit)
    held_out = []
    for _ in range(30):
        cfg = space.sample(rng)
        held_out.append((cfg.to_dict(), meter.measure(sn.extract(cfg)).ratio))
    errors = table.errors(held_out)
    print(f"latency predictor, {s.describe()}: calibrated in {time.perf_counter() - start:.0f} s; error over 30 "
          f"subnets median {np.median(errors):.1%}, p90 {np.percentile(errors, 90):.1%}")


def _half(space, axis):
    cfg = space.largest()
    if axis == "depth":
        d = space.depth.max // 2
        return cfg.first(d)
    if axis == "embed_dim":
        cfg.embed_dim = space.embed_dim.max // 2
    else:
        cfg.keep = [1.0] * 3 + [0.5] * (cfg.depth - 3)
    return cfg


if __name__ == "__main__":
    main()
