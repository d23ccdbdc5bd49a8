"""Finishing winners on the tiny workload: retrain (CLI and `run --retrain-top`), redistribution, and an
export that runs in a fresh process without vitnas."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from conftest import ROOT, micro_vit, synthetic_table
from search import load_results
from search.redistribute import redistribute, scaled, trend
from supernet import Supernet, SubnetConfig, build_subnet
from supernet.subnet import ModelSpec
from test_cli import error_line, run_cli

RUN = ("run", "--config", "configs/tiny.yaml", "--device", "cpu", "--threads", "1")


@pytest.fixture(scope="module")
def searched(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("finish") / "res"
    result = run_cli(*RUN, "--budget-ms", "50", "--trials", "8", "--retrain-top", "1", "--out", str(out),
                     cache=cache)
    assert result.returncode == 0, result.stderr
    return out


def test_run_retrains_the_top_configs(searched):
    front = pd.read_csv(searched / "pareto.csv")
    done = front["retrained_test_top1"].dropna()
    assert len(done) == 1 and 0 <= done.iloc[0] <= 1
    trial = int(front.loc[done.index[0], "number"])
    metrics = json.loads((searched / f"retrain-trial{trial}" / "metrics.json").read_text())
    assert metrics["test_top1"] == done.iloc[0]


def test_retrain_command_reports_before_and_after_and_saves_a_loadable_model(cache, searched, tmp_path):
    trial = int(load_results(searched).pareto["number"].iloc[-1])
    result = run_cli("retrain", str(searched), "--trial", str(trial), "--epochs", "1", "--out", str(tmp_path),
                     cache=cache)
    assert result.returncode == 0, result.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert {"val_top1_before", "test_top1_before", "val_top1", "test_top1", "latency_ms"} <= set(m)
    assert m["settings"]["epochs"] == 1 and m["latency_ms"] > 0 and "torch-eager" in m["latency"]
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    model = build_subnet(ModelSpec.from_dict(json.loads(meta["spec"])), SubnetConfig.from_dict(json.loads(meta["config"])))
    model.load_state_dict(state)  # the file alone rebuilds the model
    assert SubnetConfig.from_yaml(tmp_path / "subnet.yaml") == load_results(searched).config(trial)
    assert "pass --trial" in error_line(run_cli("retrain", str(searched), cache=cache))
    assert "neither a subnet YAML" in error_line(run_cli("retrain", str(tmp_path / "nope.yaml"), cache=cache))


def test_export_runs_in_onnxruntime_without_vitnas(cache, searched, tmp_path, monkeypatch):
    r = load_results(searched)
    trial = int(r.pareto["number"].iloc[-1])
    result = run_cli("export", str(searched), "--trial", str(trial), "--to", str(tmp_path), cache=cache)
    assert result.returncode == 0, result.stderr
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "x.npy", x.numpy())
    script = ("import sys, numpy as np, onnxruntime as ort\n"
              f"s = ort.InferenceSession(r'{tmp_path / 'model.onnx'}')\n"
              f"y = s.run(None, {{s.get_inputs()[0].name: np.load(r'{tmp_path / 'x.npy'}')}})[0]\n"
              "assert not any(m.split('.')[0] in ('supernet', 'search', 'evaluators') for m in sys.modules)\n"
              f"np.save(r'{tmp_path / 'y.npy'}', y)\n")
    fresh = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    monkeypatch.setenv("VITNAS_CACHE", str(cache))
    from search.run import ensure_supernet, prepare
    p = prepare(ROOT / "configs" / "tiny.yaml", "cpu", threads=1, log=lambda *_: None)  # the search's setting
    ensure_supernet(p, log=lambda *_: None)
    with torch.no_grad():
        expected = p.sn(x, r.config(trial)).numpy()
    assert np.allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-4)


def test_redistribution_smooths_and_meets_the_predicted_budget():
    sn = Supernet.from_timm(micro_vit()).eval()
    table = synthetic_table(sn)
    cfg = SubnetConfig(48, 4, [1, 3, 1, 3], [64, 192, 64, 192], ["msa"] * 4, [1.0, 1.0, 0.75, 0.5])
    assert np.allclose(trend([1.0, 2.0, 3.0]), [1, 2, 3])
    budget = table.predict(cfg)
    new = redistribute(sn.space, table, cfg, budget)
    sn.space.validate(new)
    assert 0.85 * budget <= table.predict(new) <= budget  # rescaled to spend (nearly) the whole budget
    assert new.heads != cfg.heads or new.mlp != cfg.mlp  # the zig-zag shape was smoothed
    assert all(a <= b for a, b in zip(scaled(sn.space, cfg, 0.5).mlp, new.mlp))  # one factor scales it all


def test_redistribute_command_compares_both_after_retraining(cache, searched, tmp_path):
    best = searched / "best.yaml"
    result = run_cli("redistribute", str(best), "--config", "configs/tiny.yaml", "--epochs", "1", "--device",
                     "cpu", "--out", str(tmp_path), cache=cache)
    assert result.returncode == 0, result.stderr
    c = json.loads((tmp_path / "comparison.json").read_text())
    for name in ("original", "redistributed"):
        assert (tmp_path / f"{name}.yaml").is_file() and 0 <= c[name]["test_top1"] <= 1 and c[name]["latency_ms"] > 0
    assert c["redistributed"]["predicted_ms"] <= c["budget_ms"] + 1e-9
