"""How right is the latency predictor, per runtime, on this machine with a fresh calibration? (issue 10)

    python benchmarks/predictor.py [--config configs/default.yaml] [--runtimes torch-eager,onnxruntime,openvino]
                                   [--samples 40] [--subnets 30] [--threads N]

For each runtime: calibrate a new table (``--samples`` extracted subnets measured interleaved with the base
model), then measure ``--subnets`` other random subnets the same way and report the relative error of the
predicted ratio to the base model: median, p90, max; then the same after refitting on the first half of
them (what the search does online), scored on the second half; and, as the noise floor, how far the same
subnet's ratio moves when measured twice. Latency does not depend on weight values,
so the model is the config's architecture at random init (no training needed).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators import LatencyMeter, LatencySetting, LatencyTable  # noqa: E402
from evaluators.lut import hardware_name  # noqa: E402
from search.config import load_config  # noqa: E402
from search.workload import base_model_config, create_model  # noqa: E402
from supernet import Supernet, SubnetConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    ap.add_argument("--runtimes", default="torch-eager,onnxruntime,openvino")
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--subnets", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    config = load_config(args.config)
    sn = Supernet.from_timm(create_model(base_model_config(config)).eval(), bounds=config["space"]).eval()
    shape = (sn.spec.in_chans, *sn.spec.img_size)
    rows = []
    for runtime in args.runtimes.split(","):
        setting = LatencySetting.resolve(args.device, runtime, threads=args.threads)
        start = time.perf_counter()
        table = LatencyTable.build(sn, setting, samples=args.samples)
        calibration_s = time.perf_counter() - start
        meter = LatencyMeter(setting, shape, reference=sn.vit)
        rng = np.random.default_rng(1)  # other subnets than the calibration's (seed 0)
        held_out = []
        for _ in range(args.subnets):
            cfg = sn.space.sample(rng)
            held_out.append((cfg.to_dict(), meter.measure(sn.extract(cfg)).ratio))
        err = table.errors(held_out)
        # the noise floor: the same subnets measured again, the same way
        again = [abs(meter.measure(sn.extract(SubnetConfig.from_dict(c))).ratio - r) / r for c, r in held_out[:10]]
        half = len(held_out) // 2
        for c, r in held_out[:half]:
            table.points.append((c, r))
        table.fit()
        refit = table.errors(held_out[half:])
        rows.append((runtime, setting, table.base_ms, calibration_s, err, refit, np.median(again)))
        print(f"{runtime}: base {table.base_ms:.2f} ms; error median {np.median(err):.1%}, p90 "
              f"{np.percentile(err, 90):.1%}; after refit {np.median(refit):.1%} / {np.percentile(refit, 90):.1%}",
              flush=True)
    print(f"\n{hardware_name(sn.vit.cls_token.device if args.device == 'cpu' else setting.torch_device)}, "
          f"{config['model']['name']} shape, {args.samples} calibration subnets, {args.subnets} held out\n")
    print("| runtime | base model | calibration | error median | p90 | max | after refit on half: median | p90 | "
          "same subnet measured twice: median difference |")
    print("|---|---|---|---|---|---|---|---|---|")
    for runtime, setting, base_ms, seconds, err, refit, noise in rows:
        print(f"| {setting.describe()} | {base_ms:.2f} ms | {seconds:.0f} s | {np.median(err):.1%} | "
              f"{np.percentile(err, 90):.1%} | {err.max():.1%} | {np.median(refit):.1%} | "
              f"{np.percentile(refit, 90):.1%} | {noise:.1%} |")


if __name__ == "__main__":
    main()
