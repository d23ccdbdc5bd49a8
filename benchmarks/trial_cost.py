"""Where a measured trial of ``search run`` spends its time, per runtime.

    python benchmarks/trial_cost.py [--config CONFIG] [--runtimes torch-eager,onnxruntime] [--configs 8]

On the prepared workload (its base model cached, else trained first; the supernet as loaded, untrained: the
time does not depend on the weights), for ``--configs`` random subnets, the steps of ``Objective._evaluate``
one by one: extracting the subnet, timing it interleaved with the base model (of which preparing it: the ONNX
export and its check, a compile), counting its FLOPs, and its val top-1 on shared weights. Medians.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators import evaluate_accuracy  # noqa: E402
from evaluators.cost import count_cost  # noqa: E402
from search.setup import prepare  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    ap.add_argument("--runtimes", default="torch-eager,onnxruntime")
    ap.add_argument("--configs", type=int, default=8)
    args = ap.parse_args()
    print(f"{datetime.date.today()}, torch {torch.__version__}; seconds, median of {args.configs} random subnets")
    print("| runtime | extract | time it with the base | of which prepare | FLOPs | val top-1 | total |\n"
          "|---|---|---|---|---|---|---|")
    for runtime in args.runtimes.split(","):
        p = prepare(args.config, device="cpu", runtime=runtime, log=lambda *a: None)
        val = DataLoader(p.workload.splits["val"], batch_size=256)
        rng = np.random.default_rng(0)
        steps = []
        for _ in range(args.configs):
            cfg = p.sn.space.sample(rng)
            t0 = time.perf_counter()
            model = p.sn.extract(cfg).eval()
            t1 = time.perf_counter()
            latency = p.meter.measure(model)
            t2 = time.perf_counter()
            count_cost(model, p.workload.input_shape)
            t3 = time.perf_counter()
            evaluate_accuracy(p.sn, val, cfg, p.device)
            t4 = time.perf_counter()
            steps.append([t1 - t0, t2 - t1, latency.setup_s, t3 - t2, t4 - t3, t4 - t0])
        cells = " | ".join(f"{v:.2f}" for v in np.median(np.array(steps), axis=0))
        print(f"| {runtime} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
