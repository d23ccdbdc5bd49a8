"""Does the search earn its compute? (issue 13) vitnas against uniform narrowing at equal total compute.

    python benchmarks/uniform.py [--config FILE] [--budgets 0.7,0.5,0.35] [--trials 100] [--out DIR] [--quick]
                                 [--uniform-epochs N]

vitnas: one gradient phase (paid once, serving every budget), then per budget ``search run`` (the product's
main job: a study, the winner retrained with the product's recipe and re-measured in a fresh process).
Uniform: the base model with every width narrowed by one factor — embedding, each head's query/key and
value widths, MLP; same depth, every head, every token — magnitude-pruned (L1 of the weights each unit
owns) to the largest such shape no slower than vitnas's shipped model, the two timed against each other in the
same blocks (a ratio to the base measured at another hour moves with the machine's load: 0.32 then 0.44 for one
small model, README), then fine-tuned with the same distillation recipe for
an equal share of vitnas's *total* compute (phase + every search + every retrain, over every budget
``vitnas.json`` holds, so a re-run of one budget's uniform side gets the same share), so both sides spend the
same. Uniform widths take a finer grid than the search space (embedding and MLP in steps of 4, head widths of
4) so it matches the latency closely.
Every row: latency ratio to the base (the two models and the base timed in the same blocks, one meter),
params, FLOPs, test top-1 before and after fine-tuning, and wall time of each phase; under each budget, the gap
image by image (``evaluators.paired_gap``: the images only one model gets right, a 90% bootstrap interval over
source digits). ``--quick`` fine-tunes the uniform side for one epoch: a check that the script runs end to
end (CI), not a comparison.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators import LatencyMeter, correct_per_image, count_cost, evaluate_accuracy, paired_gap  # noqa: E402
from evaluators.data import error_groups, make_loader  # noqa: E402
from evaluators.lut import hardware_name  # noqa: E402
from search.config import load_config  # noqa: E402
from search.export import load_subnet, save_subnet  # noqa: E402
from search.retrain import finetune  # noqa: E402
from search.run import search_command, widest_uniform  # noqa: E402
from search.setup import ensure_supernet, phase_dir, prepare  # noqa: E402
from supernet import Supernet, SubnetConfig  # noqa: E402
from supernet.importance import magnitude_importance, reorder  # noqa: E402
from supernet.phase import resolve_methods  # noqa: E402
from supernet.train import seconds_per_step  # noqa: E402

FINE = {"embed_dim": {"min": 4, "step": 4}, "mlp": {"min": 4, "step": 4}, "qk": {"min": 4, "step": 4},
        "v": {"min": 4, "step": 4}}


def widest_uniform_within(meter, pruned: Supernet, ratio: float) -> tuple[SubnetConfig, float | None]:
    """The widest uniform shape whose measured ratio to ``meter``'s reference is at most ``ratio`` and that ratio
    (the narrowest shape and None when none is), found as ``search run`` finds its uniform rival."""
    shapes, n, measured = widest_uniform(meter, pruned, ratio)
    return (shapes[n - 1], measured[n - 1]) if n else (pruned.space.uniform(0.0), None)


def cost(model, shape) -> dict:
    c = count_cost(model, shape)
    return {"params": c.params, "flops": c.flops}


def train_seconds_per_epoch(model, train_set, cfg: dict) -> float:
    """One fine-tuning epoch of ``model`` (a training step timed on a copy, times the steps)."""
    probe = copy.deepcopy(model).train()
    x, y = next(iter(make_loader(train_set, cfg["batch_size"], shuffle=False)))[:2]
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg["lr"])

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(probe(x), y).backward()
        opt.step()
    return seconds_per_step(step) * -(-len(train_set) // cfg["batch_size"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    ap.add_argument("--budgets", default="0.7,0.5,0.35", help="fractions of the base model's measured latency")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runtime", default="torch-eager")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="results/uniform")
    ap.add_argument("--quick", action="store_true", help="one epoch of uniform fine-tuning: runs, compares nothing")
    ap.add_argument("--uniform-epochs", type=int, default=None,
                    help="fine-tune the uniform side this many epochs instead of the equal-compute share (e.g. the "
                    "retrain's 3: architecture against architecture at equal fine-tuning)")
    args = ap.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    latency = {"device": args.device, "runtime": args.runtime, "threads": args.threads}
    out = Path(args.out)
    quiet = lambda *a: None  # noqa: E731

    p = prepare(args.config, log=quiet, **latency)
    start = time.perf_counter()
    ensure_supernet(p, log=print)
    methods = resolve_methods(p.config["supernet"]["method"])
    report = phase_dir(p, methods) / "train.json"
    phase_s = json.loads(report.read_text())["seconds"] if report.is_file() else time.perf_counter() - start
    base_ms = p.base_latency.median_ms
    print(f"== gradient phase: {phase_s:.0f} s (once, for every budget); base {base_ms:.2f} ms "
          f"({p.setting.describe()})", flush=True)

    # each budget's vitnas result is kept as it finishes, and a re-run reuses it (the uniform side alone is ~1 h)
    done = out / "vitnas.json"
    found = {float(r): f for r, f in json.loads(done.read_text()).items()} if done.is_file() else {}
    for r in budgets:
        if r in found:
            print(f"== vitnas at {r:g}×: measured before ({done})", flush=True)
            continue
        start = time.perf_counter()
        summary = search_command(args.config, latency=latency, trials=args.trials, retrain_top=1,
                                 out=out / f"vitnas-{r:g}", log=quiet, budget_ratio=r)
        shipped = summary.get("shipped")
        found[r] = {"seconds": time.perf_counter() - start, "shipped": shipped}
        out.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps(found, indent=1))
        print(f"== vitnas at {r:g}×: " + (f"test {shipped['test_top1_before']:.1%} -> {shipped['test_top1']:.1%}, "
              f"{shipped['ratio_to_base']:.2f}× the base in a fresh process" if shipped else "nothing shipped") +
              f"; search + retrain {found[r]['seconds']:.0f} s", flush=True)
    served = len(found)  # the phase served every budget vitnas.json holds
    vitnas_total = phase_s + sum(f["seconds"] for f in found.values())
    share = vitnas_total / served
    found = {r: found[r] for r in budgets}

    config = load_config(args.config)
    base = p.workload.model
    pruned = Supernet.from_timm(copy.deepcopy(base), bounds=FINE).eval()
    reorder(pruned, magnitude_importance(pruned))  # a structured-pruning library's L1 criterion
    train_set, settings = p.workload.splits["train"], dict(config["retrain"])
    test = p.workload.splits["test"]
    test_groups = error_groups(p.config["data"], "test", len(test))  # images that err together
    shape = (p.sn.spec.in_chans, *p.sn.spec.img_size)
    rows = []
    for r, f in found.items():
        shipped = f["shipped"]
        winner = load_subnet(out / f"vitnas-{r:g}" / "best" / "model.safetensors").eval() if shipped else None
        # no slower than vitnas's shipped model, timed against it (when it shipped nothing: the budget)
        meter = LatencyMeter(p.setting, p.workload.input_shape, reference=winner) if shipped else p.meter
        cfg, fitted = widest_uniform_within(meter, pruned, 1.0 if shipped else r)
        model = pruned.extract(cfg)
        before = evaluate_accuracy(model.eval(), test, device=p.device)
        settings["epochs"] = 1 if args.quick else 0 if fitted is None else args.uniform_epochs or max(
            1, int(share // train_seconds_per_epoch(model, train_set, settings)))
        start = time.perf_counter()
        if settings["epochs"]:  # (none where no uniform shape is as fast: fine-tuning the narrowest compares nothing)
            finetune(model, base, train_set, settings, p.device, desc=f"uniform {r:g}×", log=print)
        tuned_s = time.perf_counter() - start
        model.eval()
        models = {"uniform": model} | ({"vitnas": winner} if shipped else {})
        lat = p.meter.measure_many(models)  # the base timed in the same blocks as each
        right = {name: correct_per_image(m, test) for name, m in models.items()}
        row = {"budget": r, "uniform": {
            "ratio": lat["uniform"].ratio, **cost(model, shape), "test_before": before,
            "test_after": right["uniform"].sum().item() / len(test), "seconds": tuned_s, "epochs": settings["epochs"],
            "config": cfg.to_dict(), "fits": fitted is not None,  # False: no uniform shape that fast (widths at minimum)
            "matched": fitted},  # its measured ratio to what it was matched to: vitnas's model, else the base
            "vitnas": None}
        if shipped:
            row["vitnas"] = {"ratio": lat["vitnas"].ratio, **cost(winner, shape),
                             "test_before": shipped["test_top1_before"], "test_after": shipped["test_top1"],
                             "seconds": f["seconds"], "config": winner.cfg.to_dict()}
            # image by image on the same test split: can it tell the two apart at all?
            row["gap"] = paired_gap(right["vitnas"], right["uniform"], test_groups)
        rows.append(row)
        out.mkdir(parents=True, exist_ok=True)  # after every budget: a stopped run keeps what it measured
        save_subnet(model, out / f"uniform-{r:g}" / "model.safetensors")  # (to compare image by image again)
        (out / "uniform.json").write_text(json.dumps({"phase_seconds": phase_s, "vitnas_total_seconds": vitnas_total,
                                                     "rows": rows}, indent=1))
        print(f"== uniform at {r:g}×: test {row['uniform']['test_before']:.1%} -> {row['uniform']['test_after']:.1%}, "
              f"{row['uniform']['ratio']:.3f}× the base ({settings['epochs']} epochs, {tuned_s:.0f} s)", flush=True)
    print(f"\n{hardware_name(torch.device(args.device))}, torch {torch.__version__}, {datetime.date.today()}, "
          f"{p.setting.describe()}; base {base_ms:.2f} ms; vitnas total {vitnas_total / 60:.1f} min (phase "
          f"{phase_s / 60:.1f} min once + search and retrain for each of {served} budgets); uniform fine-tuned for "
          + (f"{args.uniform_epochs} epochs per budget (--uniform-epochs: equal fine-tuning, not equal compute)"
             if args.uniform_epochs else f"{share / 60:.1f} min per budget")
          + (" (--quick: one epoch instead; not a comparison)" if args.quick else "")
          + "\n")
    print("| budget | model | × base (interleaved) | params | MFLOPs | test top-1 before → after | wall time |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        for name in ("vitnas", "uniform"):
            m = row[name]
            if m is None:
                print(f"| {row['budget']:g}× | vitnas | nothing met the budget | | | | |")
                continue
            extra = f" ({m['epochs']} epochs)" if name == "uniform" else " (search + retrain)"
            if name == "uniform" and not m["fits"]:
                extra += "; **no uniform shape is this fast** (every width at its minimum, every block and token)"
            print(f"| {row['budget']:g}× | {name} | {m['ratio']:.3f} | {m['params'] / 1e6:.2f} M | "
                  f"{m['flops'] / 1e6:.1f} | {m['test_before']:.1%} → {m['test_after']:.1%} | "
                  f"{m['seconds'] / 60:.1f} min{extra} |")
        if row["vitnas"]:
            g = row["gap"]
            print(f"| | vitnas − uniform | | | | {g['gap']:+.1f} points ({g['only_a']} test images only vitnas's model "
                  f"gets right, {g['only_b']} only uniform's; 90% interval {g['interval_90'][0]:+.1f} to "
                  f"{g['interval_90'][1]:+.1f}, bootstrap over {g['groups']} groups) | |")
    print("\nTarget, vitnas ≥ 1 point of test top-1 above uniform at every budget: " + "; ".join(
        f"{row['budget']:g}× " + (f"{row['gap']['gap']:+.1f} ({'met' if row['gap']['gap'] >= 1 else 'missed'})"
                                  if row["vitnas"] else "vitnas shipped nothing") for row in rows))


if __name__ == "__main__":
    main()
