"""NViT's third step, parameter redistribution: fit smooth trends across depth to a config's kept heads,
head widths, MLP units and token keep ratios, scale them by one factor so the latency table predicts the budget
(bisection), then retrain both configs and compare them at equal measured latency."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from supernet import ConfigError, SubnetConfig
from supernet.gates import snap, snap_keep

from .retrain import resolve_target, retrain
from .setup import ensure_supernet, prepare


def trend(values: list[float], degree: int = 2) -> np.ndarray:
    """A low-degree polynomial fit across block index: the config's own shape, smoothed."""
    x = np.arange(len(values))
    if len(values) <= 1:
        return np.asarray(values, dtype=float)
    return np.polyval(np.polyfit(x, values, min(degree, len(values) - 1)), x)


def scaled(space, cfg: SubnetConfig, factor: float) -> SubnetConfig:
    qk, v = cfg.head_widths(space.qk.max)
    widths = {axis: [snap(getattr(space, axis), min(getattr(space, axis).max, w * factor)) for w in trend(values)]
              for axis, values in (("heads", cfg.heads), ("qk", qk), ("v", v), ("mlp", cfg.mlp))}
    # the *dropped* share of tokens shrinks as the factor grows (a config without drops never gains any)
    new_keep = np.minimum.accumulate(np.clip(1 - (1 - trend(cfg.keep)) / factor, 0, 1))  # dropped stay dropped
    out_keep = [snap_keep(space.keep, k) for k in new_keep]
    ops = [op if k >= 1.0 else "msa" for op, k in zip(cfg.ops, out_keep)]
    return space.validate(SubnetConfig(cfg.embed_dim, cfg.depth, ops=ops, keep=out_keep, **widths))


def redistribute(space, table, cfg: SubnetConfig, budget_ms: float, steps: int = 40) -> SubnetConfig:
    """The smoothed shape at the largest scale factor whose predicted latency is within ``budget_ms``."""
    lo, hi = 0.05, 8.0
    if table.predict(scaled(space, cfg, lo)) > budget_ms:
        raise ConfigError(f"even the smallest smoothed shape of this config is predicted over {budget_ms} ms")
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if table.predict(scaled(space, cfg, mid)) <= budget_ms else (lo, mid)
    return scaled(space, cfg, lo)


def redistribute_command(config_file: str, budget_ms: float | None = None, config_path=None, epochs=None,
                         latency: dict | None = None, out=None, log=print) -> dict:
    cfg, config_path, searched_in = resolve_target(config_file, None, config_path)
    p = prepare(config_path, log=log, **(searched_in | {k: v for k, v in (latency or {}).items() if v is not None}))
    ensure_supernet(p, log=log)
    space, table = p.sn.space, p.table
    space.validate(cfg)
    budget_ms = budget_ms or table.predict(cfg)
    new = redistribute(space, table, cfg, budget_ms)
    out = Path(out) if out else Path("results") / p.config["name"] / f"redistribute-{Path(config_file).stem}"
    out.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(out / "original.yaml")
    new.to_yaml(out / "redistributed.yaml")
    log(f"redistributed (predicted {table.predict(cfg):.2f} -> {table.predict(new):.2f} ms, budget {budget_ms:.2f})")
    results = {name: retrain(p, c, out / name, epochs, log) for name, c in (("original", cfg), ("redistributed", new))}
    models = {name: p.sn.extract(c).eval() for name, c in (("original", cfg), ("redistributed", new))}
    lat = p.meter.measure_many(models)
    comparison = {name: {"test_top1": r["test_top1"], "val_top1": r["val_top1"],
                         "latency_ms": lat[name].at(p.base_latency.median_ms), "ratio_to_base": lat[name].ratio,
                         "clock_ms": round(lat[name].median_ms, 4),
                         "predicted_ms": table.predict(c),
                         "config": c.to_dict()}
                  for (name, r), c in zip(results.items(), (cfg, new))}
    comparison["budget_ms"] = budget_ms
    comparison["latency"] = {k: str(v) for k, v in lat.items()}
    (out / "comparison.json").write_text(json.dumps(comparison, indent=1))
    o, r = comparison["original"], comparison["redistributed"]
    log(f"original: test {o['test_top1']:.1%} at {o['latency_ms']:.2f} ms; redistributed: test "
        f"{r['test_top1']:.1%} at {r['latency_ms']:.2f} ms ({p.setting.describe()}, interleaved with the base)")
    return comparison
