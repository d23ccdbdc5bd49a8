"""Gate methods and token scorers: one shared contract for each, plus the forward they all train through."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from conftest import micro_vit
from test_supernet import CORE_FAMILIES, FAMILIES, family_vit
from supernet import ConfigError, Supernet, SubnetConfig
from supernet.gates import METHODS, STAGES, UnitCosts, build_method, learn
from supernet.gates.forward import Masks, gated_forward, softmax_with_policy
from supernet.gates.patchslim import top_down_importance
from supernet.gates.wdpruning import binary_mask
from supernet.importance import reorder
from supernet.phase import combine, resolve_methods
from supernet.scorers import SCORERS

COSTS = UnitCosts(total=0.5, embed=1e-3, head=5e-3, qk=2e-4, v=2e-4, mlp=5e-5, block=0.1, conv_saving=0.01)


def _loader(n=64, batch=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(n, 1, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))
    return DataLoader(data, batch_size=batch, shuffle=True)


def _quiet(*_):
    pass


def _shallow(sn, d):
    return sn.space.largest().first(d)


def test_gated_forward_without_masks_is_the_supernet():
    sn = Supernet.from_timm(micro_vit(init_values=0.1, qk_norm=True)).eval()
    with torch.no_grad():
        sn.conv_offsets.add_(torch.randn_like(sn.conv_offsets))
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        trace = gated_forward(sn, x, exits=True)
        assert torch.allclose(trace.logits, sn(x), atol=1e-5)
        for d, logits in trace.exits.items():  # every exit head = the subnet of that depth
            assert torch.allclose(logits, sn(x, _shallow(sn, d)), atol=1e-5)
        conv = SubnetConfig(48, 4, [3] * 4, [192] * 4, ["conv"] * 4, [1.0] * 4)
        assert torch.allclose(gated_forward(sn, x, Masks(msa=torch.zeros(4))).logits, sn(x, conv), atol=1e-5)
        # zero masks on the units a subnet drops = that subnet (heads and MLP are exact prunes)
        heads, mlp = torch.ones(4, 3), torch.ones(4, 192)
        heads[:, 2:] = 0
        mlp[:, 64:] = 0
        small = SubnetConfig(48, 4, [2] * 4, [64] * 4, ["msa"] * 4, [1.0] * 4)
        assert torch.allclose(gated_forward(sn, x, Masks(heads=heads, mlp=mlp)).logits, sn(x, small), atol=1e-5)


def test_zero_channel_masks_are_the_narrower_heads():
    """Query/key and value channels of each head masked to 0 = the subnet with narrower heads, in MSA blocks
    and in SPViT's conv made of the same values."""
    sn = Supernet.from_timm(micro_vit()).eval()
    x = torch.randn(3, 1, 32, 32)
    qk, v = torch.ones(4, 3, 16), torch.ones(4, 3, 16)
    qk[:, :, 8:] = 0
    v[:2, :, 8:] = 0
    narrow = SubnetConfig(48, 4, [3] * 4, [192] * 4, ["msa"] * 4, [1.0] * 4, [8] * 4, [8, 8, 16, 16])
    with torch.no_grad():
        assert torch.allclose(gated_forward(sn, x, Masks(qk=qk, v=v)).logits, sn(x, narrow), atol=1e-5)
        conv = SubnetConfig(48, 4, [3] * 4, [192] * 4, ["conv"] * 4, [1.0] * 4, [16] * 4, [8, 8, 16, 16])
        assert torch.allclose(gated_forward(sn, x, Masks(v=v, msa=torch.zeros(4))).logits, sn(x, conv), atol=1e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gated_forward_reads_every_timm_family_as_the_supernet(family):
    sn = Supernet.from_timm(family_vit(family)).eval()
    x = torch.randn(3, 1, 32, 32)
    c = sn.space.largest()
    conv = SubnetConfig(c.embed_dim, c.depth, c.heads, c.mlp, ["conv"] * c.depth, c.keep)
    with torch.no_grad():
        trace = gated_forward(sn, x, exits=True)
        assert torch.allclose(trace.logits, sn(x), atol=1e-5)
        for d, logits in trace.exits.items():
            assert torch.allclose(logits, sn(x, _shallow(sn, d)), atol=1e-5)
        assert torch.allclose(gated_forward(sn, x, Masks(msa=torch.zeros(4))).logits, sn(x, conv), atol=1e-5)


@pytest.mark.parametrize("family", CORE_FAMILIES)
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_runs_on_every_timm_family(name, family):
    sn = Supernet.from_timm(family_vit(family)).eval()
    method = build_method(name, sn, COSTS)
    history = learn(sn, method, _loader(n=32), steps=2)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    x = torch.randn(2, 1, 32, 32)
    if method.stage == "tokens":
        sn.use_scorer(method.scorer)
    with torch.no_grad():
        for cfg in method.proposals(sn):
            assert torch.allclose(sn(x, sn.space.validate(cfg)), sn.extract(cfg)(x), atol=1e-5)


def test_dropped_tokens_get_no_attention():
    logits = torch.randn(2, 3, 5, 5)
    policy = torch.tensor([[1.0, 1, 0, 1, 0], [1, 0, 0, 0, 1]])
    attn = softmax_with_policy(logits, policy)
    assert torch.allclose(attn.sum(-1), torch.ones(2, 3, 5), atol=1e-5)
    for b in range(2):
        for j in (policy[b] == 0).nonzero().flatten():
            others = [i for i in range(5) if i != j]
            assert attn[b, :, others, j].max() < 1e-5  # no other token reads a dropped one


def test_taylor_importance_is_the_gradient_times_weight_of_the_group():
    sn = Supernet.from_timm(micro_vit()).eval()
    nvit = build_method("nvit", sn, COSTS)
    x, y = torch.randn(4, 1, 32, 32), torch.randint(0, 10, (4,))
    loss = torch.nn.functional.cross_entropy(gated_forward(sn, x, Masks(mlp=nvit.mlp)).logits, y)
    loss.backward()
    fc2 = sn.vit.blocks[1].mlp.fc2.weight
    for unit in (0, 17):
        assert torch.allclose(nvit.mlp.grad[1, unit], (fc2.grad[:, unit] * fc2[:, unit]).sum(), atol=1e-6)
    # a query channel: its row of qkv (weight and bias); a value channel: its column of proj
    sn.zero_grad()
    loss = torch.nn.functional.cross_entropy(gated_forward(sn, x, Masks(qk=nvit.qk, v=nvit.v)).logits, y)
    loss.backward()
    attn = sn.vit.blocks[2].attn
    for head, channel in ((0, 3), (2, 11)):
        row = head * 16 + channel
        taylor = (attn.qkv.weight.grad[row] * attn.qkv.weight[row]).sum() + attn.qkv.bias.grad[row] * attn.qkv.bias[row]
        assert torch.allclose(nvit.qk.grad[2, head, channel], taylor, atol=1e-6)
        column = (attn.proj.weight.grad[:, row] * attn.proj.weight[:, row]).sum()
        assert torch.allclose(nvit.v.grad[2, head, channel], column, atol=1e-6)


def test_binary_mask_is_binary_forward_and_differentiable():
    scores = torch.tensor([[0.1, 0.5, 0.9]], requires_grad=True)
    threshold = torch.tensor([0.4], requires_grad=True)
    mask, _ = binary_mask(scores, threshold)
    assert mask.tolist() == [[0.0, 1.0, 1.0]]
    mask.sum().backward()
    assert scores.grad.abs().sum() > 0 and threshold.grad.abs().sum() > 0


def test_top_down_importance_is_a_distribution_led_by_the_class_token():
    attn = [torch.softmax(torch.randn(2, 9, 9), -1) for _ in range(3)]
    imp = top_down_importance(attn, Supernet.from_timm(micro_vit()).spec)
    assert len(imp) == 3
    for s in imp:
        assert torch.allclose(s.sum(1), torch.ones(2), atol=1e-5)
    assert (imp[-1][:, 0] >= 0.5).all()  # the residual path keeps half the weight on the class token


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_learns_and_proposes_valid_configs(name):
    sn = Supernet.from_timm(micro_vit()).eval()
    method = build_method(name, sn, COSTS)
    trained = [p.detach().clone() for p in method.trainable(sn)]
    history = learn(sn, method, _loader(), steps=3)
    assert len(history) == 3 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert all(p.requires_grad for p in sn.parameters())  # the backbone is unfrozen again afterwards
    if trained:
        assert any(not torch.equal(a, b) for a, b in zip(trained, method.trainable(sn)))
    s = sn.spec
    shapes = {"embed": (s.embed_dim,), "heads": (s.depth, s.num_heads), "mlp": (s.depth, s.mlp_hidden),
              "qk": (s.depth, s.num_heads, s.head_dim), "v": (s.depth, s.num_heads, s.head_dim)}
    for axis, scores in method.importance().items():
        assert tuple(scores.shape) == shapes[axis]
    proposals = method.proposals(sn)
    assert proposals
    for cfg in proposals:
        sn.space.validate(cfg)
    if method.stage == "tokens":  # the method's scorer runs the proposals exactly as extracted
        sn.use_scorer(method.scorer)
        x = torch.randn(2, 1, 32, 32)
        with torch.no_grad():
            for cfg in proposals:
                assert torch.allclose(sn(x, cfg), sn.extract(cfg)(x), atol=1e-5)


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_every_scorer_is_cut_and_permuted_by_its_declaration(name):
    """A scorer's ``embed_dims`` is all the supernet needs: a narrower subnet runs its cut scorer exactly as
    extracted, and permuting the embedding channels leaves a token-dropping subnet unchanged."""
    sn = Supernet.from_timm(micro_vit()).eval().use_scorer(name)
    with torch.no_grad():
        for p in sn.token_scorers.parameters():
            p.add_(torch.randn_like(p))
    keep = [1.0, 0.5, 0.5, 0.25]
    narrow = SubnetConfig(32, 4, [3] * 4, [192] * 4, ["msa"] * 4, keep)
    wide = SubnetConfig(48, 4, [3] * 4, [192] * 4, ["msa"] * 4, keep)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(sn(x, narrow), sn.extract(narrow)(x), atol=1e-5)
        before = sn(x, wide)
        reorder(sn, combine(sn, [{"embed": torch.rand(48)}]))
        assert torch.allclose(sn(x, wide), before, atol=1e-5)


def test_reorder_keeps_learned_scorers_exact():
    sn = Supernet.from_timm(micro_vit()).eval().use_scorer("dynamicvit")
    cfg = SubnetConfig(48, 4, [3] * 4, [192] * 4, ["msa"] * 4, [1.0, 0.5, 0.5, 0.25])
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        before = sn(x, cfg)
        reorder(sn, combine(sn, [{"embed": torch.rand(48)}]))
        assert torch.allclose(sn(x, cfg), before, atol=1e-5)


def test_combine_averages_ranks_and_falls_back_to_magnitude():
    sn = Supernet.from_timm(micro_vit())
    a, b = torch.arange(48.0), torch.arange(48.0) * 100  # same order, different scales
    imp = combine(sn, [{"embed": a}, {"embed": b}])
    assert torch.equal(imp.embed.argsort(), a.argsort())
    assert len(imp.heads) == 4 and imp.mlp[0].shape == (192,)
    assert torch.allclose(combine(sn, [{"embed": a}, {"embed": -a}]).embed, torch.full((48,), 0.5))


def test_resolve_methods_reads_the_registry():
    every = resolve_methods("all")
    assert sorted(every) == sorted(METHODS)  # the registry is the list: a registered method is never dropped
    stages = [METHODS[n].stage for n in every]
    assert stages == sorted(stages, key=STAGES.index)  # width methods before token methods
    assert resolve_methods("patchslim,vtp") == ["vtp", "patchslim"]
    with pytest.raises(ConfigError, match="unknown method 'slim'"):
        resolve_methods("slim")


def test_a_method_with_an_unknown_stage_is_refused_at_registration():
    from supernet.gates import GateMethod, register_method

    class Late(GateMethod):
        name, stage = "late", "after-everything"

    with pytest.raises(TypeError, match="stage 'after-everything'"):
        register_method(Late)
    assert "late" not in METHODS


def test_extension_points_are_abstract():
    from supernet.gates import GateMethod
    from supernet.scorers import TokenScorer

    class NoLoss(GateMethod):
        name = "noloss"

        def proposals(self, sn):
            return []

    class NoForward(TokenScorer):
        name = "noforward"

    with pytest.raises(TypeError, match="abstract"):
        NoLoss(Supernet.from_timm(micro_vit()), COSTS)
    with pytest.raises(TypeError, match="abstract"):
        NoForward(8, 8)
