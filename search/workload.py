"""A workload: the config file, its data splits and its trained base model (trained here and cached if need be).

Weights come from, in order: ``model.checkpoint`` (or ``model.name`` as a checkpoint path), timm's hub
(``model.pretrained: true``, needs network), or training on the workload's own data — cached under
``$VITNAS_CACHE`` (default ``~/.cache/vitnas``) keyed by the config and the code that trains it.
"""
from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

import supernet  # noqa: F401  (registers the bundled vitnas_* models in timm)
from evaluators import evaluate_accuracy
from evaluators.data import imagefolder_splits, make_loader
from evaluators.digits import DigitsSpec, digits_splits
from supernet import ConfigError
from supernet.storage import write_atomic
from supernet.train import announcer, cosine_schedule, fit

from .cache import cache_dir, cache_key, file_hash

# --- data ------------------------------------------------------------------------------------------
def build_splits(data_cfg: dict, model: nn.Module) -> dict:
    if data_cfg["name"] == "digits":
        spec = DigitsSpec(seed=data_cfg["seed"], digit_min=data_cfg["digit_min"],
                          digit_max=data_cfg["digit_max"], clutter=data_cfg["clutter"], jitter=data_cfg["jitter"],
                          variants=tuple(data_cfg["variants"]),
                          canvas=model.patch_embed.img_size[0])
        return digits_splits(spec)
    if data_cfg["name"] == "imagefolder":
        if not data_cfg["root"]:
            raise ConfigError("data.name is imagefolder but data.root is not set; point it at a folder "
                              "with train/ and val/ class folders")
        return imagefolder_splits(data_cfg["root"], model.patch_embed.img_size[0],
                                  model.patch_embed.proj.in_channels, data_cfg["mean"], data_cfg["std"],
                                  num_classes=model.num_classes)
    raise ConfigError(f"unknown data.name {data_cfg['name']!r}; valid names are ['digits', 'imagefolder']")


# --- model -----------------------------------------------------------------------------------------
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from ``.safetensors`` or a ``.pth``/``.pt`` file, loaded safely (no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if path.suffix not in (".pth", ".pt", ".bin"):
        raise ConfigError(f"checkpoint {path} has an unknown format; use .safetensors or .pth")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (pickle errors vary; the user needs one line)
        raise ConfigError(f"checkpoint {path} could not be read safely (weights_only=True): "
                          f"{str(e).splitlines()[0]}") from None
    for key in ("model", "state_dict", "model_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            return state[key]
    return state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(shapes)} of another shape (e.g. {shapes[0]}: {tuple(state[shapes[0]].shape)} vs "
                 f"{tuple(own[shapes[0]].shape)})" if shapes else ""]
        raise ConfigError(f"checkpoint {path} does not match the model: " + ", ".join(p for p in parts if p) +
                          "; check model.name/model.arch and model.kwargs (num_classes, img_size)")
    model.load_state_dict(state)


def weights_file(model_cfg: dict) -> str | None:
    """The local weights file of the model: ``model.name`` when it is a checkpoint path, else ``model.checkpoint``."""
    name = str(model_cfg["name"])
    return name if Path(name).suffix in (".safetensors", ".pth", ".pt") else model_cfg["checkpoint"]


def base_model_config(config: dict) -> dict:
    """The model section as the base model is built. A base trained here from scratch gets the recipe's
    LayerScale (``train.init_values``) unless ``model.kwargs`` sets ``init_values`` itself: it belongs to how
    the model is trained, so a user's kwargs (``num_classes``, ``in_chans``) cannot drop it unknowingly. A
    model with weights keeps exactly the architecture its kwargs name."""
    m, init = config["model"], config["train"]["init_values"]
    if weights_file(m) or m["pretrained"] or init is None:
        return m
    return {**m, "kwargs": {"init_values": init, **m["kwargs"]}}


def create_model(model_cfg: dict) -> nn.Module:
    name, checkpoint = model_cfg["name"], weights_file(model_cfg)
    if checkpoint == name:
        name = model_cfg["arch"]
        if not name:
            raise ConfigError("model.name is a checkpoint file, so model.arch must name its timm "
                              "architecture (e.g. vit_small_patch16_224)")
    if not timm.is_model(name):
        raise ConfigError(f"unknown model {name!r}: not in timm's registry (see timm.list_models('vit*'))")
    model = timm.create_model(name, pretrained=bool(model_cfg["pretrained"]), **model_cfg["kwargs"])
    if checkpoint:
        load_weights(model, read_state_dict(checkpoint), checkpoint)
    return model


def _bf16_autocast() -> bool:
    """bf16 autocast pays off on CPUs with native bf16 (AMX / AVX512-BF16); elsewhere it is slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def patch_dropout(model: nn.Module, epoch: int, cfg: dict) -> str:
    """Give ``model`` the base recipe's patch dropout for ``epoch`` (none in the first ``full_patch_epochs``);
    returns its name."""
    from timm.layers import PatchDropout

    drop = cfg["patch_drop"] if epoch >= cfg["full_patch_epochs"] else 0.0
    model.patch_drop = PatchDropout(drop, num_prefix_tokens=model.num_prefix_tokens) if drop else nn.Identity()
    return f"patch dropout {drop}"


def train_classifier(model: nn.Module, train_set, cfg: dict, device="cpu", log=print) -> list[dict]:
    """The base model's recipe: ``fit`` with label smoothing, gradient clipping, bf16 where it pays, and timm's
    PatchDropout (a random ``patch_drop`` share of the patches left out of each training image) from epoch
    ``full_patch_epochs + 1`` on.

    Why not from the start: the first steps sit at chance until the model finds the digit among the clutter,
    and with half its patches gone that took from under one epoch to two, by the luck of the draw; the base
    model then ended 5 points apart (README, "The bundled base recipe"). Every patch in the first epoch
    shortens that search for all seeds; the dropout then buys its 2.6x faster epochs."""
    torch.manual_seed(cfg["seed"])
    model.to(device).train()
    loader = make_loader(train_set, cfg["batch_size"], shuffle=True, seed=cfg["seed"])
    epochs = cfg["epochs"]
    try:
        return fit(model, loader, epochs,
                   lambda logits, y, x: F.cross_entropy(logits, y, label_smoothing=cfg["label_smoothing"]),
                   cfg["lr"], cfg["weight_decay"], warmup=cfg["warmup"], clip=1.0,
                   amp=torch.device(device).type == "cuda" or _bf16_autocast(), device=device, desc="base model",
                   log=lambda r: tqdm.write(f"base epoch {r['epoch']}/{epochs}: loss {r['loss']:.3f}, "
                                            f"train top-1 {r['train_top1']:.1%}"),
                   announce=announcer(log, "base model"), epoch_setup=lambda epoch, m: patch_dropout(m, epoch, cfg))
    finally:
        model.patch_drop = nn.Identity()  # the model as timm builds it: every patch at inference


@dataclass
class Workload:
    config: dict
    model: nn.Module
    splits: dict
    checkpoint: Path | None            # the weights file the base model came from (None: hub weights)
    checkpoint_hash: str
    metrics: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        pe = self.model.patch_embed
        return (pe.proj.in_channels, *pe.img_size)


def load_workload(config: dict, device="cpu", log=print) -> Workload:
    """Build the base model and data for ``config``; trains and caches the base model if it has no weights."""
    model_cfg = base_model_config(config)
    torch.manual_seed(config["train"]["seed"])  # the initial weights of a model trained here are part of its recipe
    model = create_model(model_cfg)
    splits = build_splits(config["data"], model)
    ckpt = weights_file(model_cfg)
    if ckpt or model_cfg["pretrained"]:
        return Workload(config, model.eval(), splits, Path(ckpt) if ckpt else None,
                        file_hash(ckpt) if ckpt else f"timm:{model_cfg['name']}")

    # the key: the recipe (config) and the code that produces the weights, not unrelated edits of this file
    key = cache_key({k: config[k] for k in ("model", "data", "train")}, train_classifier, patch_dropout, fit,
                    cosine_schedule, inspect.getmodule(digits_splits))
    path = cache_dir() / "base" / f"{model_cfg['name']}-{key}.safetensors"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        try:
            state, meta = load_file(str(path)), json.loads(meta_path.read_text())
        except (OSError, ValueError, SafetensorError) as e:  # truncated, overwritten, not ours: train it again
            log(f"base model: cache entry {path} is unreadable ({type(e).__name__}: {e}); training it again")
        else:
            load_weights(model, state, path)
            log(f"base model: cached {path}{_scores(meta)}")
            return Workload(config, model.eval(), splits, path, file_hash(path), meta)

    log(f"base model: training {model_cfg['name']} on {config['data']['name']} "
        f"({len(splits['train'])} images, {config['train']['epochs']} epochs); cached afterwards")
    start = time.perf_counter()
    history = train_classifier(model, splits["train"], config["train"], device, log)
    model.cpu().eval()
    metrics = {"prep_seconds": round(time.perf_counter() - start, 1), "history": history,
               "val_top1": evaluate_accuracy(model, splits["val"]),
               "test_top1": evaluate_accuracy(model, splits["test"])}
    write_atomic(meta_path, lambda tmp: tmp.write_text(json.dumps(metrics, indent=1)))
    # the weights last: an entry counts only when both files are there, each written whole
    write_atomic(path, lambda tmp: save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp)))
    log(f"base model: trained in {metrics['prep_seconds'] / 60:.1f} min{_scores(metrics)}; cached {path}")
    return Workload(config, model, splits, path, file_hash(path), metrics)


def _scores(metrics: dict) -> str:
    """', 96.3% val / 96.8% test top-1' when ``metrics`` (a base model's cache entry) has them."""
    if "val_top1" not in metrics or "test_top1" not in metrics:
        return ""
    return f", {metrics['val_top1']:.1%} val / {metrics['test_top1']:.1%} test top-1"
