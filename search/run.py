"""The jobs behind the CLI: prepare and report against a budget (the search comes next); train the supernet."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from evaluators import LatencyTable, evaluate_accuracy, measure_latency, resolve_device
from supernet import ConfigError, Supernet
from supernet.train import train_supernet

from .workload import cache_dir, load_config, load_workload


def prepare_and_report(config_path=None, budget_ms: float = 5.0, device="auto", batch_size: int = 1,
                       threads: int | None = None, out=None, log=print) -> dict:
    """Prepare (or load) the base model, its supernet and latency table; report the base against the budget."""
    dev = resolve_device(device)
    config = load_config(config_path)
    threads = threads or torch.get_num_threads()
    start = time.perf_counter()
    workload = load_workload(config, device=dev, log=log)
    sn = Supernet.from_timm(workload.model, bounds=config["space"]).eval()
    shape = workload.input_shape
    lat = config["latency"]
    log(f"latency table: {dev}, batch {batch_size}, {threads} threads, torch-eager (cached after the first run)")
    table = LatencyTable.cached(sn, cache_dir() / "lut", dev, batch_size, threads)
    base = measure_latency(workload.model, shape, dev, batch_size, threads, lat["warmup"], lat["repeats"])
    table.anchor(sn.space.largest(), base.median_ms)  # re-anchor: absorbs this machine's drift today
    smallest = table.predict(sn.space.smallest())
    measured = workload.metrics  # trained here: the figures were taken when the cache entry was written
    val = measured["val_top1"] if "val_top1" in measured else evaluate_accuracy(workload.model, workload.splits["val"])
    test = measured["test_top1"] if "test_top1" in measured else evaluate_accuracy(workload.model,
                                                                                   workload.splits["test"])
    report = {
        "config": config["name"], "model": config["model"]["name"], "checkpoint_hash": workload.checkpoint_hash,
        "device": str(dev), "batch_size": batch_size, "threads": threads, "budget_ms": budget_ms,
        "base_latency_ms": round(base.median_ms, 3), "base_latency": str(base),
        "smallest_subnet_predicted_ms": round(smallest, 3),
        "base_val_top1": val, "base_test_top1": test,
        "base_prep_seconds": workload.metrics.get("prep_seconds"),
        "seconds": round(time.perf_counter() - start, 1),
    }
    if budget_ms < smallest:
        raise ConfigError(f"budget {budget_ms} ms is below the smallest subnet's predicted latency "
                          f"{smallest:.2f} ms ({dev}, batch {batch_size}, torch-eager); use --budget-ms "
                          f"{smallest * 1.05:.2f} or more")
    out = Path(out) if out else Path("results") / config["name"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "base.json").write_text(json.dumps(report, indent=1))
    verdict = ("meets the budget already" if base.median_ms <= budget_ms else
               f"is {base.median_ms / budget_ms:.2f}× over the budget: subnets down to {smallest:.2f} ms exist")
    log(f"base model {config['model']['name']}: val top-1 {val:.1%}, test top-1 {test:.1%}")
    log(f"base latency {base}")
    log(f"budget {budget_ms} ms: the base model {verdict}")
    log(f"wrote {out / 'base.json'}")
    return report


def train_supernet_command(config_path=None, epochs: int | None = None, device="auto", out=None, log=print) -> dict:
    """Sandwich-train the workload's supernet; resumes from ``out/supernet.pt`` after an interruption."""
    from torch.utils.data import DataLoader

    dev = resolve_device(device)
    config = load_config(config_path)
    cfg = config["supernet"]
    epochs = cfg["epochs"] if epochs is None else epochs
    if epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {epochs}")
    workload = load_workload(config, device=dev, log=log)
    sn = Supernet.from_timm(workload.model, bounds=config["space"])
    out = Path(out) if out else Path("results") / config["name"] / "supernet"
    space, val = sn.space, workload.splits["val"]
    def val_top1() -> dict[str, float]:
        return {name: evaluate_accuracy(sn, val, c, dev) for name, c in
                (("largest", space.largest()), ("smallest", space.smallest()))}

    before = val_top1()
    # shuffles with torch's global generator, which train_supernet seeds per epoch (exact resume)
    loader = DataLoader(workload.splits["train"], batch_size=cfg["batch_size"], shuffle=True)
    history = train_supernet(sn, loader, epochs, cfg["lr"], n_random=cfg["n_random"], seed=cfg["seed"],
                             checkpoint=out / "supernet.pt", device=dev, log=log)
    after = val_top1()
    report = {"config": config["name"], "epochs": epochs, "checkpoint_hash": workload.checkpoint_hash,
              "val_top1_before": before, "val_top1_after": after, "history": history}
    (out / "train.json").write_text(json.dumps(report, indent=1))
    for name in before:
        log(f"{name} subnet, val top-1 on shared weights: {before[name]:.1%} -> {after[name]:.1%}")
    log(f"wrote {out / 'supernet.pt'} and {out / 'train.json'}")
    return report
