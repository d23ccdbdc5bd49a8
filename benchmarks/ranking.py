"""Do shared weights rank subnets the way retraining does? (issue 11: Kendall τ ≥ 0.7 over ≥ 10 subnets
spread over 30–90% of the base model's latency)

    python benchmarks/ranking.py [--config FILE] [--subnets 10] [--low 0.3] [--high 0.9] [--seed 0]

Draws random subnets, keeps one per equal-width band of predicted latency ratio between ``--low`` and
``--high`` (so the set spans the range instead of crowding where random configs fall), measures each
extracted subnet interleaved with the base model, then retrains each with the product's recipe
(``search.retrain.retrain``: the config's ``retrain:`` section, distillation from the base model) and
reports Kendall τ between shared-weight and retrained val top-1, with every subnet's figures.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators import evaluate_accuracy  # noqa: E402
from gradient_phase import kendall_tau  # noqa: E402  (this folder)
from evaluators.lut import hardware_name  # noqa: E402
from search.retrain import retrain  # noqa: E402
from search.setup import ensure_supernet, prepare  # noqa: E402


def spread(p, n: int, low: float, high: float, rng, draws: int = 4000) -> list:
    """One random config per band of predicted ratio to the base model, ``n`` bands over [low, high]."""
    edges = np.linspace(low, high, n + 1)
    picked: list = [None] * n
    for _ in range(draws):
        cfg = p.sn.space.sample(rng)
        band = int(np.searchsorted(edges, p.table.predict_ratio(cfg))) - 1
        if 0 <= band < n and picked[band] is None:
            picked[band] = cfg
        if all(c is not None for c in picked):
            break
    return [c for c in picked if c is not None]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    ap.add_argument("--subnets", type=int, default=10)
    ap.add_argument("--low", type=float, default=0.3)
    ap.add_argument("--high", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    quiet = lambda *a: None  # noqa: E731
    p = prepare(args.config, device=args.device, log=quiet)
    ensure_supernet(p, log=quiet)
    configs = spread(p, args.subnets, args.low, args.high, np.random.default_rng(args.seed))
    val, test = p.workload.splits["val"], p.workload.splits["test"]
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, cfg in enumerate(configs):
            ratio = p.meter.measure(p.sn.extract(cfg).eval()).ratio
            shared = evaluate_accuracy(p.sn, val, cfg, p.device)
            after = retrain(p, cfg, Path(tmp) / str(i), log=quiet)
            rows.append({"ratio": ratio, "shared_val": shared, "shared_test": evaluate_accuracy(p.sn, test, cfg, p.device),
                         "retrained_val": after["val_top1"], "retrained_test": after["test_top1"],
                         "seconds": after["seconds"]})
            print(f"subnet {i + 1}/{len(configs)}: {ratio:.2f}× base, shared {shared:.1%} -> retrained "
                  f"{after['val_top1']:.1%} val", flush=True)
    base_val = p.workload.metrics.get("val_top1") or evaluate_accuracy(p.workload.model, val)
    print(f"\n{hardware_name(p.device)}, torch {torch.__version__}, {datetime.date.today()}, "
          f"{p.setting.describe()}; base val {base_val:.1%}; retrain {p.config['retrain']['epochs']} epochs "
          f"(distillation from the base model); {time.perf_counter() - start:.0f} s\n")
    print("| measured × base | shared-weight val / test | retrained val / test | retrain time |\n|---|---|---|---|")
    for r in sorted(rows, key=lambda r: r["ratio"]):
        print(f"| {r['ratio']:.2f} | {r['shared_val']:.1%} / {r['shared_test']:.1%} | "
              f"{r['retrained_val']:.1%} / {r['retrained_test']:.1%} | {r['seconds']:.0f} s |")
    tau_val = kendall_tau([r["shared_val"] for r in rows], [r["retrained_val"] for r in rows])
    tau_test = kendall_tau([r["shared_test"] for r in rows], [r["retrained_test"] for r in rows])
    print(f"\nKendall τ, shared-weight vs retrained top-1 over {len(rows)} subnets: val {tau_val:.2f}, "
          f"test {tau_test:.2f}")


if __name__ == "__main__":
    main()
