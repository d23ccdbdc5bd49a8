"""Does the bundled base model's recipe hold without luck? (issue 11: each seed >= 95% val, spread <= 1 point)

    python benchmarks/base_recipe.py [--config configs/default.yaml] [--seeds 0,1,2]
                                     [--epochs N] [--init-values 1e-4,0.1,none]

Trains the config's base model once per seed (and LayerScale init, default the recipe's) exactly as
``search run`` does on first use (``load_workload``; each lands in the cache, the recipe's seed 0 being the
one the product uses) and prints val/test top-1, the first epochs' loss and the time, with the machine and
torch version. ``--epochs 3 --init-values 1e-4,0.1,none`` is the short comparison behind the recipe's
LayerScale.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators.lut import hardware_name  # noqa: E402
from search.config import load_config  # noqa: E402
from search.workload import load_workload  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--init-values", default=None, help="LayerScale inits to compare; 'none': no LayerScale")
    args = ap.parse_args()
    config = load_config(args.config)
    if args.epochs:
        config["train"]["epochs"] = args.epochs
    inits = ([None if v == "none" else float(v) for v in args.init_values.split(",")] if args.init_values
             else [config["train"]["init_values"]])
    rows = []
    for init in inits:
        for seed in [int(s) for s in args.seeds.split(",")]:
            c = copy.deepcopy(config)
            c["train"].update(seed=seed, init_values=init)
            m = load_workload(c).metrics
            rows.append((f"{seed}, LayerScale {init}", m["val_top1"], m["test_top1"], [h["loss"] for h in m["history"]],
                         m["prep_seconds"]))
            print(f"seed {seed}, LayerScale {init}: val {m['val_top1']:.1%}, test {m['test_top1']:.1%}", flush=True)
    val = np.array([r[1] for r in rows])
    print(f"\n{hardware_name(torch.device('cpu'))}, torch {torch.__version__}, {datetime.date.today()}, "
          f"{torch.get_num_threads()} threads; {config['name']}: {config['model']['name']}, "
          f"{config['train']['epochs']} epochs\n")
    print("| seed, LayerScale init | val top-1 | test top-1 | loss after epochs 1, 2, 3 | train time |\n|---|---|---|---|---|")
    for seed, v, t, loss, seconds in rows:
        print(f"| {seed} | {v:.1%} | {t:.1%} | {', '.join(f'{x:.2f}' for x in loss[:3])} | {seconds / 60:.1f} min |")
    print(f"\nval: min {val.min():.1%}, spread {(val.max() - val.min()) * 100:.1f} points "
          f"(targets: each >= 95%, spread <= 1 point)")


if __name__ == "__main__":
    main()
