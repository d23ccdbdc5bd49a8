"""How far does the same subnet's measured ratio to the base model move between measurements? (issue 10)

    python benchmarks/noise_floor.py [--runtime torch-eager] [--repeats 60] [--subnets 7] [--times 4]

The floor under any latency predictor's error on this machine: ``--subnets`` subnets (random ones and the
smallest), each extracted and timed ``--times`` times with the base model, the way vitnas measures
(``LatencyMeter``), and the median / p90 of the pairwise relative differences between those measurements,
for vitnas's ratio (median over rounds of block-median ratios) and for other estimators of the same raw
times. The base shape at random init: latency does not depend on weight values.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators import LatencyMeter, LatencySetting  # noqa: E402
from search.config import load_config  # noqa: E402
from search.workload import base_model_config, create_model  # noqa: E402
from supernet import Supernet  # noqa: E402


def estimators(block: int) -> dict:
    def rounds(ms, ref, stat):
        return [stat(ms[i:i + block]) / stat(ref[i:i + block]) for i in range(0, len(ms), block)]
    return {
        "median of block-median ratios (vitnas)": lambda ms, ref: np.median(rounds(ms, ref, np.median)),
        "median of block-min ratios": lambda ms, ref: np.median(rounds(ms, ref, np.min)),
        "min / min": lambda ms, ref: ms.min() / ref.min(),
        "p10 / p10": lambda ms, ref: np.percentile(ms, 10) / np.percentile(ref, 10),
        "median / median": lambda ms, ref: np.median(ms) / np.median(ref),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    ap.add_argument("--runtime", default="torch-eager")
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--subnets", type=int, default=7)
    ap.add_argument("--times", type=int, default=4)
    args = ap.parse_args()
    config = load_config(args.config)
    sn = Supernet.from_timm(create_model(base_model_config(config)).eval(), bounds=config["space"]).eval()
    setting = LatencySetting.resolve("cpu", args.runtime, repeats=args.repeats)
    meter = LatencyMeter(setting, (sn.spec.in_chans, *sn.spec.img_size), reference=sn.vit)
    rng = np.random.default_rng(3)
    configs = [sn.space.sample(rng) for _ in range(args.subnets - 1)] + [sn.space.smallest()]
    raw: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in configs]
    for _ in range(args.times):
        for i, cfg in enumerate(configs):
            prepared = {"\0reference": meter.reference, "model": meter._prepare(sn.extract(cfg))}
            t = meter._time(prepared)
            raw[i].append((np.array(t["model"]), np.array(t["\0reference"])))
    print(f"{setting.describe()}, {args.repeats} timed calls per model, {args.subnets} subnets × {args.times}\n")
    print("| estimator | pairwise difference: median | p90 |\n|---|---|---|")
    for name, estimate in estimators(setting.block).items():
        diffs = []
        for runs in raw:
            v = [estimate(ms, ref) for ms, ref in runs]
            diffs += [abs(v[a] - v[b]) / v[b] for a in range(len(v)) for b in range(a + 1, len(v))]
        print(f"| {name} | {np.median(diffs):.1%} | {np.percentile(diffs, 90):.1%} |")


if __name__ == "__main__":
    main()
