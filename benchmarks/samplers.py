"""Does the outer loop add anything to the gradient phase's proposals? One `search run` per sampler and budget.

    python benchmarks/samplers.py [--config FILE] [--samplers local,nsga2] [--budgets 0.7,0.5,0.35] [--trials 60]
                                  [--seeds 1] [--out DIR]

Each study is the product's main job without the retrain (``--retrain-top 0``): the phase's proposals queued
first, then the sampler's own trials, every latency measured interleaved with the base and judged as a ratio
to it. Per study: the best val top-1 on shared weights within the budget — overall, among the queued
proposals, and among the sampler's own trials — so the table shows whether the loop beats the proposals.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import optuna
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators.lut import hardware_name  # noqa: E402
from search.run import search_command  # noqa: E402


def best_within(trials: pd.DataFrame, rows=True) -> float | None:
    ok = trials[(trials["state"] == "COMPLETE") & trials["feasible"].astype(bool) & rows]
    return float(ok["val_top1"].max()) if len(ok) else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    ap.add_argument("--samplers", default="local,nsga2")
    ap.add_argument("--budgets", default="0.7,0.5,0.35", help="fractions of the base model's measured latency")
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="results/samplers")
    args = ap.parse_args()
    latency = {"device": "cpu", "runtime": "torch-eager", "threads": args.threads}
    rows = []
    for r in (float(b) for b in args.budgets.split(",")):
        for sampler in args.samplers.split(","):
            for seed in range(args.seeds):
                out = Path(args.out) / f"{sampler}-{r:g}-seed{seed}"
                search_command(args.config, latency=latency, trials=args.trials, retrain_top=0, out=out,
                                         log=lambda *a: None, budget_ratio=r, sampler=sampler, seed=seed)
                trials = pd.read_csv(out / "trials.csv")
                study = optuna.load_study(study_name=out.resolve().name, storage=f"sqlite:///{out.resolve()}/study.db")
                queued = trials["number"].isin([t.number for t in study.trials if "fixed_params" in t.system_attrs])
                row = {"budget": r, "sampler": sampler, "seed": seed, "best": best_within(trials),
                       "proposals": best_within(trials, queued), "own": best_within(trials, ~queued),
                       "measured": int((trials["state"] == "COMPLETE").sum()), "trials": len(trials)}
                rows.append(row)
                print(f"== {sampler} seed {seed} at {r:g}×: best {row['best']}, proposals {row['proposals']}, "
                      f"its own trials {row['own']}", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "samplers.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{hardware_name(torch.device('cpu'))}, torch {torch.__version__}, {datetime.date.today()}, torch-eager; "
          f"{args.trials} trials per study, the phase's proposals first\n")
    print("| budget | sampler | seed | best val top-1 within budget (shared weights) | best proposal | best of the "
          "sampler's own trials | measured / trials |")
    print("|---|---|---|---|---|---|---|")
    pct = lambda v: "none" if v is None else f"{v:.1%}"  # noqa: E731
    for x in rows:
        print(f"| {x['budget']:g}× | {x['sampler']} | {x['seed']} | {pct(x['best'])} | {pct(x['proposals'])} | "
              f"{pct(x['own'])} | {x['measured']} / {x['trials']} |")


if __name__ == "__main__":
    main()
