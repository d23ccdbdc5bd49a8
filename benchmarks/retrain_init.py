"""Why does uniform narrowing retrain better than the search's winner (issue 13)? Its shape or its start?

    python benchmarks/retrain_init.py RESULTS [--config FILE] [--epochs 3]

``RESULTS`` is a finished ``search run`` folder. Two shapes at the same measured latency — the search's pick on
shared weights (``best.yaml``), and every width narrowed by one factor on the search space's grid (all blocks,
heads and tokens) to the widest such shape no slower than the pick, measured now — each retrained from two
starts with the product's recipe (``retrain:`` section, distillation from the base model):
- shared: the supernet's weights (what ``retrain`` does: importance-ordered, gate- and sandwich-trained);
- base: the base model's own weights, units ordered by L1 magnitude (what a structured-pruning library does;
  exits copied from the final classifier, tokens ranked by CLS attention).
The four results, each model timed in the same blocks as the base, say which of the two carries the gap.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluators import evaluate_accuracy  # noqa: E402
from evaluators.lut import hardware_name  # noqa: E402
from search.retrain import finetune  # noqa: E402
from search.results import run_settings  # noqa: E402
from search.setup import ensure_supernet, prepare  # noqa: E402
from supernet import Supernet, SubnetConfig  # noqa: E402
from supernet.importance import magnitude_importance, reorder  # noqa: E402
from uniform import cost, widest_uniform_within  # noqa: E402  (this folder)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", help="a finished `search run` folder (with best.yaml)")
    ap.add_argument("--config", default=None)
    ap.add_argument("--epochs", type=int, default=None, help="retrain epochs (default: the config's)")
    args = ap.parse_args()
    results = Path(args.results)
    run = run_settings(results)
    p = prepare(args.config or run.get("config_path"), log=lambda *a: None, **run.get("latency", {}))  # as searched
    ensure_supernet(p, log=print)
    settings = dict(p.config["retrain"], **({"epochs": args.epochs} if args.epochs else {}))
    from_base = Supernet.from_timm(copy.deepcopy(p.workload.model), bounds=p.config["space"]).eval()
    reorder(from_base, magnitude_importance(from_base))
    searched = SubnetConfig.from_yaml(results / "best.yaml")
    uniform, _ = widest_uniform_within(p.meter, from_base, p.meter.measure(p.sn.extract(searched).eval()).ratio)
    shape = (p.sn.spec.in_chans, *p.sn.spec.img_size)
    print(f"searched {searched.key()}\nuniform {uniform.key()}\n(supernet scorer: {p.sn.spec.scorer}; the base start "
          "ranks tokens by CLS attention)", flush=True)
    rows = []
    for shape_name, cfg in (("searched", searched), ("uniform", uniform)):
        for start, sn in (("shared", p.sn), ("base", from_base)):
            model = sn.extract(cfg).eval()
            before = evaluate_accuracy(model, p.workload.splits["test"], device=p.device)
            started = time.perf_counter()
            finetune(model, p.workload.model, p.workload.splits["train"], settings, p.device,
                     desc=f"{shape_name} from {start}", log=print)
            model.eval()
            rows.append({"shape": shape_name, "start": start, "test_before": before, **cost(model, shape),
                         "test_after": evaluate_accuracy(model, p.workload.splits["test"], device=p.device),
                         "val_after": evaluate_accuracy(model, p.workload.splits["val"], device=p.device),
                         "seconds": time.perf_counter() - started, "model": model})
            print(f"== {shape_name} from {start}: test {rows[-1]['test_before']:.1%} -> {rows[-1]['test_after']:.1%}",
                  flush=True)
    lat = p.meter.measure_many({f"{r['shape']}/{r['start']}": r["model"] for r in rows[::2]})  # one per shape
    print(f"\n{hardware_name(torch.device(p.device))}, torch {torch.__version__}, {datetime.date.today()}, {p.setting.describe()}; "
          f"{settings['epochs']}-epoch retrain each; base test top-1 {p.workload.metrics.get('test_top1', float('nan')):.1%}\n")
    print("| shape | × base (interleaved) | params | MFLOPs | start | test top-1 before → after | val after |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = lat[f"{r['shape']}/shared"].ratio
        print(f"| {r['shape']} | {ratio:.3f} | {r['params'] / 1e6:.2f} M | {r['flops'] / 1e6:.1f} | {r['start']} | "
              f"{r['test_before']:.1%} → {r['test_after']:.1%} | {r['val_after']:.1%} |")
    out = results / "retrain_init.json"
    out.write_text(json.dumps({"configs": {"searched": searched.to_dict(), "uniform": uniform.to_dict()},
                               "rows": [{k: v for k, v in r.items() if k != "model"} for r in rows]}, indent=1))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
