"""Finishing winners on the tiny workload: retrain (CLI and `run --retrain-top`), redistribution, and an
export that runs in a fresh process without vitnas."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors import safe_open

from conftest import ROOT, micro_vit, synthetic_table
from search import load_results
from search.redistribute import redistribute, scaled, trend
from supernet import Supernet, SubnetConfig, build_subnet
from supernet.subnet import ModelSpec
from test_cli import error_line, run_cli

RUN = ("run", "--config", "configs/tiny.yaml", "--device", "cpu", "--threads", "1")


def onnxruntime_without_vitnas(onnx_file, x: torch.Tensor, tmp_path) -> np.ndarray:
    """The file's outputs for each image of ``x``, computed in a process that imports nothing of vitnas."""
    np.save(tmp_path / "x.npy", x.numpy())
    script = ("import sys, numpy as np, onnxruntime as ort\n"
              f"s = ort.InferenceSession(r'{onnx_file}')\n"
              f"y = [s.run(None, {{s.get_inputs()[0].name: v[None]}})[0] for v in np.load(r'{tmp_path / 'x.npy'}')]\n"
              "assert not any(m.split('.')[0] in ('supernet', 'search', 'evaluators') for m in sys.modules)\n"
              f"np.save(r'{tmp_path / 'y.npy'}', np.concatenate(y))\n")
    fresh = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    return np.load(tmp_path / "y.npy")


@pytest.fixture(scope="module")
def searched(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("finish") / "res"
    result = run_cli(*RUN, "--budget-ms", "50", "--trials", "8", "--out", str(out), cache=cache)  # retrains by default
    assert result.returncode == 0, result.stderr
    (out / "stdout.txt").write_text(result.stdout)
    return out


def test_run_ships_the_retrained_winner_by_default(searched):
    front = pd.read_csv(searched / "pareto.csv")
    done = front["retrained_test_top1"].dropna()
    assert len(done) == 1 and 0 <= done.iloc[0] <= 1
    best = searched / "best"
    assert {p.name for p in best.iterdir()} >= {"model.safetensors", "model.onnx", "subnet.yaml", "metrics.json"}
    m = json.loads((best / "metrics.json").read_text())
    pick = int(front.loc[done.index[0], "number"])  # the search's pick, retrained; the uniform rival is off the front
    picked = json.loads((searched / f"retrain-trial{pick}" / "metrics.json").read_text())
    assert picked["test_top1"] == done.iloc[0]
    if m["uniform_narrowing"]:  # the rival ships only when it retrained better than the pick (a tie goes to the pick)
        assert m["trial"] != pick and m["val_top1"] > picked["val_top1"]
    else:
        assert m["trial"] == pick and m["test_top1"] == done.iloc[0]
    assert {"val_top1_before", "test_top1_before", "val_top1", "test_top1"} <= set(m)
    assert m["within_budget"] and m["latency_ms"] <= m["budget_ms"]
    # the figure held against the budget is the mean fresh ratio to the base, before and after retraining, x the
    # run's base latency (at 50 ms the winner may be the whole tiny model, so the ratio can sit either side of 1)
    runs = [r["ratio_to_base"] for r in m["fresh_runs"]]
    assert [r["when"] for r in m["fresh_runs"]] == ["before retraining", "after retraining"]
    assert m["ratio_to_base"] == pytest.approx(sum(runs) / 2, abs=1e-4)
    assert m["latency_ms"] == pytest.approx(m["ratio_to_base"] * m["base_latency_ms"], abs=2e-4)  # 4 decimals each
    assert m["ratio_to_base"] > 0 and "torch-eager" in m["latency"]
    assert m["teacher"] == "the base model" and {"val_top1", "test_top1"} <= set(m["base"])
    # summary.md and the last lines printed lead with base model vs shipped model
    summary = (searched / "summary.md").read_text()
    assert summary.index("| base model |") < summary.index("## Search")
    out = (searched / "stdout.txt").read_text()
    assert "| shipped, retrained |" in out[out.rindex("wrote "):]


def test_the_shipped_files_give_the_retrained_logits_without_the_search(cache, searched, tmp_path, monkeypatch):
    """model.safetensors rebuilds the retrained model alone; model.onnx gives its logits in onnxruntime in a
    process that imports nothing of vitnas; and it is the retrained model, not the shared-weight one."""
    from search.export import load_subnet

    best = searched / "best"
    model = load_subnet(best / "model.safetensors")
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x).numpy()
    assert np.allclose(onnxruntime_without_vitnas(best / "model.onnx", x, tmp_path), logits, atol=1e-4)
    monkeypatch.setenv("VITNAS_CACHE", str(cache))  # the search's base model and supernet
    from search.setup import ensure_supernet, prepare
    p = prepare(ROOT / "configs" / "tiny.yaml", "cpu", threads=1, log=lambda *_: None)
    ensure_supernet(p, log=lambda *_: None)
    m = json.loads((best / "metrics.json").read_text())
    from evaluators import evaluate_accuracy
    assert evaluate_accuracy(model, p.workload.splits["val"]) == pytest.approx(m["val_top1"])
    with torch.no_grad():
        shared = p.sn(x, model.cfg).numpy()
    assert not np.allclose(shared, logits, atol=1e-3)  # retrained: not the shared weights


def test_a_winner_over_budget_in_a_fresh_process_is_never_shipped_quietly(cache, searched, tmp_path, monkeypatch):
    import shutil

    import search.remeasure as remeasure_module
    import search.ship as ship_module
    from evaluators import Latency
    from search.setup import ensure_supernet, prepare

    monkeypatch.setenv("VITNAS_CACHE", str(cache))
    out = tmp_path / "res"
    shutil.copytree(searched, out)
    # two candidates, the most accurate measured trials (the search's own front may hold only one)
    trials = pd.read_csv(searched / "trials.csv").dropna(subset=["measured_ms"])
    front = trials.sort_values("val_top1", ascending=False).head(2)
    # the top one re-measured over the budget, but the mean of its two measurements is within it: ship tries it
    front = front.assign(remeasured_ms=[60.0, front["measured_ms"].iloc[1]])
    front["pooled_ms"] = (front["measured_ms"] + front["remeasured_ms"]) / 2
    assert front["pooled_ms"].iloc[0] <= 50, front
    front.to_csv(out / "pareto.csv", index=False)
    order = front["number"].tolist()
    assert len(order) == 2, trials
    p = prepare(ROOT / "configs" / "tiny.yaml", "cpu", threads=1, log=lambda *_: None)
    ensure_supernet(p, log=lambda *_: None)
    p.config["retrain"]["epochs"] = 1
    calls = []

    after_retraining = {"ms": 10.0}

    def remeasure(model_cfg, setting, shape, path, workdir):  # the top config lands over budget when re-measured
        calls.append(path.parent.name)
        retrained = path.parent.name.startswith("retrain-trial")
        ms = 80.0 if len(calls) == 1 or "always over" in calls else after_retraining["ms"] if retrained else 40.0
        lat = lambda v, r: Latency(v, v, v, 1, setting.runtime, setting.device, 1, 1, setting.dtype, ratio=r)  # noqa: E731
        base = p.base_latency.median_ms  # the fresh process reads the base as the run did: ratio = ms / base
        return lat(ms, ms / base), lat(base, 1.0)

    monkeypatch.setattr(remeasure_module, "remeasure_fresh", remeasure)
    monkeypatch.setattr(ship_module, "uniform_rival", lambda *a: None)  # the over-budget rule alone (rival: below)
    said = []
    shipped = ship_module.ship(p, out, 50, 1, log=said.append)
    # each measured fresh before its retrain: the top one, over, is not retrained; the next is, and again after
    assert calls[0].startswith(f"vitnas-before-retrain-trial{order[0]}-") and calls[1].startswith(
        f"vitnas-before-retrain-trial{order[1]}-") and calls[2:] == [f"retrain-trial{order[1]}"], calls
    assert any(s.startswith("!!") and f"trial {order[0]}" in s and "over the budget" in s and "not retrained" in s
               for s in said), said
    assert not any(s.startswith(f"retraining trial {order[0]}") for s in said), said
    assert shipped["trial"] == order[1] and json.loads((out / "best" / "metrics.json").read_text())["trial"] == order[1]
    # and when nothing meets the budget, nothing is shipped, loudly
    calls.append("always over")
    said.clear()
    assert ship_module.ship(p, out, 50, 1, log=said.append) is None
    assert any(s.startswith("!!") and "nothing shipped" in s for s in said), said
    assert not (out / "best").exists()  # no model from an earlier run is left looking shipped
    # within the budget before retraining (40 ms) and over it after: the mean of the two is what counts
    calls[:] = ["first"]
    after_retraining["ms"] = 70.0  # mean 55 ms: over the budget of 50, never shipped
    said.clear()
    assert ship_module.ship(p, out, 50, 1, log=said.append) is None
    assert sum(c.startswith("retrain-trial") for c in calls) == 2 and any("nothing shipped" in s for s in said)
    assert any(s.startswith("!!") and "40 ms before retraining and 70 ms after" in s for s in said), said
    calls[:] = ["first"]
    after_retraining["ms"] = 56.0  # a second fresh process just over the line: mean 48 ms, shipped at that
    shipped = ship_module.ship(p, out, 50, 1, log=said.append)
    assert shipped["trial"] == order[0] and shipped["latency_ms"] == pytest.approx(48.0, abs=1e-3)
    assert [r["latency_ms"] for r in shipped["fresh_runs"]] == pytest.approx([40.0, 56.0], abs=1e-3)


def test_the_best_uniform_narrowing_is_retrained_next_to_the_searchs_pick_and_the_better_ships(cache, searched,
                                                                                               monkeypatch):
    from search.setup import prepare
    from search.ship import uniform_rival

    monkeypatch.setenv("VITNAS_CACHE", str(cache))
    p = prepare(ROOT / "configs" / "tiny.yaml", "cpu", threads=1, log=lambda *_: None)
    r = load_results(searched)
    assert r.config(0).key() in {c.key() for c in p.sn.space.uniform_shapes()}  # queued first
    rival = uniform_rival(p, pd.read_csv(searched / "trials.csv"), 50)
    assert rival is not None and rival["measured_ms"] <= 50
    retrained = {m["trial"]: m for m in (json.loads(f.read_text()) for f in searched.glob("retrain-trial*/metrics.json"))}
    pick = int(r.pareto.sort_values("val_top1").iloc[-1]["number"])
    assert int(rival["number"]) in retrained  # as the search's pick, or next to it as its rival
    assert pick in retrained and (len(retrained) >= 2 or pick == int(rival["number"]))
    shipped = json.loads((searched / "best" / "metrics.json").read_text())
    fitting = [m for m in retrained.values() if m["within_budget"]]
    assert shipped["trial"] in {m["trial"] for m in fitting}  # the better of the two ships (a tie: the search's)
    assert shipped["val_top1"] == max(m["val_top1"] for m in fitting)


def test_retrain_command_reports_before_and_after_and_saves_a_loadable_model(cache, searched, tmp_path):
    trial = int(load_results(searched).pareto["number"].iloc[-1])
    result = run_cli("retrain", str(searched), "--trial", str(trial), "--epochs", "1", "--out", str(tmp_path),
                     cache=cache)
    assert result.returncode == 0, result.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert {"val_top1_before", "test_top1_before", "val_top1", "test_top1", "latency_ms"} <= set(m)
    assert m["settings"]["epochs"] == 1 and m["latency_ms"] > 0 and "torch-eager" in m["latency"]
    # the trial is the front's most accurate, which on the tiny model may time level with the base: no speed check
    # here (timings belong in benchmarks), only that the figure is the fresh ratio x the run's base latency
    assert m["measured_in"] == "a fresh process" and m["base_latency_ms"] > 0 and m["ratio_to_base"] > 0
    assert m["latency_ms"] == pytest.approx(m["ratio_to_base"] * m["base_latency_ms"], abs=1e-4)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    model = build_subnet(ModelSpec.from_dict(json.loads(meta["spec"])), SubnetConfig.from_dict(json.loads(meta["config"])))
    model.load_state_dict(state)  # the file alone rebuilds the model
    assert SubnetConfig.from_yaml(tmp_path / "subnet.yaml") == load_results(searched).config(trial)
    assert "pass --trial" in error_line(run_cli("retrain", str(searched), cache=cache))
    assert "neither a subnet YAML" in error_line(run_cli("retrain", str(tmp_path / "nope.yaml"), cache=cache))


def test_export_runs_in_onnxruntime_without_vitnas_with_the_weights_the_trial_has(cache, searched, tmp_path,
                                                                                  monkeypatch):
    r = load_results(searched)
    retrained = int(json.loads((searched / "best" / "metrics.json").read_text())["trial"])
    every = {int(f.name.removeprefix("retrain-trial")) for f in searched.glob("retrain-trial*")}  # and its rival
    done = r.trials[(r.trials["state"] == "COMPLETE") & ~r.trials["number"].isin(every)]
    shared = int(done["number"].iloc[0])  # a trial the run did not retrain
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    monkeypatch.setenv("VITNAS_CACHE", str(cache))
    from search.export import load_subnet
    from search.setup import ensure_supernet, prepare
    p = prepare(ROOT / "configs" / "tiny.yaml", "cpu", threads=1, log=lambda *_: None)  # the search's setting
    ensure_supernet(p, log=lambda *_: None)
    for trial, weights in ((retrained, "retrained"), (shared, "shared")):
        to = tmp_path / str(trial)
        result = run_cli("export", str(searched), "--trial", str(trial), "--to", str(to), cache=cache)
        assert result.returncode == 0, result.stderr
        y = onnxruntime_without_vitnas(to / "model.onnx", x, to)
        with torch.no_grad():
            expected = (load_subnet(searched / "best" / "model.safetensors")(x) if weights == "retrained" else
                        p.sn(x, r.config(trial))).numpy()
        assert np.allclose(y, expected, atol=1e-4), weights
        exported = yaml.safe_load((to / "subnet.yaml").read_text())
        assert exported["provenance"]["weights"].startswith(weights)
        assert ("retrained_test_top1" in exported["metrics"]) == (weights == "retrained")


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
