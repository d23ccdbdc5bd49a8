"""The gradient phase's measured targets on the bundled workload (issue: "Learn what to keep"):

    python benchmarks/gradient_phase.py [--config configs/default.yaml] [--ratio 0.6] [--finetune-steps 60]

1. Phase time (from its train.json; the phase runs here first if it is not cached).
2. The best config at ``ratio`` × the base model's *measured* latency, on shared weights, no retraining:
   candidates are the gate proposals, the largest subnet cut in depth, width and MLP and combined with the
   token proposals, and mutations of the best ones, kept when the latency table predicts them within
   ``slack`` × budget (the table's error is ~10%); the most accurate are then measured, each interleaved
   with the base model, and the best one that *measures* within budget is reported.
3. Ranking fidelity: Kendall τ between shared-weight val top-1 and val top-1 after a short fine-tune
   (distillation from the base model) of ``--subnets`` random subnets.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators import evaluate_accuracy  # noqa: E402
from search.setup import ensure_supernet, phase_dir, prepare  # noqa: E402
from supernet.phase import proposals, resolve_methods  # noqa: E402
from supernet.train import distill_loss  # noqa: E402


def kendall_tau(a, b) -> float:
    n, s = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return 2 * s / (n * (n - 1))


def mutate(space, cfg, rng):
    """One random change of one axis (validity is re-checked by the caller)."""
    c = copy.deepcopy(cfg)
    axis = rng.choice(["embed", "depth", "heads", "qk", "v", "mlp", "keep"])
    pick = lambda values: values[int(rng.integers(len(values)))]  # noqa: E731
    i = int(rng.integers(c.depth))
    if axis == "embed":
        c.embed_dim = pick(space.embed_dim.choices)
    elif axis == "depth":
        d = pick(space.depth.choices)
        big = space.largest()
        c = replace(c, depth=d, heads=(c.heads + big.heads)[:d], mlp=(c.mlp + big.mlp)[:d],
                    ops=(c.ops + big.ops)[:d], keep=(c.keep + [c.keep[-1]] * d)[:d],
                    qk=(c.qk + big.qk)[:d], v=(c.v + big.v)[:d])
    elif axis in ("heads", "qk", "v", "mlp"):
        getattr(c, axis)[i] = pick(getattr(space, axis).choices)
    else:
        k = pick(space.keep.choices)
        c.keep = [min(v, k) if j >= i else v for j, v in enumerate(c.keep)]
    return c


def finetune(model, base, loader, steps, lr=3e-4):
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    batches = iter(loader)
    for _ in range(steps):
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        with torch.no_grad():
            teacher = base(x)
        loss = torch.nn.functional.cross_entropy(model(x), y) + distill_loss(model(x), teacher)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default=None)
    p.add_argument("--ratio", type=float, default=0.6)
    p.add_argument("--subnets", type=int, default=12)
    p.add_argument("--finetune-steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--slack", type=float, default=1.2)
    p.add_argument("--grid", type=int, default=120, help="grid candidates (depth × width × MLP × tokens) to try")
    p.add_argument("--measure", type=int, default=10, help="most accurate candidates to measure")
    args = p.parse_args()
    torch.manual_seed(0)
    prep = prepare(args.config, "cpu")
    result = ensure_supernet(prep)
    sn, table, workload = prep.sn, prep.table, prep.workload
    space, val = sn.space, workload.splits["val"]
    train_report = json.loads((phase_dir(prep, resolve_methods(prep.config["supernet"]["method"]))
                               / "train.json").read_text())
    base = prep.base_latency  # the table is anchored on it
    budget = args.ratio * base.median_ms
    base_val = workload.metrics.get("val_top1") or evaluate_accuracy(workload.model, val)
    rows = [("gradient phase (7 methods + sandwich)", f"{train_report['seconds']:.0f} s"),
            ("base val top-1 / latency", f"{base_val:.1%} / {base}"),
            ("largest / smallest subnet val top-1 (shared weights)",
             f"{train_report['largest_val_top1']:.1%} / {train_report['smallest_val_top1']:.1%}")]

    # --- best config at ratio × base latency ----------------------------------------------------------
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    scores: dict[tuple, tuple[float, object]] = {}

    def consider(cfg):
        try:
            space.validate(cfg)
        except ValueError:
            return
        if cfg.key() not in scores and table.predict(cfg) <= args.slack * budget:
            scores[cfg.key()] = (evaluate_accuracy(sn, val, cfg), cfg)

    big = space.largest()
    for cfg in proposals(result):
        consider(cfg)
    tokens = [c.keep for c in proposals(result) if min(c.keep) < 1] + [big.keep]
    grid = [replace(big.first(d), embed_dim=e, mlp=[m] * d, keep=keep[:d]) for d in space.depth.choices
            for e in space.embed_dim.choices[-3:] for m in space.mlp.choices[::3] for keep in tokens]
    rng.shuffle(grid)
    before = len(scores)
    for cfg in grid:
        if len(scores) - before >= args.grid:
            break
        consider(cfg)
    for _ in range(args.rounds):
        best = sorted(scores.values(), key=lambda t: -t[0])[:5]
        for _, cfg in best:
            for _ in range(6):
                consider(mutate(space, cfg, rng))
    # the most accurate first, measured in groups (each interleaved with the base model) until one fits
    ranked = sorted(scores.values(), key=lambda t: -t[0])
    measured_ok, tried = [], []
    for start_at in range(0, min(len(ranked), args.measure * 4), args.measure):
        group = ranked[start_at:start_at + args.measure]
        measured = prep.meter.measure_many({f"c{i}": sn.extract(c).eval() for i, (_, c) in enumerate(group)})
        for i, (acc, cfg) in enumerate(group):
            ratio = measured[f"c{i}"].ratio
            tried.append((acc, ratio))
            if ratio <= args.ratio:
                measured_ok.append((acc, cfg, ratio))
        if measured_ok:
            break
    rows.append((f"configs evaluated under {args.slack:.1f} × {args.ratio:.0%} of base (predicted)",
                 f"{len(scores)} in {time.perf_counter() - start:.0f} s; measured {len(tried)}: " +
                 ", ".join(f"{a:.1%} at {r:.2f}×" for a, r in tried)))
    if measured_ok:
        acc, cfg, ratio = max(measured_ok, key=lambda t: t[0])
        rows.append((f"best config measured within {args.ratio:.0%} of base latency",
                     f"val top-1 {acc:.1%} ({(acc - base_val) * 100:+.1f} pts vs base), measured "
                     f"{ratio:.2f}× base; {cfg.to_dict()}"))
    else:
        rows.append((f"best config within {args.ratio:.0%} of base", "none of those measured is within budget"))

    # --- ranking fidelity ----------------------------------------------------------------------------
    from torch.utils.data import DataLoader

    if not args.subnets:
        return _print(rows)
    start = time.perf_counter()
    loader = DataLoader(workload.splits["train"], batch_size=64, shuffle=True)
    sample = [space.sample(rng) for _ in range(args.subnets)]
    shared = [evaluate_accuracy(sn, val, c) for c in sample]
    tuned = [evaluate_accuracy(finetune(sn.extract(c), workload.model, loader, args.finetune_steps), val)
             for c in sample]
    tau = kendall_tau(shared, tuned)
    rows.append((f"Kendall τ, shared vs fine-tuned ({args.finetune_steps} steps) val top-1, "
                 f"{args.subnets} random subnets", f"{tau:.2f} ({time.perf_counter() - start:.0f} s)"))
    rows.append(("  shared-weight val top-1", ", ".join(f"{v:.0%}" for v in shared)))
    rows.append(("  after fine-tune", ", ".join(f"{v:.0%}" for v in tuned)))
    _print(rows)


def _print(rows) -> None:
    print("\n| figure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
