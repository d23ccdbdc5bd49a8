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


def test_wrong_type_is_one_clear_error():
    with pytest.raises(ConfigError, match="wrong type"):
        SubnetConfig.from_dict({"embed_dim": "wide", "depth": 1, "heads": [1], "mlp": [32], "ops": ["msa"],
                                "keep": [1.0]})
