"""vitnas's bundled base models, registered in timm's registry so ``timm.create_model(name)`` builds them."""
from __future__ import annotations

from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

from .config import ConfigError


def _create(pretrained: bool, name: str, defaults: dict, kwargs: dict) -> VisionTransformer:
    if pretrained:
        raise ConfigError(f"{name} has no hub weights; `python -m search run` trains and caches it")
    # timm's factory passes its own bookkeeping (pretrained_cfg, cache_dir, ...) to every entrypoint
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("pretrained_cfg") and k != "cache_dir"}
    return VisionTransformer(**{**defaults, **kwargs})


@register_model
def vitnas_tiny(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """DeiT-Tiny widths (12 blocks, 3 heads, embed 192, MLP 768) on 32×32 grey images, patch 4."""
    return _create(pretrained, "vitnas_tiny", dict(img_size=32, patch_size=4, in_chans=1, num_classes=10,
                                                   embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0), kwargs)


@register_model
def vitnas_micro(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """A 4-block, 48-wide ViT for tests: same structure, seconds to train."""
    return _create(pretrained, "vitnas_micro", dict(img_size=32, patch_size=8, in_chans=1, num_classes=10,
                                                    embed_dim=48, depth=4, num_heads=3, mlp_ratio=4.0), kwargs)
