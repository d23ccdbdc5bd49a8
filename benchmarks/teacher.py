"""Which teacher should retraining distil from? (issue 11)

    python benchmarks/teacher.py [--config configs/default.yaml] [--subnets 3] [--epochs N] [--start K]

Two candidates: the base model as trained, and the supernet's largest subnet after the gradient phase (the
base model's weights reordered by importance and sandwich-trained: what ``retrain`` distilled from before
the supernet got its own copy). Each of ``--subnets`` gate-phase proposals spread over 30–70% of the base
model's predicted latency is extracted twice and fine-tuned with the same recipe, seed and epochs, once
per teacher; the table gives val and test top-1 after each. ``--start K`` skips the first K of them (to
finish an interrupted comparison: each row is independent).
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators import evaluate_accuracy  # noqa: E402
from evaluators.lut import hardware_name  # noqa: E402
from search.retrain import finetune  # noqa: E402
from search.setup import ensure_supernet, prepare  # noqa: E402
from supernet.phase import proposals  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    ap.add_argument("--subnets", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--start", type=int, default=0)
    args = ap.parse_args()
    quiet = lambda *a: None  # noqa: E731
    p = prepare(args.config, log=quiet)
    result = ensure_supernet(p, log=print)
    recipe = dict(p.config["retrain"], **({"epochs": args.epochs} if args.epochs else {}))
    base_ms = p.table.predict(p.sn.space.largest())
    pool = [c for c in proposals(result) if 0.3 <= p.table.predict(c) / base_ms <= 0.7]
    pool.sort(key=p.table.predict)
    picks = [pool[int(i)] for i in np.linspace(0, len(pool) - 1, min(args.subnets, len(pool)))] if pool else []
    teachers = {"base model": p.workload.model, "supernet largest": p.sn.extract(p.sn.space.largest()).eval()}
    splits = p.workload.splits
    print(f"\n{hardware_name(p.device)}, torch {torch.__version__}, {datetime.date.today()}; {p.config['name']}, "
          f"retrain {recipe['epochs']} epochs, kd_weight {recipe['kd_weight']}\n")
    for name, t in teachers.items():
        print(f"teacher {name}: val {evaluate_accuracy(t, splits['val']):.1%}, "
              f"test {evaluate_accuracy(t, splits['test']):.1%}")
    print("\n| subnet (predicted × base) | shared weights val | " +
          " | ".join(f"teacher {n}: val / test" for n in teachers) + " |")
    print("|---|---|" + "---|" * len(teachers))
    gains = []
    for cfg in picks[args.start:]:
        cells = []
        got = {}
        for name, teacher in teachers.items():
            model = p.sn.extract(cfg)
            finetune(model, teacher, splits["train"], recipe, p.device, desc=f"retrain ({name})")
            model.eval()
            got[name] = (evaluate_accuracy(model, splits["val"]), evaluate_accuracy(model, splits["test"]))
            cells.append(f"{got[name][0]:.1%} / {got[name][1]:.1%}")
        gains.append(got["base model"][1] - got["supernet largest"][1])
        print(f"| {p.table.predict(cfg) / base_ms:.2f}× | {evaluate_accuracy(p.sn, splits['val'], cfg):.1%} | "
              + " | ".join(cells) + " |", flush=True)
    if gains:
        print(f"\ntest top-1, base-model teacher minus supernet teacher: mean {np.mean(gains):+.1%} "
              f"(per subnet {', '.join(f'{g:+.1%}' for g in gains)})")


if __name__ == "__main__":
    main()
