"""How right is the latency predictor, per runtime, on this machine with a fresh calibration? (issue 10)

    python benchmarks/predictor.py [--config configs/default.yaml] [--runtimes torch-eager,onnxruntime,openvino]
                                   [--samples 40] [--subnets 30] [--times 3] [--threads N]

For each runtime: calibrate a new table (``--samples`` extracted subnets measured interleaved with the base
model), then measure ``--subnets`` other random subnets the same way, each ``--times`` times, and report the
relative error of the predicted ratio to the base model (median, p90, max) against one measurement and against
the median of the ``--times`` measurements (one measurement moves by about as much as the targets allow on a
noisy machine: the median of several is the better estimate of the subnet's latency); then the same after
refitting on the first half of them (what the search does online), scored on the second half; and, as the
noise floor, how far the same subnet's ratio moves between its first two measurements. Latency does not
depend on weight values, so the model is the config's architecture at random init (no training needed).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators import LatencyMeter, LatencySetting, LatencyTable  # noqa: E402
from evaluators.lut import hardware_name  # noqa: E402
from search.config import load_config  # noqa: E402
from search.workload import base_model_config, create_model  # noqa: E402
from supernet import Supernet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    ap.add_argument("--runtimes", default="torch-eager,onnxruntime,openvino")
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--subnets", type=int, default=30)
    ap.add_argument("--times", type=int, default=3, help="measurements of each held-out subnet")
    ap.add_argument("--out", default=None, help="a JSON file for every held-out subnet's ratios and prediction")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    config = load_config(args.config)
    sn = Supernet.from_timm(create_model(base_model_config(config)).eval(), bounds=config["space"]).eval()
    shape = (sn.spec.in_chans, *sn.spec.img_size)
    rows, dump = [], {}
    for runtime in args.runtimes.split(","):
        setting = LatencySetting.resolve(args.device, runtime, threads=args.threads)
        start = time.perf_counter()
        table = LatencyTable.build(sn, setting, samples=args.samples)
        calibration_s = time.perf_counter() - start
        meter = LatencyMeter(setting, shape, reference=sn.vit)
        rng = np.random.default_rng(1)  # other subnets than the calibration's (seed 0)
        configs = [sn.space.sample(rng) for _ in range(args.subnets)]
        # in rounds (every subnet once, then again): a subnet's measurements are minutes apart, not back to back
        rounds = [[meter.measure(sn.extract(cfg)).ratio for cfg in configs] for _ in range(args.times)]
        measured = [(cfg.to_dict(), [r[i] for r in rounds]) for i, cfg in enumerate(configs)]
        held_out = [(c, float(np.median(r))) for c, r in measured]
        dump[runtime] = [{"config": c, "measured": r, "predicted": table.predict_ratio(cfg)}
                         for (c, r), cfg in zip(measured, configs)]  # before the refit below
        err_one = table.errors([(c, r[0]) for c, r in measured])
        err = table.errors(held_out)
        # the noise floor: how far a subnet's second measurement is from its first
        noise = np.median([abs(r[1] - r[0]) / r[0] for _, r in measured]) if args.times > 1 else float("nan")
        half = len(held_out) // 2
        for c, r in held_out[:half]:
            table.points.append((c, r))
        table.fit()
        refit = table.errors(held_out[half:])
        rows.append((runtime, setting, table.base_ms, calibration_s, err_one, err, refit, noise))
        print(f"{runtime}: base {table.base_ms:.2f} ms; error against one measurement: median "
              f"{np.median(err_one):.1%}, p90 {np.percentile(err_one, 90):.1%}; against the median of "
              f"{args.times}: {np.median(err):.1%} / {np.percentile(err, 90):.1%}; after refit "
              f"{np.median(refit):.1%} / {np.percentile(refit, 90):.1%}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(dump, indent=1))
    print(f"\n{hardware_name(sn.vit.cls_token.device if args.device == 'cpu' else setting.torch_device)}, "
          f"{config['model']['name']} shape, {args.samples} calibration subnets, {args.subnets} held out\n")
    print(f"| runtime | base model | calibration | against one measurement: median | p90 | max | against the "
          f"median of {args.times}: median | p90 | max | after refit on half: median | p90 | same subnet measured "
          "twice: median difference |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for runtime, setting, base_ms, seconds, one, err, refit, noise in rows:
        print(f"| {setting.describe()} | {base_ms:.2f} ms | {seconds:.0f} s | {np.median(one):.1%} | "
              f"{np.percentile(one, 90):.1%} | {one.max():.1%} | {np.median(err):.1%} | "
              f"{np.percentile(err, 90):.1%} | {err.max():.1%} | {np.median(refit):.1%} | "
              f"{np.percentile(refit, 90):.1%} | {noise:.1%} |")


if __name__ == "__main__":
    main()
