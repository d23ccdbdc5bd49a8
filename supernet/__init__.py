"""The weight-sharing ViT supernet: search space, subnet configs, exact extraction."""
from . import models  # noqa: F401  (registers vitnas_* in timm)
from .config import ConfigError, SubnetConfig
from .space import SearchSpace
from .subnet import ModelSpec, SubnetViT, build_subnet
from .supernet import Supernet, UnsupportedModel

__all__ = ["ConfigError", "ModelSpec", "SearchSpace", "SubnetConfig", "SubnetViT", "Supernet",
           "UnsupportedModel", "build_subnet"]
