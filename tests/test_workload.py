import pytest
import timm
import torch
from safetensors.torch import save_file

from conftest import ROOT
from search.config import load_config
from search.workload import create_model, load_workload
from supernet import ConfigError

TINY = ROOT / "configs" / "tiny.yaml"


def test_bundled_configs_load():
    for name in ("default", "tiny", "deit_small"):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg["name"] == name and set(cfg) == {"name", "model", "data", "train", "space", "latency", "supernet", "retrain"}
    assert load_config()["model"]["name"] == "vitnas_tiny"


def test_unknown_config_key_names_the_valid_ones(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  nmae: vitnas_micro\n")
    with pytest.raises(ConfigError, match=r"unknown config key model.'nmae'; valid keys under model are \["):
        load_config(path)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: [vitnas_micro\ndata: {}\n")
    with pytest.raises(ConfigError, match=r"malformed YAML in .*c.yaml, line \d"):
        load_config(path)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("no/such.yaml")


def test_tiny_workload_trains_once_then_is_cached():
    config = load_config(TINY)
    logs = []
    first = load_workload(config, log=logs.append)
    assert any("training" in line for line in logs)
    assert 0.0 <= first.metrics["val_top1"] <= 1.0 and first.metrics["prep_seconds"] > 0
    assert first.metrics["val_top1"] > 0.15  # eight ~1 s epochs already beat chance (0.1)
    said = f"{first.metrics['val_top1']:.1%} val / {first.metrics['test_top1']:.1%} test"
    assert any(said in line for line in logs)  # what was trained is told, not only cached
    logs.clear()
    second = load_workload(config, log=logs.append)
    assert any("cached" in line and said in line for line in logs) and not any("training" in line for line in logs)
    assert second.checkpoint_hash == first.checkpoint_hash
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    assert second.input_shape == (1, 32, 32)
    # a cache entry cut short (disk full, a copy interrupted) is reported with its path and trained again
    entry = second.checkpoint
    entry.write_bytes(entry.read_bytes()[:100])
    logs.clear()
    healed = load_workload(config, log=logs.append)
    assert any("unreadable" in line and str(entry) in line for line in logs) and any("training" in line for line in logs)
    assert healed.checkpoint_hash == first.checkpoint_hash  # the same recipe trains the same weights


def _model_cfg(**kw):
    return {"name": "vitnas_micro", "arch": None, "pretrained": False, "checkpoint": None, "kwargs": {}, **kw}


def test_checkpoints_load_safely(tmp_path):
    torch.manual_seed(3)
    src = timm.create_model("vitnas_micro")
    st, pth = tmp_path / "w.safetensors", tmp_path / "w.pth"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(st))
    torch.save({"model": src.state_dict()}, pth)
    for model in (create_model(_model_cfg(checkpoint=str(st))), create_model(_model_cfg(checkpoint=str(pth))),
                  create_model(_model_cfg(name=str(st), arch="vitnas_micro"))):
        assert torch.equal(model.head.weight, src.head.weight)


def test_checkpoint_errors_are_one_line(tmp_path):
    other = timm.create_model("vitnas_micro", embed_dim=96)
    bad = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(bad))
    with pytest.raises(ConfigError, match="does not match the model: .* of another shape"):
        create_model(_model_cfg(checkpoint=str(bad)))
    pickled = tmp_path / "evil.pth"
    torch.save({"model": object()}, pickled)
    with pytest.raises(ConfigError, match="could not be read safely"):
        create_model(_model_cfg(checkpoint=str(pickled)))
    with pytest.raises(ConfigError, match="model.arch must name"):
        create_model(_model_cfg(name=str(bad)))
    with pytest.raises(ConfigError, match="not in timm's registry"):
        create_model(_model_cfg(name="vit_does_not_exist"))
    with pytest.raises(ConfigError, match="does not exist"):
        create_model(_model_cfg(checkpoint=str(tmp_path / "missing.safetensors")))


def test_the_base_recipe_sees_every_patch_first_then_drops_half():
    """``full_patch_epochs`` epochs on every patch, then PatchDropout; the estimate times both kinds of step;
    the trained model keeps every patch."""
    from torch.utils.data import TensorDataset

    from search.workload import train_classifier

    torch.manual_seed(0)
    model = timm.create_model("vitnas_micro")  # 32×32, patch 8: 16 patches and a class token
    data = TensorDataset(torch.randn(32, 1, 32, 32), torch.arange(32) % 10)
    tokens, said = [], []
    model.blocks[0].register_forward_pre_hook(lambda m, args: tokens.append(args[0].shape[1]))
    cfg = dict(load_config(TINY)["train"], epochs=3, batch_size=16, patch_drop=0.5, full_patch_epochs=1)
    history = train_classifier(model, data, cfg, log=said.append)
    assert len(history) == 3 and tokens[-6:] == [17, 17, 9, 9, 9, 9]  # 2 steps per epoch; the probe ran first
    assert set(tokens[:-6]) == {17, 9}  # the estimate timed a step of each kind
    assert "base model: 6 steps" in said[0]
    assert isinstance(model.patch_drop, torch.nn.Identity)
    model.eval()
    tokens.clear()
    model(torch.randn(1, 1, 32, 32))
    assert tokens == [17]


def test_a_users_kwargs_do_not_drop_the_recipes_layer_scale(tmp_path):
    """A held-out ImageFolder-style config sets its own kwargs; the base it trains from scratch still gets the
    recipe's LayerScale. A model with weights keeps exactly its kwargs' architecture."""
    from search.workload import base_model_config

    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: vitnas_micro\n  kwargs: {in_chans: 3, num_classes: 12}\n")
    config = load_config(path)
    built = base_model_config(config)
    assert built["kwargs"] == {"init_values": config["train"]["init_values"], "in_chans": 3, "num_classes": 12}
    model = create_model(built)
    assert model.blocks[0].ls1.gamma.shape == (48,) and model.head.out_features == 12
    path.write_text("model:\n  name: vitnas_micro\n  kwargs: {init_values: 0.5}\n")
    assert base_model_config(load_config(path))["kwargs"] == {"init_values": 0.5}  # the user's choice wins
    path.write_text("model:\n  name: vitnas_micro\n  checkpoint: w.safetensors\n")
    assert base_model_config(load_config(path))["kwargs"] == {}  # weights given: their architecture


def test_cache_keys_survive_comment_edits_but_not_code_changes(tmp_path, monkeypatch):
    import importlib

    from search.cache import cache_key

    def module(name, text):
        (tmp_path / f"{name}.py").write_text(text)
        return importlib.import_module(name)

    monkeypatch.syspath_prepend(str(tmp_path))
    code = 'def f(x):\n    return x + 1\n'
    original = module("keyed_a", '"""A module."""\n' + code)
    commented = module("keyed_b", '"""Another docstring."""\n# why\n' + code.replace("x + 1", "x + 1  # a comment")
                       .replace("def f(x):\n", 'def f(x):\n    """Add one."""\n'))
    changed = module("keyed_c", '"""A module."""\n' + code.replace("x + 1", "x + 2"))
    settings = {"epochs": 3}
    assert cache_key(settings, original) == cache_key(settings, commented)
    assert cache_key(settings, original) != cache_key(settings, changed)
    assert cache_key(settings, original.f) != cache_key(settings, changed.f)
    assert cache_key(settings, original) != cache_key({"epochs": 4}, original)
