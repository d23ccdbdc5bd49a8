"""Which onnxruntime session options let two models be timed side by side as each runs when deployed alone?
(issue 10: the onnxruntime timings were noisy)

    python benchmarks/ort_spinning.py [--config configs/default.yaml] [--times 4]

For a small, a middle and the largest subnet (ONNX exports of the config's model shape at random init), with
onnxruntime's default options, with spinning off, and with spinning stopped at the end of each run (what
vitnas uses): the median latency alone, in blocks with the base model (as vitnas times), the ratio to the
base model (median of ``--times`` measurements, and their spread), and the latency in a fresh process that
runs the file alone with default options (what a deployment sees).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from interleave import subnets  # noqa: E402

from evaluators.latency import block_ratio  # noqa: E402
from evaluators.runtimes import export_onnx  # noqa: E402
from evaluators.runtimes.timing import time_blocks  # noqa: E402
from search.config import load_config  # noqa: E402
from search.workload import base_model_config, create_model  # noqa: E402
from supernet import Supernet  # noqa: E402

OPTIONS = {"default": {}, "no spinning": {"session.intra_op.allow_spinning": "0"},
           "spinning stops after each run (vitnas)": {"session.force_spinning_stop": "1"}}
DEPLOYED = """import sys, time, numpy as np, onnxruntime as ort
o = ort.SessionOptions(); o.intra_op_num_threads = 2; o.inter_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
feed = {s.get_inputs()[0].name: np.zeros(%s, np.float32)}
for _ in range(20): s.run(None, feed)
t = []
for _ in range(200):
    a = time.perf_counter(); s.run(None, feed); t.append((time.perf_counter() - a) * 1e3)
print(np.median(t))"""


def session(path, options: dict):
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads = 2, 1
    for k, v in options.items():
        o.add_session_config_entry(k, v)
    s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    feed = {s.get_inputs()[0].name: np.zeros([1, *s.get_inputs()[0].shape[1:]], np.float32)}
    return lambda: s.run(None, feed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    ap.add_argument("--times", type=int, default=4)
    args = ap.parse_args()
    config = load_config(args.config)
    sn = Supernet.from_timm(create_model(base_model_config(config)).eval(), bounds=config["space"]).eval()
    x = torch.zeros(1, sn.spec.in_chans, *sn.spec.img_size)
    tmp = Path(tempfile.mkdtemp())
    paths = {}
    for name, cfg in {"base": sn.space.largest(), **subnets(sn.space)}.items():
        export_onnx(sn.extract(cfg).eval(), x, tmp / f"{name}.onnx")
        paths[name] = tmp / f"{name}.onnx"
    med = lambda t: float(np.median(t))  # noqa: E731
    print("| subnet | session options | alone | in blocks with the base | ratio to base: median (spread) | "
          "deployed: fresh process, default options |\n|---|---|---|---|---|---|")
    for name, path in list(paths.items())[1:]:
        deployed = med([float(subprocess.run([sys.executable, "-c", DEPLOYED % list(x.shape), str(path)],
                                             capture_output=True, text=True, check=True).stdout) for _ in range(3)])
        for label, options in OPTIONS.items():
            model, base = session(path, options), session(paths["base"], options)
            alone = med(time_blocks({"m": model}, 10, 100, 5)["m"])
            ratios, blocks = [], []
            for _ in range(args.times):
                t = time_blocks({"b": base, "m": model}, 10, 60, 5)
                ratios.append(block_ratio(t["m"], t["b"], 5))
                blocks.append(med(t["m"]))
            r = med(ratios)
            print(f"| {name} | {label} | {alone:.3f} ms | {med(blocks):.3f} ms | {r:.3f} "
                  f"({(max(ratios) - min(ratios)) / r:.0%}) | {deployed:.3f} ms |", flush=True)


if __name__ == "__main__":
    main()
