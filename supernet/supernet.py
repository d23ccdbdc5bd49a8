"""The weight-sharing supernet over a timm VisionTransformer.

The supernet *holds* the timm model (its parameters are the shared weights, not copies) plus what the
search space adds: one exit head per shallower depth (WDPruning) and a head-to-offset table per block
(SPViT's conv). A subnet is run by slicing views of these weights — the first k channels, units, heads —
and calling the standalone ``SubnetViT`` module with them; ``extract`` fills the same module with copies.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn
from torch.func import functional_call

from .config import ConfigError, SubnetConfig
from .space import SearchSpace
from .scorers import SCORERS, build_scorer, has_weights
from .structure import shared_tensors, subnet_weights
from .subnet import ModelSpec, SubnetViT, build_subnet


class UnsupportedModel(ConfigError):
    """The timm model is a variant the supernet cannot slice; the message says which part and why."""


def spec_from_timm(vit: nn.Module, scorer: str = "cls_attention") -> ModelSpec:
    """Read a timm VisionTransformer's architecture, refusing variants the supernet cannot slice exactly."""
    from timm.layers import Mlp
    from timm.layers.attention import Attention
    from timm.models.vision_transformer import Block, VisionTransformer

    def refuse(why: str):
        raise UnsupportedModel(f"cannot build a supernet from this model: {why}")

    if not isinstance(vit, VisionTransformer):
        refuse(f"it is a {type(vit).__name__}, not a timm VisionTransformer")
    if vit.cls_token is None or vit.global_pool != "token" or vit.num_prefix_tokens != 1:
        refuse("it needs exactly one class token and global_pool='token' (token pruning and exit heads "
               "read the class token; register tokens and average pooling are not supported)")
    if vit.pos_embed is None or vit.no_embed_class or vit.dynamic_img_size:
        refuse("it needs a fixed absolute position embedding that includes the class token")
    if getattr(vit, "attn_pool", None) is not None or not isinstance(vit.fc_norm, nn.Identity):
        refuse("attention pooling and fc_norm heads are not supported")
    if not isinstance(vit.head, nn.Linear):
        refuse("it has no linear classifier head (num_classes=0); create it with num_classes set")
    blocks = list(vit.blocks)
    for i, b in enumerate(blocks):
        if type(b) is not Block or type(b.attn) is not Attention or type(b.mlp) is not Mlp:
            refuse(f"block {i} is {type(b).__name__}/{type(b.attn).__name__}/{type(b.mlp).__name__}; only "
                   "timm's pre-norm Block with Attention and Mlp can be sliced")
        if not isinstance(b.attn.norm, nn.Identity) or b.attn.gate is not None or \
                not isinstance(b.mlp.norm, nn.Identity):
            refuse(f"block {i} uses scale-norm or gated attention, or a normalised MLP")
        if _act_name(b.mlp.act) is None:
            refuse(f"block {i}'s MLP activation is {type(b.mlp.act).__name__}; only GELU is supported")
    b0 = blocks[0]
    shapes = {(b.attn.num_heads, b.attn.head_dim, b.mlp.fc1.out_features) for b in blocks}
    if len(shapes) != 1:
        refuse("blocks differ in heads, head width or MLP width")
    norm = vit.norm
    return ModelSpec(
        img_size=tuple(vit.patch_embed.img_size), patch_size=tuple(vit.patch_embed.patch_size),
        in_chans=vit.patch_embed.proj.in_channels, num_classes=vit.head.out_features,
        embed_dim=vit.embed_dim, depth=len(blocks), num_heads=b0.attn.num_heads,
        head_dim=b0.attn.head_dim, mlp_hidden=b0.mlp.fc1.out_features,
        qkv_bias=b0.attn.qkv.bias is not None, proj_bias=b0.attn.proj.bias is not None,
        qk_norm=not isinstance(b0.attn.q_norm, nn.Identity),
        layer_scale=not isinstance(b0.ls1, nn.Identity),
        patch_norm=not isinstance(vit.patch_embed.norm, nn.Identity),
        pre_norm=not isinstance(vit.norm_pre, nn.Identity),
        norm_eps=norm.eps, act=_act_name(b0.mlp.act),
        scorer=scorer,
    )


def _act_name(act: nn.Module) -> str | None:
    """torch's and timm's GELU modules -> "gelu" / "gelu_tanh"; anything else -> None."""
    from timm.layers.activations import GELU, GELUTanh

    if isinstance(act, nn.GELU):
        return "gelu_tanh" if act.approximate == "tanh" else "gelu"
    return {GELU: "gelu", GELUTanh: "gelu_tanh"}.get(type(act))


class Supernet(nn.Module):
    def __init__(self, vit: nn.Module, bounds: dict | None = None, scorer: str = "cls_attention"):
        super().__init__()
        self.spec = spec_from_timm(vit, scorer)
        self.vit = vit
        s = self.spec
        self.space = SearchSpace.for_model(s.embed_dim, s.depth, s.num_heads, s.mlp_hidden,
                                           s.num_patches, bounds)
        # WDPruning: a classifier after every shallower depth, initialised from the final norm + head
        self.exits = nn.ModuleDict({
            str(d): nn.ModuleDict({"norm": copy.deepcopy(vit.norm), "head": copy.deepcopy(vit.head)})
            for d in self.space.depth.choices if d < s.depth})
        # SPViT: per block, which 3×3 offsets each head's channels cover; uniform (a 3×3 mean) at start
        self.conv_offsets = nn.Parameter(torch.full((s.depth, s.num_heads, 9), 1.0 / 9))
        # learned token scorers (DynamicViT, Patch Slimming): one full-width predictor per block each
        self.token_scorers = nn.ModuleDict({
            name: nn.ModuleList(build_scorer(name, s.embed_dim, s.embed_dim) for _ in range(s.depth))
            for name in SCORERS if has_weights(name)})
        self._templates: dict[tuple, SubnetViT] = {}
        self.shared = shared_tensors(self)  # how every shared tensor divides into units of the axes

    def use_scorer(self, name: str) -> "Supernet":
        """Rank tokens with the scorer ``name`` from now on (subnets and extracted models alike)."""
        build_scorer(name, 8, 8)  # unknown names fail here, with the valid ones listed
        self.spec = replace(self.spec, scorer=name)
        self._templates.clear()
        return self

    @classmethod
    def from_timm(cls, vit: nn.Module, bounds: dict | None = None, scorer: str = "cls_attention") -> "Supernet":
        """Wrap ``vit`` (weights shared, not copied). ``bounds`` overrides search-space bounds per axis."""
        return cls(vit, bounds, scorer)

    # --- running and extracting subnets ------------------------------------------------------------
    def forward(self, x: torch.Tensor, cfg: SubnetConfig | None = None) -> torch.Tensor:
        cfg = self.space.largest() if cfg is None else cfg
        return functional_call(self._template(cfg), self.subnet_weights(cfg), (x,), strict=True)

    def extract(self, cfg: SubnetConfig) -> SubnetViT:
        """A standalone module with copies of the subnet's weights; no reference to the supernet."""
        model = build_subnet(self.spec, self.space.validate(cfg), device="meta")
        weights = {k: v.detach().clone() for k, v in self.subnet_weights(cfg).items()}
        model.load_state_dict(weights, strict=True, assign=True)
        return model.train(self.training)

    def _template(self, cfg: SubnetConfig) -> SubnetViT:
        """The weightless (meta) module of ``cfg``; the most recent 256 are kept (a search visits thousands)."""
        key = cfg.key()
        template = self._templates.pop(key, None) or build_subnet(self.spec, self.space.validate(cfg), device="meta")
        self._templates[key] = template  # most recently used last
        if len(self._templates) > 256:
            del self._templates[next(iter(self._templates))]
        return template

    def subnet_weights(self, cfg: SubnetConfig) -> dict[str, torch.Tensor]:
        """The subnet's weights as views of the shared parameters, named as in ``SubnetViT``
        (``supernet.structure`` declares how each is cut)."""
        return subnet_weights(self, cfg)
