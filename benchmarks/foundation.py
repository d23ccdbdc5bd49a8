"""The foundation's measured figures on the bundled workload (README "Measured"):

    python benchmarks/foundation.py [--config configs/default.yaml] [--device cpu] [--threads N]

base preparation time and accuracy (from the base model's cache entry), base latency in each CPU runtime,
extraction exactness over 50 configs, and the overhead of the extracted largest subnet over the original timm
model (interleaved in one process). The latency predictor's error: benchmarks/predictor.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators import LatencySetting, measure_latency, measure_latency_interleaved, resolve_device  # noqa: E402
from search.config import load_config  # noqa: E402
from search.workload import load_workload  # noqa: E402
from supernet import Supernet  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    dev = resolve_device(args.device)
    threads = args.threads or torch.get_num_threads()
    setting = lambda runtime, **kw: LatencySetting.resolve(dev, runtime, threads=threads, **kw)  # noqa: E731
    workload = load_workload(load_config(args.config))
    sn = Supernet.from_timm(workload.model, bounds=workload.config["space"]).eval()
    shape, space = workload.input_shape, sn.space
    rng = np.random.default_rng(0)
    rows = []

    m = workload.metrics
    if m:
        rows += [("base preparation (train + eval)", f"{m['prep_seconds']:.0f} s"),
                 ("base val / test top-1", f"{m['val_top1']:.1%} / {m['test_top1']:.1%}")]

    from evaluators.runtimes import RUNTIMES
    for runtime in [n for n, r in RUNTIMES.items() if dev.type in r.dtypes]:
        rows.append((f"base latency, {runtime}", str(measure_latency(workload.model, shape,
                                                                     setting(runtime, warmup=20, repeats=200)))))

    x = torch.stack([workload.splits["val"][i][0] for i in range(32)]).to(dev)
    sn.to(dev)
    cfgs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(48)]
    with torch.no_grad():
        worst = max((sn(x, c) - sn.extract(c).to(dev)(x)).abs().max().item() for c in cfgs)
        vs_timm = (sn(x, space.largest()) - workload.model.to(dev)(x)).abs().max().item()
    rows.append(("extraction exactness, 50 configs", f"max |sn(x,cfg) - extract(cfg)(x)| = {worst:.2e}"))
    rows.append(("largest subnet vs timm model", f"max |diff| = {vs_timm:.2e}"))

    lat = measure_latency_interleaved({"timm": workload.model, "extracted": sn.extract(space.largest())},
                                      shape, setting("torch-eager", warmup=20, repeats=300))
    ratio = lat["extracted"].median_ms / lat["timm"].median_ms
    rows.append(("extracted largest / timm latency", f"{ratio:.3f} ({lat['extracted'].median_ms:.2f} vs "
                                                     f"{lat['timm'].median_ms:.2f} ms, interleaved)"))

    print(f"\n| figure ({dev}, {threads} threads, batch 1) | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
