"""Which ONNX exporter should make the file onnxruntime times and a user ships? (issue 10; an onnxruntime trial
spent most of its time exporting)

    python benchmarks/onnx_export.py [--config configs/default.yaml] [--configs 8] [--threads 2]

For the largest subnet and ``--configs`` random ones of the config's model shape (random init: weights do not
change the time), each exporter of ``evaluators.runtimes.ONNX_EXPORTERS`` alone: its export time, the largest
difference of its file's output from the model's on an input it was not exported with, and the file's latency
in onnxruntime (the product's session options) timed in blocks interleaved with the other exporter's file, as
a ratio to the first exporter's.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators.latency import block_ratio  # noqa: E402
from evaluators.runtimes import ONNX_EXPORTERS, _run_onnx, get_runtime  # noqa: E402
from evaluators.runtimes.timing import time_blocks  # noqa: E402
from search.config import load_config  # noqa: E402
from search.workload import base_model_config, create_model  # noqa: E402
from supernet import Supernet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    ap.add_argument("--configs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    sn = Supernet.from_timm(create_model(base_model_config(config)).eval(), bounds=config["space"]).eval()
    x = torch.randn(1, sn.spec.in_chans, *sn.spec.img_size, generator=torch.Generator().manual_seed(0))
    other = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    rng = np.random.default_rng(0)
    cfgs = [sn.space.largest()] + [sn.space.sample(rng) for _ in range(args.configs)]
    names = [e.__name__.strip("_") for e in ONNX_EXPORTERS]
    print(f"{datetime.date.today()}, torch {torch.__version__}, onnxruntime {ort.__version__}, "
          f"{args.threads} threads")
    print(f"| config | shape | {' | '.join(f'{n}: export s, max diff' for n in names)} | "
          f"{' | '.join(f'{n} / {names[0]} latency' for n in names[1:])} | {names[0]} ms |")
    print("|---" * (3 + len(names)) + "|")
    tmp = Path(tempfile.mkdtemp())
    runtime = get_runtime("onnxruntime")
    seconds, ratios = {n: [] for n in names}, {n: [] for n in names[1:]}
    for i, cfg in enumerate(cfgs):
        model = sn.extract(cfg).eval()
        with torch.no_grad():
            expected = model(other).numpy()
        cells, calls = [], {}
        for name, exporter in zip(names, ONNX_EXPORTERS):
            path = tmp / f"{i}-{name}.onnx"
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exporter(model, x, str(path))
            seconds[name].append(time.perf_counter() - start)
            diff = float(np.abs(_run_onnx(path, other) - expected).max())
            cells.append(f"{seconds[name][-1]:.2f}, {diff:.1e}")
            calls[name] = runtime.load(path, x, args.threads)
        times = time_blocks(calls, 10, 200, 5)
        for n in names[1:]:
            ratios[n].append(block_ratio(times[n], times[names[0]], 5))
        shape = (f"embed {cfg.embed_dim}, depth {cfg.depth}, conv {cfg.ops.count('conv')}, "
                 f"min keep {min(cfg.keep):g}")
        print(f"| {'largest' if i == 0 else i} | {shape} | {' | '.join(cells)} | "
              f"{' | '.join(f'{ratios[n][-1]:.3f}' for n in names[1:])} | {np.median(times[names[0]]):.2f} |", flush=True)
    print("medians: " + ", ".join(f"{n} export {np.median(seconds[n]):.2f} s" for n in names) + "; " +
          ", ".join(f"{n} / {names[0]} latency {np.median(ratios[n]):.3f}" for n in names[1:]))


if __name__ == "__main__":
    main()
