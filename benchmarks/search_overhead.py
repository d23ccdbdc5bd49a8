"""What a trial of ``search run`` spends besides measuring: the sampler's choice and the latency table's upkeep.

    python benchmarks/search_overhead.py [--config CONFIG]

On the prepared workload (the bundled one by default; its base model and phase cached, else trained first):
- the local sampler's choice of one trial (median of 10) in a study of 40 random trials, as ``search run``
  builds it (``optimize.predictions`` over the run's table);
- the latency table's shape terms of one config, uncached;
- a refit, and the skip margin's leave-one-out refits, for a table of 200 points (what a table keeps:
  ``CALIBRATION`` + ``RECENT``) and of 1,000 (what it grew to before it kept only those).
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators.lut import LatencyTable, _features, features, hardware_name  # noqa: E402
from search.optimize import build_sampler, predictions, suggest_config  # noqa: E402
from search.setup import prepare  # noqa: E402


def seconds(fn, times: int) -> float:
    runs = []
    for _ in range(times):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return float(np.median(runs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    p = prepare(args.config, log=lambda *a: None)
    space, table = p.sn.space, p.table
    rng = np.random.default_rng(0)

    budget = 0.35 * table.base_ms
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):  # accuracies made up: the choice's cost does not depend on them
        trial = study.ask()
        latency = table.predict(suggest_config(trial, space))
        trial.set_constraint("latency_ms_over_budget", latency - budget)
        study.tell(trial, [float(rng.uniform(0.3, 0.9)), latency])
    sampler = build_sampler("local", 0, predictions(space, table.predict))
    relative = sampler.infer_relative_search_space(study, None)
    choice = seconds(lambda: sampler.sample_relative(study, None, relative), 10)

    configs = [space.sample(rng) for _ in range(100)]
    _features.cache_clear()
    start = time.perf_counter()
    for cfg in configs:
        features(table.spec, cfg)
    terms = (time.perf_counter() - start) / len(configs)

    rows = []
    for n in (200, 1000):
        sampled = [space.sample(rng) for _ in range(n)]
        noisy = LatencyTable(key=table.key, points=[(c.to_dict(), table.predict_ratio(c) * float(rng.lognormal(0, 0.05)))
                                                    for c in sampled])
        rows.append((n, seconds(noisy.fit, 5), seconds(lambda: (noisy.fit(), noisy.skip_factor()), 3)))

    print(f"\n{hardware_name(torch.device('cpu'))}, torch {torch.__version__}, {datetime.date.today()}, "
          f"{torch.get_num_threads()} threads\n")
    print("| step | seconds |\n|---|---|")
    print(f"| local sampler's choice of a trial (40 trials done, median of 10) | {choice:.3f} |")
    print(f"| latency-table shape terms of one config (uncached) | {terms:.5f} |")
    for n, fit, margin in rows:
        print(f"| table of {n} points: refit | {fit:.4f} |")
        print(f"| table of {n} points: refit + skip margin (leave-one-out) | {margin:.3f} |")


if __name__ == "__main__":
    main()
