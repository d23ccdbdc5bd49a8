"""How vitnas's cost grows with the base model (issue 15): wall time and peak memory of each step for three
base sizes on the same data.

    python benchmarks/scale.py [--configs configs/tiny.yaml,configs/default.yaml,configs/deit_s_digits.yaml]
                               [--trials 100] [--base-epochs N] [--phase-epochs N] [--runtime torch-eager]
                               [--out DIR]

Every step runs in a process of its own on an empty cache (each config its own), so its peak memory is its
own: base preparation (training the base model), the latency table's calibration, the gradient phase, and
a search of ``--trials`` trials at half the base model's latency (no retraining). ``--base-epochs`` and
``--phase-epochs`` shorten every config's recipe alike (the growth factors then compare like with like; the
table says which recipe ran).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evaluators import count_cost  # noqa: E402
from evaluators.lut import hardware_name  # noqa: E402
from search.config import load_config  # noqa: E402
from search.run import search_command  # noqa: E402
from search.setup import ensure_supernet, prepare  # noqa: E402
from search.workload import base_model_config, create_model, load_workload  # noqa: E402

STEPS = ("base", "table", "phase", "search")


def run_step(step: str, config: str, args) -> dict:
    """One step, in this process (the child): its seconds and this process's peak memory."""
    latency = {"runtime": args.runtime, "device": args.device, "threads": args.threads}
    quiet = lambda *a: None  # noqa: E731
    if step == "base":
        start = time.perf_counter()
        load_workload(load_config(config), device=args.device, log=quiet)
    elif step == "table":
        start = time.perf_counter()  # base model cached: what prepare adds is the table's calibration
        prepare(config, log=quiet, **latency)
    elif step == "phase":
        p = prepare(config, log=quiet, **latency)
        start = time.perf_counter()
        ensure_supernet(p, log=quiet)
    else:
        start = time.perf_counter()  # everything before it cached: loading it is part of a warm search
        search_command(config, latency=latency, trials=args.trials, retrain_top=0, budget_ratio=0.5,
                       out=Path(args.out) / f"search-{Path(config).stem}", log=quiet)
    seconds = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_cuda_mb": gpu}


def shortened(config: str, args, out: Path) -> str:
    """``config`` with the recipe shortened as asked (a file next to the results), or ``config`` itself."""
    if args.base_epochs is None and args.phase_epochs is None:
        return config
    given = yaml.safe_load(Path(config).read_text()) or {}
    if args.base_epochs is not None:
        given.setdefault("train", {})["epochs"] = args.base_epochs
    if args.phase_epochs is not None:
        given.setdefault("supernet", {})["epochs"] = args.phase_epochs
    path = out / f"{Path(config).stem}-short.yaml"
    path.write_text(yaml.safe_dump(given))
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="configs/tiny.yaml,configs/default.yaml,configs/deit_s_digits.yaml")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--base-epochs", type=int, default=None)
    ap.add_argument("--phase-epochs", type=int, default=None)
    ap.add_argument("--runtime", default="torch-eager")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="results/scale")
    ap.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # a child's one step
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        print(json.dumps(run_step(args.step, args.config, args)))
        return
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for given in args.configs.split(","):
        config = shortened(given, args, out)
        cfg = load_config(config)
        base = create_model(base_model_config(cfg))
        cost = count_cost(base, (base.patch_embed.proj.in_channels, *base.patch_embed.img_size))
        env = {**os.environ, "VITNAS_CACHE": str(out / f"cache-{Path(given).stem}"),
               "PYTHONPATH": str(ROOT)}
        row = {"params": cost.params, "flops": cost.flops, "train_epochs": cfg["train"]["epochs"],
               "phase_epochs": cfg["supernet"]["epochs"]}
        for step in STEPS:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--config", config,
                   "--trials", str(args.trials), "--runtime", args.runtime, "--device", args.device, "--out", str(out)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            print(f"{Path(given).stem}: {step} ...", flush=True)
            r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"{given} {step} failed: {(r.stderr.strip().splitlines() or ['no output'])[-1]}")
            row[step] = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"  {row[step]['seconds']:.0f} s, peak {row[step]['peak_rss_mb']:.0f} MB", flush=True)
        rows[Path(given).stem] = row
    (out / "scale.json").write_text(json.dumps(rows, indent=1))

    names = list(rows)
    print(f"\n{hardware_name(torch.device(args.device))}, torch {torch.__version__}, {datetime.date.today()}, "
          f"{args.runtime}; search: {args.trials} trials at 0.5× the base, no retraining\n")
    growth = [f"{a} → {b}" for a, b in zip(names, names[1:])]
    print("| | " + " | ".join(names) + " | " + " | ".join(f"growth {g}" for g in growth) + " |")
    print("|---" * (1 + len(names) + len(growth)) + "|")
    print("| params, MFLOPs | " + " | ".join(f"{rows[n]['params'] / 1e6:.2f} M, {rows[n]['flops'] / 1e6:.0f}"
                                           for n in names) + " | " +
          " | ".join(f"{rows[b]['flops'] / rows[a]['flops']:.1f}× FLOPs" for a, b in zip(names, names[1:])) + " |")
    print("| recipe (base / sandwich epochs) | " + " | ".join(f"{rows[n]['train_epochs']} / {rows[n]['phase_epochs']}"
                                                           for n in names) + " |" + " |" * len(growth))
    for step in STEPS:
        for what, unit, fmt in (("seconds", "wall time", "{:.0f} s"), ("peak_rss_mb", "peak memory", "{:.0f} MB")):
            vals = [rows[n][step][what] for n in names]
            print(f"| {step}: {unit} | " + " | ".join(fmt.format(v) for v in vals) + " | " +
                  " | ".join(f"{b / a:.1f}×" for a, b in zip(vals, vals[1:])) + " |")
    total = {n: sum(rows[n][s]["seconds"] for s in STEPS) for n in names}
    print("| total wall time | " + " | ".join(f"{total[n] / 60:.1f} min" for n in names) + " | " +
          " | ".join(f"{total[b] / total[a]:.1f}×" for a, b in zip(names, names[1:])) + " |")
    for n in names:
        top = max(STEPS, key=lambda s: rows[n][s]["seconds"])
        print(f"- {n}: {top} dominates ({rows[n][top]['seconds'] / total[n]:.0%} of the wall time)")


if __name__ == "__main__":
    main()
