"""The gradient phase: methods, ordering, sandwich training, scorer choice; resumable; data-parallel."""
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from conftest import ROOT, micro_vit
from supernet import ConfigError, Supernet
from supernet.phase import estimate_seconds, gradient_phase, load_phase, proposals
from test_gates import COSTS


def _loader():
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 1, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g))
    return DataLoader(data, batch_size=32, shuffle=True)


def _phase(out, log=lambda *_: None, evaluate=None, methods=("vtp", "dynamicvit")):
    sn = Supernet.from_timm(micro_vit())
    result = gradient_phase(sn, _loader(), list(methods), COSTS, out, {"test": 1}, epochs=1, evaluate=evaluate,
                            log=log)
    return sn, result


def test_phase_saves_weights_proposals_and_the_chosen_scorer(tmp_path):
    # an evaluator that prefers one scorer, to see the choice is made from its numbers
    def evaluate(cfg):
        return 1.0 if sn_holder[0].spec.scorer == "dynamicvit" else 0.5

    sn_holder = []
    sn = Supernet.from_timm(micro_vit())
    sn_holder.append(sn)
    result = gradient_phase(sn, _loader(), ["vtp", "dynamicvit"], COSTS, tmp_path, {"test": 1}, epochs=1,
                            evaluate=evaluate, log=lambda *_: None)
    assert result["scorer"] == "dynamicvit" and sn.spec.scorer == "dynamicvit"
    assert set(result["proposals"]) == {"vtp", "dynamicvit"}
    assert set(result["importance"]["vtp"]) == {"embed"}
    assert len(result["sandwich_history"]) == 1
    fresh = Supernet.from_timm(micro_vit(seed=5))
    loaded = load_phase(fresh, tmp_path / "supernet.pt", meta={"test": 1})
    assert fresh.spec.scorer == "dynamicvit" and len(proposals(loaded)) >= 4
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        for cfg in proposals(loaded):
            assert torch.allclose(fresh(x, cfg), sn(x, cfg), atol=1e-6)
    with pytest.raises(ConfigError, match="another config"):
        load_phase(fresh, tmp_path / "supernet.pt", meta={"test": 2})


def test_interrupted_phase_resumes_to_the_same_result(tmp_path):
    straight, _ = _phase(tmp_path / "a")

    def interrupt(line):
        if line.startswith("vtp:"):
            raise KeyboardInterrupt  # Ctrl-C right after the first method finished and was saved

    with pytest.raises(KeyboardInterrupt):
        _phase(tmp_path / "b", log=interrupt)
    lines = []
    resumed, _ = _phase(tmp_path / "b", log=lines.append)
    assert any("resuming" in line and "vtp" in line for line in lines)
    assert not any(line.startswith("vtp:") for line in lines)  # vtp did not run again
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_two_processes_equal_one_on_the_same_global_batch(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    worker = str(ROOT / "tests" / "ddp_worker.py")
    single = subprocess.run([sys.executable, worker, str(tmp_path / "one.pt")], env=env, capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             worker, str(tmp_path / "two.pt")], env=env, capture_output=True, text=True,
                            timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert one["world"] == 1 and two["world"] == 2
    moved = 0
    for k in one["start"]:
        assert torch.allclose(one["end"][k], two["end"][k], atol=1e-5), k
        moved += not torch.equal(one["start"][k], one["end"][k])
    assert moved > 10  # the comparison covers trained weights, not untouched ones


def test_the_phase_estimate_leaves_weights_gradients_and_random_state_as_they_were():
    sn = Supernet.from_timm(micro_vit())
    before = {k: v.clone() for k, v in sn.state_dict().items()}
    torch.manual_seed(5)
    state = torch.get_rng_state()
    seconds = estimate_seconds(sn, _loader(), ["vtp", "dynamicvit"], COSTS, epochs=2)
    assert seconds > 0 and torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, before[k]) for k, v in sn.state_dict().items())
    assert all(p.grad is None for p in sn.parameters())


def test_the_cached_phase_follows_the_space_as_resolved(cache, monkeypatch):
    """New default bounds in a new version sample other subnets: the phase trained on the old ones is not loaded."""
    from dataclasses import replace

    from search.setup import phase_dir, prepare
    from supernet.space import IntAxis

    monkeypatch.setenv("VITNAS_CACHE", str(cache))
    p = prepare(ROOT / "configs" / "tiny.yaml", "cpu", threads=1, log=lambda *_: None)
    before = phase_dir(p, ["vtp"])
    assert phase_dir(p, ["vtp"]) == before
    mlp = p.sn.space.mlp
    p.sn.space = replace(p.sn.space, mlp=IntAxis(mlp.min + mlp.step, mlp.max, mlp.step))  # the config unchanged
    assert phase_dir(p, ["vtp"]) != before


def test_a_phase_of_other_epochs_gets_a_folder_of_its_own(cache, monkeypatch):
    """`train-supernet --epochs N` without --out must not take the folder `search run` later reads and refuses."""
    from search.setup import phase_dir, phase_meta, prepare

    monkeypatch.setenv("VITNAS_CACHE", str(cache))
    p = prepare(ROOT / "configs" / "tiny.yaml", "cpu", threads=1, log=lambda *_: None)
    default = p.config["supernet"]["epochs"]
    assert phase_dir(p, ["vtp"], default) == phase_dir(p, ["vtp"])
    assert phase_dir(p, ["vtp"], default + 1) != phase_dir(p, ["vtp"])
    assert phase_meta(p, ["vtp"])["space"] == repr(p.sn.space)  # what the folder is keyed on is what a load checks
