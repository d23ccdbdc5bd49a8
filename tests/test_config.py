import re

import pytest
import torch

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
    assert "heads: [3, 3, 3, 3]" in text and "qk: [16, 16, 16, 16]" in text
    assert SubnetConfig.from_yaml(tmp_path / "c.yaml") == cfg


def test_a_version_1_file_reads_as_full_head_widths(sn, tmp_path):
    """Files written before qk/v existed (version 1, whole heads only) still load, as the base head width."""
    path = tmp_path / "old.yaml"
    path.write_text("version: 1\nembed_dim: 48\ndepth: 2\nheads: [3, 2]\nmlp: [192, 96]\nops: [msa, msa]\n"
                    "keep: [1.0, 0.5]\n")
    cfg = SubnetConfig.from_yaml(path)
    assert cfg.qk is None and cfg.head_widths(16) == ([16, 16], [16, 16])
    sn.space.validate(cfg)
    explicit = SubnetConfig(48, 2, [3, 2], [192, 96], ["msa", "msa"], [1.0, 0.5], [16, 16], [16, 16])
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(sn(x, cfg), sn(x, explicit))
    with pytest.raises(ConfigError, match="version 3 is not supported"):
        SubnetConfig.from_yaml(path.read_text().replace("version: 1", "version: 3"))


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
    ("qk", [8.5], "qk must be a list of whole numbers"),
    ("v", "narrow", "v must be a list of whole numbers"),
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
