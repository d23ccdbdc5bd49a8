"""The jobs behind the CLI: prepare the workload, run (or load) the gradient phase, report against a budget."""
from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import supernet.gates
import supernet.phase
import supernet.train
from evaluators import LatencyTable, evaluate_accuracy, measure_latency, resolve_device
from supernet import ConfigError, Supernet
from supernet import distributed as ddp
from supernet.phase import gradient_phase, load_phase, proposals, resolve_methods

from .workload import Workload, _hash, cache_dir, load_config, load_workload


@dataclass
class Prepared:
    config: dict
    workload: Workload
    sn: Supernet
    table: LatencyTable
    device: torch.device
    batch_size: int
    threads: int


def prepare(config_path=None, device="auto", batch_size: int = 1, threads: int | None = None, log=print) -> Prepared:
    """The workload (base model trained and cached if need be), its supernet and latency table.

    Under torchrun, rank 0 prepares first (training and caching what is missing); the others then load it.
    """
    dev = resolve_device(device)
    config = load_config(config_path)
    threads = threads or torch.get_num_threads()
    if not ddp.is_main():
        ddp.barrier()
    workload = load_workload(config, device=dev, log=log)
    sn = Supernet.from_timm(workload.model, bounds=config["space"]).eval()
    log(f"latency table: {dev}, batch {batch_size}, {threads} threads, torch-eager (cached after the first run)")
    table = LatencyTable.cached(sn, cache_dir() / "lut", dev, batch_size, threads, progress=ddp.is_main())
    if ddp.is_main():
        ddp.barrier()
    return Prepared(config, workload, sn, table, dev, batch_size, threads)


def phase_dir(p: Prepared, methods: list[str]) -> Path:
    """Where the gradient phase of this config, base model, method set and code version is cached."""
    code = "".join(inspect.getsource(m) for m in (supernet.gates, supernet.phase, supernet.train,
                                                   *(inspect.getmodule(c) for c in supernet.gates.METHODS.values())))
    key = _hash({k: p.config[k] for k in ("space", "supernet")} | {"base": p.workload.checkpoint_hash,
                                                                    "methods": methods}, code)
    return cache_dir() / "supernet" / f"{p.config['name']}-{key}"


def ensure_supernet(p: Prepared, method: str | None = None, epochs: int | None = None, out=None,
                    log=print) -> dict:
    """Load the trained supernet for ``p`` from its folder, or run the gradient phase into it (resumable)."""
    from torch.utils.data import DataLoader

    cfg = p.config["supernet"]
    methods = resolve_methods(method or cfg["method"])
    epochs = cfg["epochs"] if epochs is None else epochs
    if epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {epochs}")
    out = Path(out) if out else phase_dir(p, methods)
    meta = {"config": p.config["name"], "base": p.workload.checkpoint_hash, "methods": methods, "epochs": epochs,
            "supernet": cfg, "space": p.config["space"]}
    done = out / "supernet.pt"
    if done.is_file():
        result = load_phase(p.sn, done, p.device, meta)
        log(f"supernet: cached {done} (token scorer {result['scorer']})")
        return result
    log(f"gradient phase: {', '.join(methods)}, then {epochs} sandwich epochs -> {out}")
    start = time.perf_counter()
    val = p.workload.splits["val"]
    # shuffles with torch's global generator, which the phase seeds per method and epoch (exact resume)
    loader = DataLoader(p.workload.splits["train"], batch_size=cfg["batch_size"], shuffle=True)
    result = gradient_phase(
        p.sn, loader, methods, p.table.unit_costs(p.sn.space), out, meta, epochs, cfg["lr"],
        n_random=cfg["n_random"], seed=cfg["seed"], device=p.device,
        evaluate=lambda c: evaluate_accuracy(p.sn, val, c, p.device), log=log)
    seconds = round(time.perf_counter() - start, 1)
    if ddp.is_main():
        report = phase_report(p, result, seconds)
        (out / "train.json").write_text(json.dumps(report, indent=1))
        log(f"gradient phase: {seconds:.0f} s; largest subnet val top-1 {report['largest_val_top1']:.1%}, "
            f"smallest {report['smallest_val_top1']:.1%}; {len(report['proposals'])} proposals")
        log(f"wrote {out / 'supernet.pt'} and {out / 'train.json'}")
    return result


def phase_report(p: Prepared, result: dict, seconds: float) -> dict:
    """Every proposal's val top-1 on shared weights and predicted latency, with the phase's logs."""
    sn, val, dev = p.sn, p.workload.splits["val"], p.device
    rows = []
    for name, configs in result["proposals"].items():
        for d in configs:
            cfg = type(sn.space.largest()).from_dict(d)
            rows.append({"method": name, "val_top1": evaluate_accuracy(sn, val, cfg, dev),
                         "predicted_ms": round(p.table.predict(cfg), 3), "config": d})
    return {"config": p.config["name"], "checkpoint_hash": p.workload.checkpoint_hash, "seconds": seconds,
            "meta": result["meta"], "scorer": result["scorer"], "scorer_val_top1": result["scorer_val_top1"],
            "largest_val_top1": evaluate_accuracy(sn, val, sn.space.largest(), dev),
            "smallest_val_top1": evaluate_accuracy(sn, val, sn.space.smallest(), dev),
            "method_logs": result["logs"], "sandwich_history": result["sandwich_history"], "proposals": rows}


def prepare_and_report(config_path=None, budget_ms: float = 5.0, device="auto", batch_size: int = 1,
                       threads: int | None = None, out=None, log=print) -> dict:
    """Prepare the base model, supernet (gradient phase, cached) and latency table; report against the budget."""
    start = time.perf_counter()
    p = prepare(config_path, device, batch_size, threads, log)
    config, workload, sn, table, dev = p.config, p.workload, p.sn, p.table, p.device
    lat = config["latency"]
    base = measure_latency(workload.model, workload.input_shape, dev, batch_size, p.threads, lat["warmup"],
                           lat["repeats"])
    table.anchor(sn.space.largest(), base.median_ms)  # re-anchor: absorbs this machine's drift today
    smallest = table.predict(sn.space.smallest())
    if budget_ms < smallest:
        raise ConfigError(f"budget {budget_ms} ms is below the smallest subnet's predicted latency "
                          f"{smallest:.2f} ms ({dev}, batch {batch_size}, torch-eager); use --budget-ms "
                          f"{smallest * 1.05:.2f} or more")
    result = ensure_supernet(p, log=log)
    table.scorer = sn.spec.scorer
    feasible = [c for c in proposals(result) if table.predict(c) <= budget_ms]
    measured = workload.metrics  # trained here: the figures were taken when the cache entry was written
    val = measured["val_top1"] if "val_top1" in measured else evaluate_accuracy(workload.model, workload.splits["val"])
    test = measured["test_top1"] if "test_top1" in measured else evaluate_accuracy(workload.model,
                                                                                   workload.splits["test"])
    report = {
        "config": config["name"], "model": config["model"]["name"], "checkpoint_hash": workload.checkpoint_hash,
        "device": str(dev), "batch_size": batch_size, "threads": p.threads, "budget_ms": budget_ms,
        "base_latency_ms": round(base.median_ms, 3), "base_latency": str(base),
        "smallest_subnet_predicted_ms": round(smallest, 3),
        "base_val_top1": val, "base_test_top1": test,
        "base_prep_seconds": workload.metrics.get("prep_seconds"),
        "proposals_within_budget": len(feasible), "token_scorer": result["scorer"],
        "seconds": round(time.perf_counter() - start, 1),
    }
    out = Path(out) if out else Path("results") / config["name"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "base.json").write_text(json.dumps(report, indent=1))
    verdict = ("meets the budget already" if base.median_ms <= budget_ms else
               f"is {base.median_ms / budget_ms:.2f}× over the budget: subnets down to {smallest:.2f} ms exist")
    log(f"base model {config['model']['name']}: val top-1 {val:.1%}, test top-1 {test:.1%}")
    log(f"base latency {base}")
    log(f"budget {budget_ms} ms: the base model {verdict}; {len(feasible)} gate proposals are predicted "
        "within it")
    log(f"wrote {out / 'base.json'}")
    return report


def train_supernet_command(config_path=None, method: str | None = None, epochs: int | None = None,
                           device="auto", out=None, log=print) -> dict:
    """The gradient phase on its own (resumable; under torchrun, data-parallel)."""
    dev = resolve_device(device)
    if dev.type == "cuda" and ddp.world() > 1:
        dev = torch.device("cuda", ddp.rank() % torch.cuda.device_count())
    p = prepare(config_path, dev, log=log)
    return ensure_supernet(p, method, epochs, out, log=log)
