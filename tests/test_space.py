import pytest

from supernet import ConfigError, SearchSpace, SubnetConfig


def test_default_bounds_are_hardware_friendly(sn):
    space = sn.space
    assert space.embed_dim.choices == [16, 32, 48]
    assert all(m % 32 == 0 for m in space.mlp.choices) and space.mlp.max == 192
    assert space.heads.choices == [1, 2, 3]
    assert space.keep.choices == [0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]
    assert space.depth.choices == [1, 2, 3, 4]
    assert space.qk.choices == space.v.choices == [8, 16]  # two widths on the 16-wide heads of the test model
    deit_tiny = SearchSpace.for_model(192, 12, 3, 768, 64, head_dim=64)
    assert deit_tiny.qk.choices == deit_tiny.v.choices == [16, 32, 48, 64]


def test_normalised_queries_and_keys_keep_their_width():
    """q_norm/k_norm normalise over the whole head width with one weight for every head: no qk axis there."""
    space = SearchSpace.for_model(192, 12, 3, 768, 64, head_dim=64, qk_norm=True)
    assert space.qk.choices == [64] and space.v.choices == [16, 32, 48, 64]
    with pytest.raises(ConfigError, match="space.qk cannot go below the head width 64"):
        SearchSpace.for_model(192, 12, 3, 768, 64, {"qk": {"min": 32}}, head_dim=64, qk_norm=True)


def test_bounds_overridable_and_checked():
    space = SearchSpace.for_model(192, 12, 3, 768, 64, {"mlp": {"min": 256, "step": 64}, "ops": ["msa"]})
    assert space.mlp.choices == [256, 320, 384, 448, 512, 576, 640, 704, 768]
    assert space.ops == ("msa",)
    with pytest.raises(ConfigError, match="unknown search-space axis"):
        SearchSpace.for_model(192, 12, 3, 768, 64, {"width": {}})


def test_samples_are_valid_and_diverse(sn, rng):
    cfgs = [sn.space.sample(rng) for _ in range(200)]
    for cfg in cfgs:
        sn.space.validate(cfg)
    assert len({c.key() for c in cfgs}) >= 190  # a few depth-1 collisions in this tiny space
    assert any("conv" in c.ops for c in cfgs) and any(min(c.keep) < 1 for c in cfgs)
    sn.space.validate(sn.space.largest())
    sn.space.validate(sn.space.smallest())


def test_uniform_narrows_every_width_together_and_keeps_every_block_head_and_token():
    space = SearchSpace.for_model(192, 12, 3, 768, 64, head_dim=64)
    assert space.uniform(1.0) == space.largest()
    floor = space.uniform(0.0)  # every width at its minimum, nothing else narrowed
    assert (floor.embed_dim, set(floor.mlp), set(floor.qk), set(floor.v)) == (48, {96}, {16}, {16})
    half = space.validate(space.uniform(0.5))
    assert (half.embed_dim, set(half.mlp), set(half.qk), set(half.v)) == (96, {384}, {32}, {32})
    assert half.depth == 12 and set(half.heads) == {3} and set(half.keep) == {1.0} and set(half.ops) == {"msa"}
    widths = [space.uniform(f / 20) for f in range(21)]
    for a, b in zip(widths, widths[1:]):  # wider with the factor, on every axis
        assert a.embed_dim <= b.embed_dim and a.mlp[0] <= b.mlp[0] and a.qk[0] <= b.qk[0] and a.v[0] <= b.v[0]


def _cfg(**kw):
    base = dict(embed_dim=48, depth=2, heads=[3, 3], mlp=[192, 192], ops=["msa", "msa"], keep=[1.0, 1.0])
    return SubnetConfig(**{**base, **kw})


@pytest.mark.parametrize("kw, message", [
    (dict(embed_dim=40), r"embed_dim=40 is not allowed: choose a multiple of 16"),
    (dict(depth=5, heads=[3] * 5, mlp=[192] * 5, ops=["msa"] * 5, keep=[1.0] * 5), r"depth=5 is not allowed"),
    (dict(heads=[3]), r"heads has 1 entries but depth is 2"),
    (dict(heads=[4, 3]), r"heads\[0\]=4 is not allowed"),
    (dict(mlp=[192, 100]), r"mlp\[1\]=100 is not allowed"),
    (dict(qk=[16, 12]), r"qk\[1\]=12 is not allowed: choose a multiple of 8"),
    (dict(v=[16, 32]), r"v\[1\]=32 is not allowed"),
    (dict(v=[16]), r"v has 1 entries but depth is 2"),
    (dict(ops=["msa", "ffn"]), r"ops\[1\]='ffn' is not allowed"),
    (dict(keep=[1.0, 0.3]), r"keep\[1\]=0.3 is not allowed"),
    (dict(keep=[0.5, 0.75]), r"keep must be non-increasing"),
    (dict(ops=["msa", "conv"], keep=[1.0, 0.5]), r"conv block needs the full token grid"),
])
def test_validation_names_the_broken_rule(sn, kw, message):
    with pytest.raises(ConfigError, match=message):
        sn.space.validate(_cfg(**kw))


def test_tokens_are_ceil_of_fraction(sn):
    assert sn.space.tokens(_cfg(keep=[1.0, 0.375])) == [16, 6]
