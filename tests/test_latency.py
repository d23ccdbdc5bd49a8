"""Measured latency: the setting, the runtimes' shared contract, block interleaving (no timing thresholds:
the machine is noisy)."""

from __future__ import annotations

import copy
import gc
import json

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from evaluators.latency import (
    Latency,
    LatencyMeter,
    LatencySetting,
    available_cores,
    measure_latency,
    measure_latency_interleaved,
    resolve_device,
)
from evaluators.runtimes import RUNTIMES, get_runtime
from evaluators.runtimes.timing import time_blocks
from supernet import ConfigError

FAST = dict(warmup=2, repeats=5, block=5)


def setting(**kw) -> LatencySetting:
    return LatencySetting.resolve("cpu", **{"threads": 1, **FAST, **kw})


def tiny_vit() -> VisionTransformer:
    return VisionTransformer(
        img_size=32, patch_size=8, in_chans=1, num_classes=10,
        embed_dim=48, depth=2, num_heads=3, mlp_ratio=2,
    )


class Probe(nn.Module):
    """Records, on every forward, the thread count, inference mode and training flag it saw."""

    def __init__(self, name: str = "", log: list[str] | None = None) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.name, self.log, self.seen = name, log, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(
            (torch.get_num_threads(), torch.is_inference_mode_enabled(), self.training)
        )
        if self.log is not None:
            self.log.append(self.name)
        return self.lin(x)


class TopkGather(nn.Module):
    """Token selection as the pruned subnets do it: keep the top-k tokens by a score."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        idx = y.norm(dim=-1).topk(3, dim=1).indices
        return torch.gather(y, 1, idx.unsqueeze(-1).expand(-1, -1, y.shape[-1]))


def test_latency_fields_and_order():
    lat = measure_latency(tiny_vit().eval(), (1, 32, 32), setting())
    assert isinstance(lat, Latency)
    assert 0 < lat.p10_ms <= lat.median_ms <= lat.p90_ms
    assert lat.spread_ms == pytest.approx(lat.p90_ms - lat.p10_ms)
    assert (lat.runtime, lat.device, lat.batch_size, lat.threads, lat.dtype, lat.repeats) == (
        "torch-eager", "cpu", 1, 1, "float32", 5,
    )
    assert lat.ratio is None  # nothing to compare with
    assert "torch-eager" in str(lat) and str(lat).endswith("cpu, batch 1, 1 thread, float32)")


def test_setting_resolves_defaults_and_refuses_bad_values():
    s = LatencySetting.resolve("cpu")
    assert (s.runtime, s.dtype, s.batch_size, s.threads) == ("torch-eager", "float32", 1, torch.get_num_threads())
    assert s.describe().startswith("torch-eager, cpu, float32, batch 1")
    assert set(s.identity()) == {"device", "runtime", "dtype", "batch_size", "threads"}
    cases = [({"runtime": "tensorrt-nope"}, "valid runtimes"), ({"dtype": "int4"}, "unknown dtype"),
             ({"batch_size": 0}, "batch size"), ({"repeats": 0}, "repeats"), ({"threads": 0}, "--threads"),
             ({"threads": available_cores() + 1}, "--threads"), ({"dtype": "float16"}, "--dtype float32"),
             ({"runtime": "onnxruntime", "dtype": "bfloat16"}, "--dtype float32")]
    for kw, words in cases:
        with pytest.raises(ConfigError, match=words):
            LatencySetting.resolve("cpu", **kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_only_runtime_on_cpu_is_one_clear_line():
    with pytest.raises(ConfigError, match="runtime cudagraph runs on cuda, not cpu; use --runtime torch-eager"):
        LatencySetting.resolve("cpu", "cudagraph")


def test_missing_package_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(ConfigError, match=r'pip install "vitnas\[openvino\]"'):
        LatencySetting.resolve("cpu", "openvino")


def test_threads_pinned_during_call_and_restored_after():
    before = torch.get_num_threads()
    pinned = 1 if before > 1 else 2
    if pinned > available_cores():
        pytest.skip("needs two cores")
    probe = Probe().eval()
    lat = measure_latency(probe, (4,), setting(threads=pinned))
    assert torch.get_num_threads() == before
    assert lat.threads == pinned
    assert {threads for threads, _, _ in probe.seen} == {pinned}


def test_measuring_never_changes_the_callers_model():
    vit = tiny_vit().train()
    vit.blocks[0].eval()  # a deliberately mixed state must stay exactly as it was
    before = [m.training for m in vit.modules()]
    measure_latency(vit, (1, 32, 32), setting())
    assert [m.training for m in vit.modules()] == before
    bf16 = tiny_vit().eval()
    measure_latency(bf16, (1, 32, 32), setting(dtype="bfloat16"))
    assert next(bf16.parameters()).dtype == torch.float32  # a copy was converted, not the caller's model


def test_eval_model_runs_in_inference_mode_in_place():
    probe = Probe().eval()
    measure_latency(probe, (4,), setting())
    assert probe.seen and all(inference and not training for _, inference, training in probe.seen)


def test_batch_size_is_prepended():
    shapes = []
    probe = Probe().eval()
    probe.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    lat = measure_latency(probe, (4,), setting(batch_size=3))
    assert lat.batch_size == 3 and set(shapes) == {(3, 4)}


def test_blocks_of_consecutive_calls_rotated_each_round():
    log: list[str] = []
    calls = {name: (lambda n=name: log.append(n)) for name in "abc"}
    times = time_blocks(calls, warmup=1, repeats=6, block=3)
    assert {n: len(t) for n, t in times.items()} == {"a": 6, "b": 6, "c": 6}
    body = log[3:]  # after one warm-up call each
    runs = [body[i:i + 4] for i in range(0, len(body), 4)]  # one untimed + 3 timed calls per block
    assert all(len(set(r)) == 1 for r in runs) and len(runs) == 6
    rounds = [[r[0] for r in runs[i:i + 3]] for i in range(0, 6, 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds) and rounds[0][0] != rounds[1][0]


def test_meter_gives_ratios_to_its_reference():
    big = tiny_vit().eval()
    meter = LatencyMeter(setting(repeats=10), (1, 32, 32), reference=big)
    assert meter.measure(big).ratio == pytest.approx(1.0, rel=0.5)  # the same model: a ratio near 1
    both = meter.measure_many({"a": big, "b": big})
    assert set(both) == {"a", "b"} and all(v.ratio > 0 for v in both.values())
    assert meter.reference_latency.ratio == 1.0
    # each model is timed in its own pass with the reference: many live sessions in one rotation (each
    # onnxruntime session spins its own threads) inflated every figure
    groups = []
    real = meter._time
    meter._time = lambda prepared: groups.append(sorted(prepared)) or real(prepared)
    meter.measure_many({"a": big, "b": big, "c": big})
    assert groups == [["\0reference", n] for n in "abc"]
    assert meter.reference_latency.repeats == 3 * meter.setting.repeats
    assert measure_latency_interleaved({"a": big, "b": big}, (1, 32, 32), setting())["a"].ratio is None


def test_bad_device_name():
    with pytest.raises(ValueError, match="cpu, cuda, cuda:N or auto"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_request_without_gpu_is_one_clear_error():
    msg = "CUDA was requested but torch.cuda.is_available() is False on this machine; use --device cpu"
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ValueError) as err:
            resolve_device(name)
        assert str(err.value) == msg
    assert resolve_device("auto") == torch.device("cpu")


CPU_RUNTIMES = sorted(n for n, r in RUNTIMES.items() if "cpu" in r.dtypes)


@pytest.mark.parametrize("runtime", CPU_RUNTIMES)
@pytest.mark.parametrize(
    "make, shape", [(tiny_vit, (1, 1, 32, 32)), (TopkGather, (2, 10, 8))], ids=["vit", "topk"]
)
def test_runtime_contract_output_matches_eager(runtime, make, shape, tmp_path):
    """Every runtime computes the model's own output (the shared contract of runtimes)."""
    torch.manual_seed(0)
    model, example = make().eval(), torch.randn(shape)
    with torch.no_grad():
        expected = model(example)
    backend = get_runtime(runtime)
    backend.check(torch.device("cpu"), "float32")
    out = backend.prepare(model, example, 1, tmp_path)()
    out = out[0] if isinstance(out, (list, tuple)) else out
    torch.testing.assert_close(torch.as_tensor(out), expected, rtol=1e-4, atol=1e-5)
    if backend.artefact:
        assert (tmp_path / backend.artefact).is_file()  # the file that ran is left where it was asked for


@pytest.mark.parametrize("runtime", [n for n in CPU_RUNTIMES if n != "compile"])
def test_every_cpu_runtime_measures_and_names_itself(runtime, tmp_path):
    lat = LatencyMeter(setting(runtime=runtime), (1, 32, 32), reference=tiny_vit().eval()).measure(
        tiny_vit().eval(), workdir=tmp_path)
    assert lat.runtime == runtime and runtime in str(lat) and lat.ratio > 0
    assert 0 < lat.p10_ms <= lat.median_ms <= lat.p90_ms and lat.setup_s >= 0
    artefact = get_runtime(runtime).artefact
    assert artefact is None or (tmp_path / artefact).is_file()


def test_openvino_times_in_a_child_process(monkeypatch, tmp_path):
    """OpenVINO's threads spin after use: it must never be loaded in the measuring process."""
    import subprocess

    from evaluators.runtimes import openvino

    seen = []
    real_run = subprocess.run
    monkeypatch.setattr(openvino.subprocess, "run", lambda *a, **k: seen.append(a[0]) or real_run(*a, **k))
    monkeypatch.setattr(openvino, "load_openvino", lambda *a: pytest.fail("loaded in the parent"))
    lat = measure_latency(tiny_vit().eval(), (1, 32, 32), setting(runtime="openvino"))
    assert lat.runtime == "openvino" and seen and seen[0][-1].endswith("ov_child.py")


def test_str_names_runtime_and_keeps_sub_ms_digits():
    lat = Latency(0.0712, 0.0651, 0.0803, 50, "onnxruntime", "cpu", 1, 2, "float32")
    assert str(lat) == "0.0712 ms (p10 0.0651, p90 0.0803; onnxruntime, cpu, batch 1, 2 threads, float32)"
    assert str(Latency(7.1, 6.9, 7.4, 50, "torch-eager", "cpu", 1, 2, "float32")).startswith(
        "7.10 ms (p10 6.90, p90 7.40; torch-eager"
    )
    assert json.loads(json.dumps(LatencySetting().identity()))["runtime"] == "torch-eager"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("runtime", ["cudagraph", "torch-eager", "compile"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_gpu_runtimes_match_eager(runtime, dtype, tmp_path):
    model = tiny_vit().eval().cuda()
    x = torch.randn(2, 1, 32, 32, device="cuda")
    with torch.no_grad():
        expected = model(x).float()
    s = LatencySetting.resolve("cuda", runtime, dtype)
    half = model.to(s.torch_dtype)
    out = get_runtime(runtime).prepare(half, x.to(s.torch_dtype), 1, tmp_path)()
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)
    # the runtime keeps what it needs alive: a model prepared from a copy that is then dropped, its memory
    # handed back to the driver, still replays correctly
    replay = get_runtime(runtime).prepare(copy.deepcopy(half), x.to(s.torch_dtype), 1, tmp_path)
    gc.collect()
    torch.cuda.empty_cache()
    filler = torch.randn(64, 1024, 1024, device="cuda")  # reuses freed memory
    torch.testing.assert_close(replay().float(), expected, rtol=2e-2, atol=2e-2)
    del filler
    lat = LatencyMeter(s, (1, 32, 32), reference=tiny_vit().eval()).measure(tiny_vit().eval())
    assert lat.runtime == runtime and lat.dtype == dtype and lat.ratio > 0
