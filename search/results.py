"""A finished (or running) study as files and DataFrames: trials.csv, pareto.csv, best.yaml, pareto.png,
summary.md, and ``load_results`` to read them back."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from optuna.trial import FrozenTrial

from supernet import ConfigError, SubnetConfig
from supernet.config import LISTS

METRICS = ["val_top1", "measured_ms", "clock_ms", "ratio_to_base", "predicted_ms", "predicted_ratio", "skip_factor", "flops", "params"]


def trial_row(t: FrozenTrial) -> dict:
    """One row: number, state, the metrics, then one column per axis value (``heads_3``, ``keep_6``)."""
    a = t.user_attrs
    row = {"number": t.number, "state": t.state.name, "skipped": a.get("skipped", ""),
           **{m: a.get(m) for m in METRICS}, "feasible": a.get("constraint", float("inf")) <= 0,
           "runtime": a.get("runtime", ""), "dtype": a.get("dtype", "")}
    cfg = a.get("config")
    if cfg:
        row.update(embed_dim=cfg["embed_dim"], depth=cfg["depth"])
        for key in LISTS:
            for i, v in enumerate(cfg.get(key) or []):
                row[f"{key}_{i}"] = v
    return row


def trials_frame(trials: list[FrozenTrial]) -> pd.DataFrame:
    return pd.DataFrame([trial_row(t) for t in trials])


def pareto_front(df: pd.DataFrame) -> pd.DataFrame:
    """Feasible completed trials not beaten on both val top-1 and measured latency, fastest first."""
    done = df[(df["state"] == "COMPLETE") & df["feasible"]].sort_values(["measured_ms", "val_top1"],
                                                                          ascending=[True, False])
    keep, best = [], -1.0
    for i, row in done.iterrows():
        if row["val_top1"] > best:
            keep.append(i)
            best = row["val_top1"]
    return done.loc[keep].reset_index(drop=True)


def config_of(row: pd.Series) -> SubnetConfig:
    d = int(row["depth"])
    kinds = {"heads": int, "qk": int, "v": int, "mlp": int, "ops": str, "keep": float}
    return SubnetConfig.from_dict({"embed_dim": int(row["embed_dim"]), "depth": d, **{
        key: [kind(row[f"{key}_{i}"]) for i in range(d)] for key, kind in kinds.items()
        if f"{key}_0" in row and not pd.isna(row[f"{key}_0"])}})


@dataclass
class Results:
    path: Path
    trials: pd.DataFrame
    pareto: pd.DataFrame

    def config(self, number: int) -> SubnetConfig:
        rows = self.trials[self.trials["number"] == number]
        if rows.empty or pd.isna(rows.iloc[0].get("depth")):
            raise ConfigError(f"trial {number} has no config in {self.path}; trials with one: "
                              f"{self.trials.dropna(subset=['depth'])['number'].tolist()[:20]}")
        return config_of(rows.iloc[0])


def run_settings(path: str | Path) -> dict:
    """The settings a search ran with (config path, budget, device, …), from its ``run.json``; {} if absent."""
    run = Path(path) / "run.json"
    return json.loads(run.read_text())["settings"] if run.is_file() else {}


def load_results(path: str | Path) -> Results:
    """``Results`` with ``.trials`` and ``.pareto`` DataFrames from a search's output folder."""
    path = Path(path)
    if not (path / "trials.csv").is_file():
        raise ConfigError(f"{path} holds no search results (no trials.csv); run `python -m search run "
                          f"--out {path}` first")
    trials = pd.read_csv(path / "trials.csv")
    pareto = pd.read_csv(path / "pareto.csv") if (path / "pareto.csv").is_file() else pareto_front(trials)
    return Results(path, trials, pareto)


def plot_front(df: pd.DataFrame, front: pd.DataFrame, budget_ms: float, base: tuple[float, float], path: Path,
               latency: str) -> None:
    """The front on accuracy vs latency; ``latency`` names what the figures were measured in."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    done = df[df["state"] == "COMPLETE"]
    ax.scatter(done["measured_ms"], done["val_top1"] * 100, s=12, c="#bbbbbb", label="trials")
    ax.plot(front["measured_ms"], front["val_top1"] * 100, "o-", c="#1f77b4", label="Pareto front")
    ax.axvline(budget_ms, ls="--", c="#d62728", label=f"budget {budget_ms:g} ms")
    ax.scatter([base[0]], [base[1] * 100], marker="*", s=160, c="#2ca02c", label="base model", zorder=3)
    ax.set_xlabel(f"latency, ms ({latency}; measured ratio × the base model's)")
    ax.set_ylabel("val top-1, % (shared weights)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
