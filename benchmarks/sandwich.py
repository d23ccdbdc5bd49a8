"""Which subnets should sandwich training train? (issue 11: the best shared-weight subnet at 0.5x of the base
model's latency within 3 points of the base model's val top-1)

    python benchmarks/sandwich.py [--config FILE] [--variants default,no-smallest,band] [--configs 60]

Runs the gradient phase's width methods once (the gates order the shared weights), then sandwich-trains a copy
per variant with the phase's own settings (epochs, lr, batch, seed), and scores each on one fixed set of
subnets: random configs kept in equal bands of predicted latency ratio between 0.25 and 0.75, every uniform
narrowing in that range, and the width methods' proposals. Prints, per band, the mean and best shared-weight
val top-1, and the best at <= 0.5x predicted. Variants (each a set of subnets per step, gradients summed):
  default      the product's: the largest on labels, the smallest and ``n_random`` random ones distilled from it;
  no-smallest  the same without the smallest (less compute per step);
  band         the smallest replaced by one more random subnet whose predicted ratio is within --band.
Token methods are not run (they train only the token scorers, after the sandwich); subnets that drop tokens
rank them with the class-attention scorer in every variant.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators import evaluate_accuracy  # noqa: E402
from search.setup import prepare  # noqa: E402
from supernet.gates import METHODS  # noqa: E402
from supernet.phase import gradient_phase, phase_order, proposals  # noqa: E402
from supernet.train import sandwich_subnets, train_supernet  # noqa: E402


def randoms(space, rng, n):  # the product's subnets without the smallest (which draws nothing from rng)
    return sandwich_subnets(space, rng, n)[1:]


def in_band(ratio, band):
    def draw(space, rng, n):
        for _ in range(10_000):
            cfg = space.sample(rng)
            if band[0] <= ratio(cfg) <= band[1]:
                return randoms(space, rng, n) + [("band", cfg)]
        raise SystemExit(f"no random subnet's predicted ratio falls in --band {band}; widen it")
    return draw


def test_set(p, n: int, low=0.25, high=0.75, bands=4, seed=1234):
    """(label, config, predicted ratio) for random configs in equal bands, uniform narrowings, proposals."""
    space, ratio = p.sn.space, p.table.predict_ratio
    edges = np.linspace(low, high, bands + 1)
    per_band = {i: [] for i in range(bands)}
    rng = np.random.default_rng(seed)
    for _ in range(200 * n):
        if all(len(v) >= n // bands for v in per_band.values()):
            break
        cfg = space.sample(rng)
        r = ratio(cfg)
        i = int(np.searchsorted(edges, r)) - 1
        if 0 <= i < bands and len(per_band[i]) < n // bands:
            per_band[i].append(("random", cfg, r))
    uniform = [("uniform", c, ratio(c)) for c in space.uniform_shapes()]
    return [t for v in per_band.values() for t in v] + [t for t in uniform if low <= t[2] <= high], edges


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None)
    ap.add_argument("--variants", default="default,no-smallest,band")
    ap.add_argument("--configs", type=int, default=60, help="random test configs (spread over 4 bands)")
    ap.add_argument("--band", default="0.3,0.7", help="predicted ratio band of the 'band' variant")
    ap.add_argument("--epochs", type=int, default=None, help="sandwich epochs (default: the config's)")
    ap.add_argument("--out", default=None, help="also write every subnet's figures to this JSON file")
    args = ap.parse_args()
    torch.manual_seed(0)
    p = prepare(args.config)
    cfg = p.config["supernet"]
    epochs = cfg["epochs"] if args.epochs is None else args.epochs
    print(f"torch {torch.__version__}, {p.setting.describe()}, base {p.base_latency}, "
          f"base val top-1 {p.workload.metrics.get('val_top1', float('nan')):.1%}")
    loader = torch.utils.data.DataLoader(p.workload.splits["train"], batch_size=cfg["batch_size"], shuffle=True)
    width = [n for n in phase_order() if METHODS[n].stage == "width"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = gradient_phase(p.sn, loader, width, p.table.unit_costs(p.sn.space), tmp, {"bench": 1}, 0,
                                cfg["lr"], n_random=cfg["n_random"], seed=cfg["seed"], device=p.device)
    print(f"width methods: {time.perf_counter() - start:.0f} s")
    ordered = copy.deepcopy(p.sn.state_dict())
    tests, edges = test_set(p, args.configs)
    tests += [("proposal", c, p.table.predict_ratio(c)) for c in proposals(result)]
    val = p.workload.splits["val"]
    band = tuple(float(v) for v in args.band.split(","))
    subnets = {"default": sandwich_subnets, "no-smallest": randoms, "band": in_band(p.table.predict_ratio, band)}
    rows, report = {}, {"subnets": [{"kind": k, "predicted_ratio": r, "config": c.to_dict()} for k, c, r in tests]}
    for name in args.variants.split(","):
        p.sn.load_state_dict(ordered)
        t0 = time.perf_counter()
        train_supernet(p.sn, loader, epochs, cfg["lr"], n_random=cfg["n_random"], seed=cfg["seed"], device=p.device,
                       log=lambda s: print(f"  [{name}] {s}"), subnets=subnets[name])
        seconds = time.perf_counter() - t0
        accs = [evaluate_accuracy(p.sn, val, c, p.device) for _, c, _ in tests]
        rows[name] = accs
        largest = evaluate_accuracy(p.sn, val, p.sn.space.largest())
        print(f"{name}: sandwich {seconds:.0f} s; largest {largest:.1%}")
        report[name] = {"seconds": round(seconds, 1), "largest": largest, "val_top1": accs}
    print("\nshared-weight val top-1 over the same subnets (mean / best)")
    print("| subnets | n | " + " | ".join(rows) + " |")
    print("|---|---|" + "---|" * len(rows))
    groups = [(f"random {a:.2f}-{b:.2f}x", lambda l, r, a=a, b=b: l == "random" and a <= r < b)
              for a, b in zip(edges, edges[1:])]
    groups += [("uniform narrowings", lambda l, r: l == "uniform"), ("proposals", lambda l, r: l == "proposal"),
               ("all <= 0.5x", lambda l, r: r <= 0.5)]
    for title, keep in groups:
        idx = [i for i, (l, _, r) in enumerate(tests) if keep(l, r)]
        if idx:
            print(f"| {title} | {len(idx)} | " + " | ".join(
                f"{np.mean([v[i] for i in idx]):.1%} / {max(v[i] for i in idx):.1%}" for v in rows.values()) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
