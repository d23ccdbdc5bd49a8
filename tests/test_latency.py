"""Measured latency: structure and sanity only (no timing thresholds: the machine is noisy)."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from evaluators.latency import (
    Latency,
    measure_latency,
    measure_latency_interleaved,
    resolve_device,
)
from evaluators.runtimes import RUNTIMES, get_runtime

FAST = dict(warmup=2, repeats=5)


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
    lat = measure_latency(tiny_vit(), (1, 32, 32), threads=1, **FAST)
    assert isinstance(lat, Latency)
    assert 0 < lat.p10_ms <= lat.median_ms <= lat.p90_ms
    assert lat.spread_ms == pytest.approx(lat.p90_ms - lat.p10_ms)
    assert (lat.runtime, lat.device, lat.batch_size, lat.threads, lat.dtype, lat.repeats) == (
        "torch-eager", "cpu", 1, 1, "float32", 5,
    )
    assert "torch-eager" in str(lat) and str(lat).endswith("cpu, batch 1, 1 thread, float32)")


def test_threads_pinned_during_call_and_restored_after():
    before = torch.get_num_threads()
    pinned = 1 if before > 1 else 2
    probe = Probe()
    lat = measure_latency(probe, (4,), threads=pinned, **FAST)
    assert torch.get_num_threads() == before
    assert lat.threads == pinned
    assert {threads for threads, _, _ in probe.seen} == {pinned}


def test_eval_and_inference_mode_during_call_training_flags_restored_after():
    vit = tiny_vit().train()
    vit.blocks[0].eval()  # a deliberately mixed state must come back exactly
    before = [m.training for m in vit.modules()]
    probe = Probe().train()
    measure_latency(vit, (1, 32, 32), **FAST)
    measure_latency(probe, (4,), **FAST)
    assert [m.training for m in vit.modules()] == before
    assert probe.training
    assert all(inference and not training for _, inference, training in probe.seen)


def test_batch_size_is_prepended():
    shapes = []
    probe = Probe()
    probe.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    lat = measure_latency(probe, (4,), batch_size=3, **FAST)
    assert lat.batch_size == 3 and set(shapes) == {(3, 4)}


def test_interleaved_one_latency_per_name_round_robin_rotated():
    log: list[str] = []
    models = {name: Probe(name, log) for name in "abc"}
    result = measure_latency_interleaved(models, (4,), warmup=1, repeats=6)
    assert set(result) == {"a", "b", "c"}
    assert all(isinstance(lat, Latency) and lat.repeats == 6 for lat in result.values())
    rounds = [log[i : i + 3] for i in range(3, len(log), 3)]  # skip the warm-up round
    assert len(rounds) == 6 and all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert len({r[0] for r in rounds}) == 3  # every model gets to go first


def test_unknown_runtime_lists_valid_names():
    with pytest.raises(ValueError, match="valid runtimes") as err:
        get_runtime("tensorrt-nope")
    assert "torch-eager" in str(err.value) and "onnxruntime" in str(err.value)
    with pytest.raises(ValueError, match="onnxruntime"):
        measure_latency(Probe(), (4,), runtime="nope", **FAST)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_request_without_gpu_is_one_clear_error():
    msg = "CUDA was requested but torch.cuda.is_available() is False on this machine; use --device cpu"
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ValueError) as err:
            resolve_device(name)
        assert str(err.value) == msg
    with pytest.raises(ValueError, match="--device cpu"):
        measure_latency(Probe(), (4,), device="cuda", **FAST)
    assert resolve_device("auto") == torch.device("cpu")


def test_bad_device_name():
    with pytest.raises(ValueError, match="cpu, cuda, cuda:N or auto"):
        resolve_device("gpu0")


def test_onnxruntime_latency_names_its_runtime():
    lat = measure_latency(tiny_vit(), (1, 32, 32), runtime="onnxruntime", threads=2, **FAST)
    assert lat.runtime == "onnxruntime" and "onnxruntime" in str(lat)
    assert 0 < lat.p10_ms <= lat.median_ms <= lat.p90_ms


def test_onnxruntime_refuses_cuda():
    with pytest.raises(ValueError, match="CPU only"):
        get_runtime("onnxruntime").prepare(Probe(), torch.zeros(1, 4), torch.device("cuda"), 1)


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
@pytest.mark.parametrize(
    "make, shape", [(tiny_vit, (1, 1, 32, 32)), (TopkGather, (2, 10, 8))], ids=["vit", "topk"]
)
def test_runtime_contract_output_matches_eager(runtime, make, shape):
    """Every runtime computes the model's own output (shared contract test for backends)."""
    torch.manual_seed(0)
    model, example = make().eval(), torch.randn(shape)
    with torch.no_grad():
        expected = model(example)
    out = get_runtime(runtime).prepare(model, example, torch.device("cpu"), 1)()
    out = out[0] if isinstance(out, (list, tuple)) else out
    torch.testing.assert_close(torch.as_tensor(out), expected, rtol=1e-4, atol=1e-5)


def test_str_names_runtime_and_keeps_sub_ms_digits():
    lat = Latency(0.0712, 0.0651, 0.0803, 50, "onnxruntime", "cpu", 1, 2, "float32")
    assert str(lat) == "0.0712 ms (p10 0.0651, p90 0.0803; onnxruntime, cpu, batch 1, 2 threads, float32)"
    assert str(Latency(7.1, 6.9, 7.4, 50, "torch-eager", "cpu", 1, 2, "float32")).startswith(
        "7.10 ms (p10 6.90, p90 7.40; torch-eager"
    )
