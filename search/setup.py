"""Setup shared by every command: the workload, its supernet, the measurement setting and the latency table
(``prepare``), and the trained supernet (``ensure_supernet``: the gradient phase, run once and cached)."""
from __future__ import annotations

import copy
import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import supernet.gates
import supernet.importance
import supernet.phase
import supernet.structure
import supernet.train
from evaluators import Latency, LatencyMeter, LatencySetting, LatencyTable, evaluate_accuracy
from supernet import ConfigError, SubnetConfig, Supernet
from supernet import distributed as ddp
from supernet.phase import estimate_seconds, gradient_phase, load_phase, resolve_methods
from supernet.storage import UNREADABLE
from supernet.train import duration

from .cache import cache_dir, cache_key
from .config import load_config
from .workload import Workload, load_workload


@dataclass
class Prepared:
    config: dict
    workload: Workload
    sn: Supernet
    setting: LatencySetting      # the one measurement setting of this command: every latency is taken in it
    meter: LatencyMeter          # times subnets interleaved with the base model (prepared once)
    table: LatencyTable
    base_latency: Latency        # the base model measured at the start of this command; the table is anchored on it
    config_path: str | None = None  # the workload config file (None: the bundled one)

    @property
    def device(self) -> torch.device:
        return self.setting.torch_device


def base_recipe(config: dict) -> str:
    """What decides the base model (architecture, data, training recipe): a subnet found on one base model
    cannot be retrained from another."""
    return cache_key({k: config[k] for k in ("model", "data", "train")})


def workload_provenance(p: Prepared) -> dict:
    """Which workload a subnet file came from: ``check_workload`` refuses to retrain it on another."""
    return {"config_path": p.config_path, "base_recipe": base_recipe(p.config),
            "base_checkpoint_hash": p.workload.checkpoint_hash}


def check_workload(provenance: dict, config_path, source) -> str | None:
    """The workload config to use for a subnet file with ``provenance``: the one given, if it trains the same
    base model, else the one the file names. Checked before any training."""
    config_path = config_path or provenance.get("config_path")
    if "base_recipe" in provenance and base_recipe(load_config(config_path)) != provenance["base_recipe"]:
        raise ConfigError(f"{source} was found on the base model of "
                          f"{provenance.get('config_path') or 'the bundled config'}, and "
                          f"{config_path or 'the bundled config'} trains another; pass "
                          f"--config {provenance.get('config_path') or 'configs/default.yaml'}, or leave --config out")
    return config_path


def latency_setting(config: dict, device="auto", runtime=None, dtype=None, batch_size=None, threads=None
                    ) -> LatencySetting:
    """The config's ``latency:`` section with the command line's values over it (None: not given)."""
    given = {"runtime": runtime, "dtype": dtype, "batch_size": batch_size, "threads": threads}
    return LatencySetting.resolve(device, **(config["latency"] | {k: v for k, v in given.items() if v is not None}))


def prepare(config_path=None, device="auto", runtime=None, dtype=None, batch_size=None, threads=None,
            log=print) -> Prepared:
    """The workload (base model trained and cached if need be), its supernet, the measurement setting and the
    latency table calibrated for it. Every value is checked before any work starts.

    Under torchrun, rank 0 prepares first (training and caching what is missing); the others then load it.
    """
    config = load_config(config_path)
    setting = latency_setting(config, device, runtime, dtype, batch_size, threads)
    if not ddp.is_main():
        ddp.barrier()
    workload = load_workload(config, device=setting.torch_device, log=log)
    # the supernet trains and reorders a copy: workload.model stays the base model (the teacher, the reference)
    sn = Supernet.from_timm(copy.deepcopy(workload.model), bounds=config["space"]).eval().to(setting.torch_device)
    meter = LatencyMeter(setting, workload.input_shape, reference=workload.model)
    log(f"latency: {setting.describe()} (table calibrated on first use, then cached)")
    table = LatencyTable.cached(sn, setting, cache_dir() / "lut", meter=meter, progress=ddp.is_main())
    base = meter.measure_reference()
    table.anchor(base.median_ms)  # predictions are ratios to the base model as it runs today
    if ddp.is_main():
        ddp.barrier()
    return Prepared(config, workload, sn, setting, meter, table, base,
                    str(Path(config_path).resolve()) if config_path else None)


def phase_meta(p: Prepared, methods: list[str], epochs: int | None = None) -> dict:
    """What a phase is trained for; its cache folder is keyed on it and a saved phase is checked against it."""
    cfg = p.config["supernet"]
    # the space as resolved, not the config's overrides (new default bounds sample other subnets), and a
    # measurement setting (NViT's and SPViT's latency terms come from the table)
    return {"config": p.config["name"], "base": p.workload.checkpoint_hash, "methods": methods,
            "epochs": cfg["epochs"] if epochs is None else epochs, "supernet": cfg, "space": repr(p.sn.space),
            "latency": p.setting.identity()}


def phase_dir(p: Prepared, methods: list[str], epochs: int | None = None) -> Path:
    """Where the gradient phase of this config, base model, method set, epochs and code version is cached."""
    code = (supernet.gates, supernet.phase, supernet.train, supernet.importance, supernet.structure,
            *(inspect.getmodule(c) for c in supernet.gates.METHODS.values()))
    return cache_dir() / "supernet" / f"{p.config['name']}-{cache_key(phase_meta(p, methods, epochs), *code)}"


def ensure_supernet(p: Prepared, method: str | None = None, epochs: int | None = None, out=None,
                    log=print) -> dict:
    """Load the trained supernet for ``p`` from its folder, or run the gradient phase into it (resumable)."""
    from torch.utils.data import DataLoader

    cfg = p.config["supernet"]
    methods = resolve_methods(method or cfg["method"])
    epochs = cfg["epochs"] if epochs is None else epochs
    if epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {epochs}")
    out = Path(out) if out else phase_dir(p, methods, epochs)
    meta = phase_meta(p, methods, epochs)
    done = out / "supernet.pt"
    if done.is_file():
        try:
            result = load_phase(p.sn, done, p.device, meta)
        except UNREADABLE as e:  # (a ConfigError, a file of another config, is not healed: it is refused)
            log(f"{done} is unreadable ({type(e).__name__}); the gradient phase finishes again from its saved state")
            done.unlink()
        else:
            log(f"supernet: cached {done} (token scorer {result['scorer']})")
            use_scorer_table(p, log)
            return result
    val = p.workload.splits["val"]
    # shuffles with torch's global generator, which the phase seeds per method and epoch (exact resume)
    loader = DataLoader(p.workload.splits["train"], batch_size=cfg["batch_size"], shuffle=True)
    costs = p.table.unit_costs(p.sn.space)
    if (out / "phase.pt").is_file():  # a resumed phase has done part of it: no estimate
        ahead = ""
    else:
        seconds = estimate_seconds(p.sn, loader, methods, costs, epochs, cfg["n_random"], p.device)
        ahead = f", {duration(seconds)} (a few steps timed here)"
    log(f"gradient phase: {', '.join(methods)}, then {epochs} sandwich epochs -> {out}{ahead}")
    start = time.perf_counter()
    result = gradient_phase(
        p.sn, loader, methods, costs, out, meta, epochs, cfg["lr"],
        n_random=cfg["n_random"], seed=cfg["seed"], device=p.device,
        evaluate=lambda c: evaluate_accuracy(p.sn, val, c, p.device), log=log)
    use_scorer_table(p, log)
    seconds = round(time.perf_counter() - start, 1)
    if ddp.is_main():
        report = phase_report(p, result, seconds)
        (out / "train.json").write_text(json.dumps(report, indent=1))
        log(f"gradient phase: {seconds:.0f} s; largest subnet val top-1 {report['largest_val_top1']:.1%}, "
            f"smallest {report['smallest_val_top1']:.1%}; {len(report['proposals'])} proposals")
        log(f"wrote {out / 'supernet.pt'} and {out / 'train.json'}")
    return result


def phase_report(p: Prepared, result: dict, seconds: float) -> dict:
    """The phase's logs, the largest and smallest subnets' val top-1 on shared weights, and every proposal's
    predicted latency. Proposals are not scored on val here: a search runs them as its first trials and scores
    those within its budget (scoring all 24 here took 2 min of a cold run)."""
    sn, val, dev = p.sn, p.workload.splits["val"], p.device
    largest, smallest = (evaluate_accuracy(sn, val, cfg, dev) for cfg in (sn.space.largest(), sn.space.smallest()))
    rows = [{"method": name, "predicted_ms": round(p.table.predict(SubnetConfig.from_dict(d)), 3), "config": d}
            for name, configs in result["proposals"].items() for d in configs]
    return {"config": p.config["name"], "checkpoint_hash": p.workload.checkpoint_hash, "seconds": seconds,
            "meta": result["meta"], "scorer": result["scorer"], "scorer_val_top1": result["scorer_val_top1"],
            "largest_val_top1": largest, "smallest_val_top1": smallest,
            "method_logs": result["logs"], "sandwich_history": result["sandwich_history"], "proposals": rows}


def use_scorer_table(p: Prepared, log=print) -> None:
    """After the phase chose a token scorer: the table calibrated for subnets that drop tokens with it."""
    if p.table.key["model"]["scorer"] != p.sn.spec.scorer:
        log(f"latency: token scorer {p.sn.spec.scorer} (table calibrated on first use, then cached)")
        anchor = p.table.base_ms
        p.table = LatencyTable.cached(p.sn, p.setting, cache_dir() / "lut", meter=p.meter, progress=ddp.is_main())
        p.table.anchor(anchor)
