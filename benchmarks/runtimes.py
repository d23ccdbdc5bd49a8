"""Where the runtime changes the answer (issue 10): search once per runtime, then time every winner in every
runtime.

    python benchmarks/runtimes.py [--config configs/default.yaml] [--runtimes torch-eager,onnxruntime,openvino]
                                  [--ratio 0.5] [--trials 100] [--device cpu] [--out results/runtimes]

For each runtime R: the budget is ``--ratio`` × the base model's latency measured in R, and
``python -m search run`` searches under it in R (its own latency table and gradient phase, cached). Then
every winner is timed in every runtime, interleaved with the base model there, and the table shows what a
user loses by searching in the wrong runtime: a winner over the deployment runtime's budget, or less
accuracy than that runtime's own winner. It also re-times the trials each search skipped as "predicted over
budget" and counts those that would have fitted (the skip margin's cost), and reports the latency table's
error during each study. Winners are compared on shared weights (no retraining).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators.lut import hardware_name  # noqa: E402
from search import load_results  # noqa: E402
from search.run import search_command  # noqa: E402
from search.setup import ensure_supernet, prepare  # noqa: E402
from supernet import ConfigError, SubnetConfig  # noqa: E402


def study_prediction_error(out: Path) -> tuple[int, float, float]:
    """(configs, median, p90) of the latency table's relative error on the ratio to the base model over a
    study's measured configs, each predicted *before* it was measured (first occurrence of each config):
    the online predictor as the search used it."""
    trials = load_results(out).trials
    done = trials[trials["state"] == "COMPLETE"]
    axes = [c for c in done if c.split("_")[0] in ("heads", "mlp", "ops", "keep")] + ["embed_dim", "depth"]
    done = done.drop_duplicates(subset=axes, keep="first")
    err = ((done["predicted_ratio"] - done["ratio_to_base"]).abs() / done["ratio_to_base"]).to_numpy()
    return len(err), float(np.median(err)), float(np.percentile(err, 90))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    ap.add_argument("--runtimes", default="torch-eager,onnxruntime,openvino")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="results/runtimes")
    args = ap.parse_args()
    runtimes = args.runtimes.split(",")
    quiet = lambda *a: None  # noqa: E731
    searched = {}
    for runtime in runtimes:
        latency = {"device": args.device, "runtime": runtime, "threads": args.threads}
        p = prepare(args.config, log=quiet, **latency)
        out = Path(args.out) / runtime
        print(f"== searching in {p.setting.describe()} under {args.ratio:g} × the base model's latency", flush=True)
        try:  # the budget: the ratio × the base as the run measures it at its start (what it judges latency at)
            search_command(args.config, None, latency, trials=args.trials, retrain_top=0, out=out, log=quiet,
                           budget_ratio=args.ratio)
        except ConfigError as e:  # e.g. per-call overhead leaves no subnet under the budget in this runtime
            print(f"   no search: {e}", flush=True)
            searched[runtime] = {"budget": None, "best": None, "skipped": 0, "would_fit": 0, "why": str(e)}
            continue
        settings = json.loads((out / "run.json").read_text())["settings"]
        budget = settings["budget_ms"]
        base_ms = budget / settings["budget_ratio"]
        print(f"   base {base_ms:.2f} ms at the run's start, budget {budget} ms", flush=True)
        best = yaml.safe_load((out / "best.yaml").read_text()) if (out / "best.yaml").is_file() else None
        trials = load_results(out).trials
        skipped = trials[trials["state"] == "PRUNED"]
        ensure_supernet(p, log=quiet)
        would_fit = 0
        for _, row in skipped.iterrows():
            cfg = load_results(out).config(int(row["number"]))
            would_fit += p.meter.measure(p.sn.extract(cfg)).at(base_ms) <= budget
        factors = trials["skip_factor"].dropna()
        margin = f"{factors.min():.2f}–{factors.max():.2f}×" if len(factors) else "–"
        searched[runtime] = {"budget": budget, "best": best, "skipped": len(skipped), "would_fit": would_fit,
                             "margin": margin, "base": base_ms}
        print(f"   winner: {best['metrics'] if best else None}; skipped {len(skipped)}, of which {would_fit} "
              f"would have met the budget (skip margin {margin} the budget)", flush=True)

    # every winner in every runtime, each interleaved with the base model in that runtime
    rows = []
    for deploy in runtimes:
        p = prepare(args.config, log=quiet, device=args.device, runtime=deploy, threads=args.threads)
        ensure_supernet(p, log=quiet)
        budget = searched[deploy]["budget"]
        for origin, s in searched.items():
            if not s["best"]:
                continue
            cfg = SubnetConfig.from_yaml(Path(args.out) / origin / "best.yaml")
            lat = p.meter.measure(p.sn.extract(cfg))  # judged as the runs judge: the ratio, timed with the base
            base = searched[deploy].get("base")
            rows.append({"searched in": origin, "deployed in": deploy,
                         "latency_ms": lat.at(base) if base else lat.median_ms, "clock_ms": lat.median_ms,
                         "ratio_to_base": lat.ratio, "budget_ms": budget, "within": lat.ratio <= args.ratio,
                         "val_top1": s["best"]["metrics"]["val_top1"], "test_top1": s["best"]["metrics"]["test_top1"]})
    df = pd.DataFrame(rows)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    df.to_csv(Path(args.out) / "cross.csv", index=False)
    device = torch.device(args.device)
    print(f"\n{hardware_name(device)}, torch {torch.__version__}, {datetime.date.today()}, batch 1, "
          f"{p.setting.threads} threads; budget = {args.ratio:g} × the base model's latency in each runtime; "
          f"{args.trials} trials each\n")
    print("| searched in | val / test top-1 (shared weights) | " +
          " | ".join(f"in {d}: ms (× base), budget {searched[d]['budget'] or '-'} ms" for d in runtimes) + " |")
    print("|---|---|" + "---|" * len(runtimes))
    for origin in runtimes:
        cells = []
        for deploy in runtimes:
            r = df[(df["searched in"] == origin) & (df["deployed in"] == deploy)]
            if r.empty:
                cells.append("no winner")
                continue
            r = r.iloc[0]
            cells.append(f"{r.latency_ms:.2f} ({r.ratio_to_base:.2f}×) {'fits' if r.within else '**over**'}")
        best = searched[origin]["best"]
        acc = (f"{best['metrics']['val_top1']:.1%} / {best['metrics']['test_top1']:.1%}" if best else
               "no subnet predicted within the budget")
        print(f"| {origin} | {acc} | " + " | ".join(cells) + " |")
    print("\n| runtime | predictor error in the study (each config before it was measured): median / p90 | "
          "skip margin (× budget; follows the table's error) | skipped by the table | of those, would have met "
          "the budget |\n|---|---|---|---|---|")
    for origin, s in searched.items():
        if s["best"]:
            n, median, p90 = study_prediction_error(Path(args.out) / origin)
            print(f"| {origin} | {median:.1%} / {p90:.1%} ({n} configs) | {s['margin']} | {s['skipped']} | "
                  f"{s['would_fit']} |")


if __name__ == "__main__":
    main()
