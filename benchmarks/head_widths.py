"""Which step should the per-head query/key and value widths take? (issue 13)

    python benchmarks/head_widths.py [--config configs/default.yaml] [--runtimes torch-eager,onnxruntime]
                                     [--step 8] [--rounds 3]

For every width w on a grid of ``--step`` up to the base model's head width, the extracted model with every
block's heads at qk = v = w (everything else the base model), timed as a ratio to the base model in the same
blocks of calls (vitnas's latency meter), median of ``--rounds``. A width that is not a multiple of a coarser
step pays its way only if it is faster than the coarser width above it; the table shows where that holds.
Latency does not depend on weight values, so the model is the config's architecture at random init.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators.latency import LatencyMeter, LatencySetting  # noqa: E402
from evaluators.lut import hardware_name  # noqa: E402
from search.config import load_config  # noqa: E402
from search.workload import base_model_config, create_model  # noqa: E402
from supernet import Supernet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    ap.add_argument("--runtimes", default="torch-eager,onnxruntime")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--step", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    config = load_config(args.config)
    vit = create_model(base_model_config(config)).eval()
    hd = vit.blocks[0].attn.head_dim
    fine = {"min": args.step, "step": args.step}
    sn = Supernet.from_timm(vit, bounds={"qk": fine, "v": fine}).eval()
    widths = sn.space.qk.choices
    big = sn.space.largest()
    models = {w: sn.extract(type(big)(**{**vars(big), "qk": [w] * big.depth, "v": [w] * big.depth})).eval()
              for w in widths}
    runtimes = args.runtimes.split(",")
    ratios = {rt: {} for rt in runtimes}
    for rt in runtimes:
        setting = LatencySetting.resolve("cpu", rt, threads=args.threads)
        meter = LatencyMeter(setting, (sn.spec.in_chans, *sn.spec.img_size), reference=vit)
        for w, model in models.items():
            ratios[rt][w] = float(np.median([meter.measure(model).ratio for _ in range(args.rounds)]))
            print(f"{rt}: qk = v = {w}: {ratios[rt][w]:.3f}× the base", flush=True)
    print(f"\n{hardware_name(torch.device('cpu'))}, torch {torch.__version__}, batch 1, "
          f"{setting.threads} threads; {config['model']['name']} (head width {hd}), every block at qk = v = w; "
          f"latency as a ratio to the base model, median of {args.rounds}\n")
    print("| w | " + " | ".join(runtimes) + " |\n|---|" + "---|" * len(runtimes))
    for w in widths:
        print(f"| {w} | " + " | ".join(f"{ratios[rt][w]:.3f}" for rt in runtimes) + " |")


if __name__ == "__main__":
    main()
