import re

import pytest

from supernet import ConfigError, SubnetConfig


def test_yaml_round_trip(sn, rng, tmp_path):
    for _ in range(20):
        cfg = sn.space.sample(rng)
        path = tmp_path / "c.yaml"
        cfg.to_yaml(path)
        assert SubnetConfig.from_yaml(path) == cfg
        assert SubnetConfig.from_dict(cfg.to_dict()) == cfg


def test_yaml_is_flow_style_and_extras_are_ignored(sn, tmp_path):
    cfg = sn.space.largest()
    text = cfg.to_yaml(tmp_path / "c.yaml", extra={"metrics": {"val_top1": 0.9}, "provenance": {"device": "cpu"}})
    assert "heads: [3, 3, 3, 3]" in text
    assert SubnetConfig.from_yaml(tmp_path / "c.yaml") == cfg


def test_unknown_key_names_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown subnet config key\(s\) \['width'\]; valid keys are"):
        SubnetConfig.from_dict({"width": 3, "embed_dim": 48, "depth": 1, "heads": [1], "mlp": [32],
                                "ops": ["msa"], "keep": [1.0]})


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("embed_dim: 48\ndepth: 2\nheads: [1, 2\nmlp: [32, 32]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml, line \d+"):
        SubnetConfig.from_yaml(path)


@pytest.mark.parametrize("key, value, says", [
    ("embed_dim", "wide", "embed_dim must be a whole number, got 'wide'"),
    ("embed_dim", 48.9, "embed_dim must be a whole number, got 48.9"),   # never silently 48
    ("heads", [2.5], "heads must be a list of whole numbers"),
    ("heads", [True], "heads must be a list of whole numbers"),           # never silently 1
    ("ops", ["attention"], "ops must be a list of one of ['msa', 'conv']"),
    ("keep", "all", "keep must be a list of fractions"),
])
def test_wrong_type_is_one_clear_error_never_a_coercion(key, value, says):
    d = {"embed_dim": 48, "depth": 1, "heads": [1], "mlp": [32], "ops": ["msa"], "keep": [1.0], key: value}
    with pytest.raises(ConfigError, match=re.escape(says)):
        SubnetConfig.from_dict(d)


def test_a_binary_file_is_named(tmp_path):
    path = tmp_path / "best.yaml"
    path.write_bytes(b"\xcd\xff\xfe garbage")
    with pytest.raises(ConfigError, match="best.yaml is not a text"):
        SubnetConfig.from_yaml(path)
