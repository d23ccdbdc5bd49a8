"""How should a subnet be timed next to the base model? (issue 10, "Measurement that matches deployment")

    python benchmarks/interleave.py [--config configs/default.yaml] [--runtime torch-eager] [--threads N]

For a small, a middle and the largest subnet of the config's model, the median latency:
  - alone: the subnet timed by itself in this process;
  - call by call: alternating with the base model one call each (the old measure_latency_interleaved);
  - blocks: alternating in blocks of consecutive calls, the first call after each switch untimed (what
    vitnas uses everywhere);
  - blocks, first call timed: the same blocks, timing every call;
  - fresh process: a new Python process that times the subnet alone (what a deployment sees).
Latency does not depend on weight values, so the model is the config's architecture at random init (no
base training needed). Each figure is the median of --rounds repetitions of the whole comparison.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators.latency import LatencySetting, example_input  # noqa: E402
from evaluators.runtimes.timing import time_blocks  # noqa: E402
from evaluators.runtimes import get_runtime  # noqa: E402
from search.config import load_config  # noqa: E402
from search.workload import base_model_config, create_model  # noqa: E402
from supernet import Supernet, SubnetConfig  # noqa: E402


def subnets(space) -> dict[str, SubnetConfig]:
    big = space.largest()
    d = big.depth
    mid = SubnetConfig(space.embed_dim.choices[len(space.embed_dim.choices) // 2], max(space.depth.min, d * 2 // 3),
                       [], [], [], [])
    mid = SubnetConfig(mid.embed_dim, mid.depth, [max(space.heads.min, space.heads.max - 1)] * mid.depth,
                       [space.mlp.choices[len(space.mlp.choices) // 2]] * mid.depth, ["msa"] * mid.depth,
                       [1.0] * mid.depth)
    small = SubnetConfig(space.embed_dim.choices[1], max(space.depth.min, d // 3), [], [], [], [])
    small = SubnetConfig(small.embed_dim, small.depth, [space.heads.min] * small.depth,
                         [space.mlp.choices[1]] * small.depth, ["msa"] * small.depth, [1.0] * small.depth)
    return {"small": space.validate(small), "middle": space.validate(mid), "largest": big}


def fresh_process(setting: LatencySetting, spec: dict, cfg: SubnetConfig, shape) -> float:
    code = ("import json,sys; from supernet.subnet import ModelSpec, build_subnet; from supernet import SubnetConfig;"
            "from evaluators.latency import LatencySetting, measure_latency; a=json.loads(sys.argv[1]);"
            "m=build_subnet(ModelSpec.from_dict(a['spec']), SubnetConfig.from_dict(a['cfg'])).eval();"
            "print(measure_latency(m, a['shape'], LatencySetting(**a['setting'])).median_ms)")
    arg = json.dumps({"spec": spec, "cfg": cfg.to_dict(), "shape": list(shape), "setting": asdict(setting)})
    out = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    ap.add_argument("--runtime", default="torch-eager")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    config = load_config(args.config)
    vit = create_model(base_model_config(config)).eval()
    sn = Supernet.from_timm(vit, bounds=config["space"]).eval()
    setting = LatencySetting.resolve("cpu", args.runtime, threads=args.threads, warmup=20, repeats=200, block=5)
    backend = get_runtime(setting.runtime)
    shape = (sn.spec.in_chans, *sn.spec.img_size)
    x = example_input(setting, shape)
    import tempfile
    tmp = Path(tempfile.mkdtemp())
    base = backend.prepare(sn.extract(sn.space.largest()).eval(), x, setting.threads, tmp / "base")
    print(f"# {setting.describe()}; base model: {config['model']['name']} shape at random init")
    print("| subnet | alone | call by call | blocks (vitnas) | blocks, first call timed | fresh process |")
    print("|---|---|---|---|---|---|")
    import torch
    torch.set_num_threads(setting.threads)
    for name, cfg in subnets(sn.space).items():
        call = backend.prepare(sn.extract(cfg).eval(), x, setting.threads, tmp / name)
        rows = {k: [] for k in ("alone", "call", "blocks", "blocks_all", "fresh")}
        s = setting
        for _ in range(args.rounds):
            med = lambda t: float(np.median(t))  # noqa: E731
            rows["alone"].append(med(time_blocks({"s": call}, s.warmup, s.repeats, s.block)["s"]))
            rows["call"].append(med(time_blocks({"b": base, "s": call}, s.warmup, s.repeats, 1, skip_first=False)["s"]))
            rows["blocks"].append(med(time_blocks({"b": base, "s": call}, s.warmup, s.repeats, s.block)["s"]))
            rows["blocks_all"].append(med(time_blocks({"b": base, "s": call}, s.warmup, s.repeats, s.block,
                                                      skip_first=False)["s"]))
            rows["fresh"].append(fresh_process(setting, sn.spec.to_dict(), cfg, shape))
        m = {k: float(np.median(v)) for k, v in rows.items()}
        print(f"| {name} (e{cfg.embed_dim} d{cfg.depth}) | {m['alone']:.3f} ms | {m['call']:.3f} ms "
              f"({m['call'] / m['alone'] - 1:+.0%}) | {m['blocks']:.3f} ms ({m['blocks'] / m['alone'] - 1:+.0%}) | "
              f"{m['blocks_all']:.3f} ms ({m['blocks_all'] / m['alone'] - 1:+.0%}) | {m['fresh']:.3f} ms "
              f"({m['fresh'] / m['alone'] - 1:+.0%}) |", flush=True)


if __name__ == "__main__":
    main()
