import copy
import gc

import pytest
import timm
import torch
from timm.layers import SwiGLU

from conftest import micro_vit
from supernet.scorers import SCORERS
from supernet import ConfigError, Supernet, SubnetConfig, SubnetViT, UnsupportedModel

ATOL = 1e-5  # float32 round-off for logits of this size


def axis_extremes(space) -> list[SubnetConfig]:
    """Each axis alone at its lower extreme, everything else largest."""
    big, d = space.largest(), space.depth.max
    out = [space.largest(), space.smallest()]
    out.append(SubnetConfig(space.embed_dim.min, d, big.heads, big.mlp, big.ops, big.keep))
    out.append(SubnetConfig(big.embed_dim, space.depth.min, *(x[:space.depth.min]
                                                             for x in (big.heads, big.mlp, big.ops, big.keep))))
    out.append(SubnetConfig(big.embed_dim, d, [space.heads.min] * d, big.mlp, big.ops, big.keep))
    out.append(SubnetConfig(big.embed_dim, d, big.heads, [space.mlp.min] * d, big.ops, big.keep))
    out.append(SubnetConfig(big.embed_dim, d, big.heads, big.mlp, big.ops, big.keep, qk=[space.qk.min] * d))
    out.append(SubnetConfig(big.embed_dim, d, big.heads, big.mlp, big.ops, big.keep, v=[space.v.min] * d))
    out.append(SubnetConfig(big.embed_dim, d, big.heads, big.mlp, ["conv"] * d, big.keep))
    out.append(SubnetConfig(big.embed_dim, d, big.heads, big.mlp, big.ops, [space.keep.min] * d))
    # tokens dropped after conv blocks only (scorer has no attention to read), then again after MSA
    out.append(SubnetConfig(big.embed_dim, d, big.heads, big.mlp, ["conv", "msa", "msa", "msa"],
                            [1.0, 0.5, 0.5, 0.25]))
    return out


def test_largest_subnet_is_the_timm_model(sn):
    x = torch.randn(8, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(sn(x, sn.space.largest()), sn.vit(x))
        assert torch.allclose(sn.extract(sn.space.largest())(x), sn.vit(x), atol=ATOL, rtol=0)


def test_supernet_and_extracted_agree_on_60_configs(sn, rng):
    x = torch.randn(6, 1, 32, 32)
    cfgs = axis_extremes(sn.space) + [sn.space.sample(rng) for _ in range(51)]
    assert len(cfgs) >= 60
    with torch.no_grad():
        for cfg in cfgs:
            shared, extracted = sn(x, cfg), sn.extract(cfg)(x)
            assert shared.shape == (6, 10)
            assert torch.allclose(shared, extracted, atol=ATOL, rtol=0), cfg


def test_subnets_differ_from_each_other(sn, rng):
    """Guards against the agreement test passing trivially (e.g. both ignoring the config)."""
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        outs = [sn(x, c) for c in axis_extremes(sn.space)]
    for a in range(len(outs)):
        for b in range(a + 1, len(outs)):
            assert not torch.allclose(outs[a], outs[b])


def test_weights_are_shared_not_copied():
    vit = micro_vit()
    sn = Supernet.from_timm(vit).eval()
    assert sn.vit is vit
    x = torch.randn(2, 1, 32, 32)
    cfg = sn.space.smallest()
    with torch.no_grad():
        before = sn(x, cfg)
        vit.blocks[0].mlp.fc1.weight[0].add_(1.0)  # inside the smallest subnet's slice
        assert not torch.allclose(sn(x, cfg), before)


def test_extracted_model_is_standalone(sn, rng):
    cfg = sn.space.sample(rng)
    model = sn.extract(cfg)
    assert isinstance(model, SubnetViT)
    assert not any(isinstance(m, Supernet) for m in model.modules())
    shared = {p.data_ptr() for p in sn.parameters()}
    assert not any(p.data_ptr() in shared for p in model.parameters())
    assert not any(isinstance(r, Supernet) for r in gc.get_referents(model))
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        before = model(x)
        for p in sn.parameters():
            p.add_(1.0)
        assert torch.equal(model(x), before)
    # physically smaller
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in sn.vit.parameters())


def test_gradients_outside_the_slice_are_exactly_zero(sn):
    space = sn.space
    cfg = SubnetConfig(embed_dim=32, depth=3, heads=[2, 1, 3], mlp=[64, 96, 128], ops=["msa", "conv", "msa"],
                       keep=[1.0, 1.0, 0.5])
    sn.train()
    sn.zero_grad()
    sn(torch.randn(4, 1, 32, 32), cfg).square().sum().backward()
    vit, e, hd = sn.vit, cfg.embed_dim, sn.spec.head_dim
    assert vit.patch_embed.proj.weight.grad[:e].abs().sum() > 0
    assert torch.all(vit.patch_embed.proj.weight.grad[e:] == 0)
    assert torch.all(vit.pos_embed.grad[..., e:] == 0) and torch.all(vit.cls_token.grad[..., e:] == 0)
    for i in range(space.depth.max):
        blk = vit.blocks[i]
        if i >= cfg.depth:  # blocks past the subnet's depth get nothing at all
            assert all(p.grad is None or torch.all(p.grad == 0) for p in blk.parameters())
            continue
        qkv = blk.attn.qkv.weight.grad.view(3, 3, hd, -1)
        h, m = cfg.heads[i], cfg.mlp[i]
        assert torch.all(qkv[:, h:] == 0) and torch.all(qkv[..., e:] == 0)
        if cfg.ops[i] == "conv":  # the conv uses only the value projection
            assert torch.all(qkv[:2] == 0) and qkv[2, :h, :, :e].abs().sum() > 0
            assert torch.all(sn.conv_offsets.grad[i, h:] == 0) and sn.conv_offsets.grad[i, :h].abs().sum() > 0
        else:
            assert qkv[:, :h, :, :e].abs().sum() > 0
        assert torch.all(blk.mlp.fc1.weight.grad[m:] == 0) and torch.all(blk.mlp.fc1.weight.grad[:, e:] == 0)
        assert torch.all(blk.mlp.fc2.weight.grad[:, m:] == 0) and torch.all(blk.mlp.fc2.weight.grad[e:] == 0)
        assert torch.all(blk.attn.proj.weight.grad[:, h * hd:] == 0)
        assert torch.all(blk.norm1.weight.grad[e:] == 0)
    # the exit head for depth 3 was trained, the final head (depth 4) was not
    exit3 = sn.exits["3"]
    assert exit3["head"].weight.grad[:, :e].abs().sum() > 0 and torch.all(exit3["head"].weight.grad[:, e:] == 0)
    assert vit.head.weight.grad is None or torch.all(vit.head.weight.grad == 0)


def test_exit_heads_start_as_the_final_head(sn):
    assert sorted(sn.exits, key=int) == ["1", "2", "3"]
    for ex in sn.exits.values():
        assert torch.equal(ex["head"].weight, sn.vit.head.weight) and ex["head"].weight is not sn.vit.head.weight
        assert torch.equal(ex["norm"].weight, sn.vit.norm.weight)


@pytest.mark.parametrize("scorer", sorted(SCORERS))
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_exported_conv_and_token_dropping_give_the_supernets_logits(sn, runtime, scorer, tmp_path):
    """The ONNX file an ONNX runtime times (conv block, per-image top-k + gather) computes sn(x, cfg)."""
    from evaluators.runtimes import get_runtime

    sn.use_scorer(scorer)
    cfg = SubnetConfig(embed_dim=32, depth=3, heads=[2, 1, 3], mlp=[64, 96, 128], ops=["conv", "msa", "msa"],
                       keep=[1.0, 0.75, 0.5], qk=[16, 8, 8], v=[8, 16, 8])
    x = torch.randn(2, 1, 32, 32)  # two images: each keeps its own tokens
    with torch.no_grad():
        expected = sn(x, cfg)
    out = get_runtime(runtime).prepare(sn.extract(cfg).eval(), x, 1, tmp_path)()
    out = out[0] if isinstance(out, (list, tuple)) else out
    assert torch.allclose(torch.as_tensor(out), expected, atol=1e-4, rtol=0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's (export_onnx hides it)
@pytest.mark.parametrize("exporter", ["_torchscript", "_dynamo"])
def test_each_onnx_exporter_gives_the_supernets_logits_on_other_inputs(sn, exporter, tmp_path):
    """A trace bakes in whatever Python computes from the example, so the file is run on images it was not
    exported with: the top-k and gather of a token drop must be graph operations, per image."""
    import onnxruntime as ort

    from evaluators import runtimes

    cfg = SubnetConfig(embed_dim=32, depth=3, heads=[2, 1, 3], mlp=[64, 96, 128], ops=["conv", "msa", "msa"],
                       keep=[1.0, 0.75, 0.5], qk=[16, 8, 8], v=[8, 16, 8])
    getattr(runtimes, exporter)(sn.extract(cfg).eval(), torch.zeros(1, 1, 32, 32), str(tmp_path / "m.onnx"))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for seed in (1, 2):
        x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = sn(x, cfg)
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert torch.allclose(torch.as_tensor(out), expected, atol=1e-4, rtol=0)


def test_an_onnx_export_takes_the_next_exporter_when_one_fails_or_exports_another_function(monkeypatch,
                                                                                            tmp_path):
    from evaluators import runtimes

    def gone(model, example, path):
        raise TypeError("export() got an unexpected keyword argument 'dynamo'")  # as once torch drops it

    def baked(model, example, path):  # what a trace of data-dependent Python gives: the example's output, fixed
        runtimes._dynamo(_Constant(model(example).detach()), example, path)

    model, x = torch.nn.Linear(4, 2).eval(), torch.randn(1, 4)
    monkeypatch.setattr(runtimes, "ONNX_EXPORTERS", (gone, baked, runtimes._torchscript))
    path = runtimes.export_onnx(model, x, tmp_path / "m.onnx")
    assert runtimes._run_onnx(path, x + 1).shape == (1, 2)
    assert torch.allclose(torch.as_tensor(runtimes._run_onnx(path, x + 1)), model(x + 1), atol=1e-5)
    monkeypatch.setattr(runtimes, "ONNX_EXPORTERS", (gone, baked))
    with pytest.raises(ConfigError, match=r"gone: TypeError: .*; baked: its file's output differs .*"
                                          r"--runtime torch-eager"):
        runtimes.export_onnx(model, x, tmp_path / "n.onnx")


class _Constant(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.register_buffer("value", value)

    def forward(self, x):
        return self.value + 0 * x.sum()


@pytest.mark.parametrize("kwargs", [dict(qkv_bias=False), dict(init_values=0.1), dict(qk_norm=True),
                                    dict(act_layer="gelu_tanh")])
def test_supported_variants_are_exact(kwargs, rng):
    vit = micro_vit(**kwargs)
    sn = Supernet.from_timm(vit).eval()
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(sn(x), vit(x), atol=ATOL, rtol=0)
        for _ in range(5):
            cfg = sn.space.sample(rng)
            assert torch.allclose(sn(x, cfg), sn.extract(cfg)(x), atol=ATOL, rtol=0)
    # the structure declares every parameter once (supernet.structure): an undeclared one would be neither cut
    # nor permuted with its axis
    declared = {name.split("#")[0] for name in sn.shared}
    assert declared == {name for name, _ in sn.named_parameters()}


# The shapes people fine-tune now, each built by timm's own create_model at test size, random weights:
# (timm model name, its keyword arguments)
MICRO = dict(img_size=32, patch_size=8, in_chans=1, num_classes=10, embed_dim=48, depth=4, num_heads=3)
FAMILIES = {
    # registers, no_embed_class, LayerScale and a packed SwiGLU MLP (timm's GluMlp): DINOv2 with registers
    "DINOv2-reg (registers, packed SwiGLU)": ("vit_giant_patch14_reg4_dinov2", MICRO),
    "registers, GELU MLP": ("vitnas_micro", dict(reg_tokens=4, no_embed_class=True)),
    "SwiGLU with split projections (EVA-style)": ("vitnas_micro", dict(mlp_layer=SwiGLU, act_layer="silu")),
    "average pooling, no class token (*_gap)": ("vitnas_micro", dict(class_token=False, global_pool="avg")),
    "average pooling with a class token and a register": ("vitnas_micro", dict(global_pool="avg", reg_tokens=1)),
    "distilled (DeiT)": ("deit_tiny_distilled_patch16_224", MICRO),
}


# one instance of each newly supported idea (registers + packed SwiGLU, no class token, distillation, split SwiGLU):
# the costlier tests run on these
CORE_FAMILIES = ["DINOv2-reg (registers, packed SwiGLU)", "average pooling, no class token (*_gap)",
                 "distilled (DeiT)", "SwiGLU with split projections (EVA-style)"]


def family_vit(family: str) -> torch.nn.Module:
    name, kwargs = FAMILIES[family]
    return micro_vit(name=name, **kwargs)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_newer_timm_families_are_exact(family, rng):
    """Prefix tokens (class, distillation, registers) are never dropped, the heads pool as timm's do, and the
    class-attention scorer falls back to the attention each patch receives where there is no class token."""
    vit = family_vit(family)
    sn = Supernet.from_timm(vit).eval()
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(sn(x), vit(x), atol=ATOL, rtol=0)
        for cfg in axis_extremes(sn.space) + [sn.space.sample(rng) for _ in range(20)]:
            assert torch.allclose(sn(x, cfg), sn.extract(cfg)(x), atol=ATOL, rtol=0), cfg
    assert {name.split("#")[0] for name in sn.shared} == {name for name, _ in sn.named_parameters()}


@pytest.mark.parametrize("exporter", ["_torchscript", "_dynamo"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_newer_timm_families_export_to_onnx_exactly(family, exporter, tmp_path, monkeypatch):
    """A conv block, then a token drop (the scorer falls back: no attention yet), in the ONNX file timed; by
    each exporter alone (the faster one must serve every family, the other is the fallback)."""
    from evaluators import runtimes
    from evaluators.runtimes import get_runtime

    monkeypatch.setattr(runtimes, "ONNX_EXPORTERS", (getattr(runtimes, exporter),))
    sn = Supernet.from_timm(family_vit(family)).eval()
    cfg = SubnetConfig(embed_dim=32, depth=3, heads=[2, 1, 3], mlp=[64, 96, 128], ops=["conv", "msa", "msa"],
                       keep=[1.0, 0.75, 0.5], qk=[16, 8, 8], v=[8, 16, 8])
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        expected = sn(x, cfg)
    out = get_runtime("onnxruntime").prepare(sn.extract(cfg).eval(), x, 1, tmp_path)()
    out = out[0] if isinstance(out, (list, tuple)) else out
    assert torch.allclose(torch.as_tensor(out), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(global_pool="map"), "attention pooling"),
    (dict(global_pool="max"), "global_pool='max' is not supported"),
    (dict(pos_embed="none"), "absolute position embedding"),
    (dict(dynamic_img_size=True), "absolute position embedding"),
    (dict(num_classes=0), "no linear classifier head"),
])
def test_unsupported_variants_are_refused_clearly(kwargs, message):
    with pytest.raises(UnsupportedModel, match=message):
        Supernet.from_timm(timm.create_model("vitnas_micro", **kwargs))


def test_non_vit_is_refused():
    with pytest.raises(UnsupportedModel, match="not a timm VisionTransformer"):
        Supernet.from_timm(torch.nn.Linear(2, 2))


def test_deepcopy_and_state_dict(sn):
    clone = copy.deepcopy(sn)
    x = torch.randn(2, 1, 32, 32)
    cfg = sn.space.smallest()
    with torch.no_grad():
        assert torch.equal(clone(x, cfg), sn(x, cfg))
    assert "conv_offsets" in sn.state_dict() and "exits.1.head.weight" in sn.state_dict()
