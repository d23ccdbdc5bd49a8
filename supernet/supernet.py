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
from .structure import shared_tensors, subnet_layout, subnet_weights
from .subnet import ModelSpec, SubnetViT, build_subnet


class UnsupportedModel(ConfigError):
    """The timm model is a variant the supernet cannot slice; the message says which part and why."""


def spec_from_timm(vit: nn.Module, scorer: str = "cls_attention") -> ModelSpec:
    """Read a timm VisionTransformer's architecture, refusing variants the supernet cannot slice exactly."""
    from timm.layers import GluMlp, Mlp, SwiGLU
    from timm.layers.attention import Attention
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import Block, VisionTransformer

    def refuse(why: str):
        raise UnsupportedModel(f"cannot build a supernet from this model: {why}")

    if not isinstance(vit, VisionTransformer):
        refuse(f"it is a {type(vit).__name__}, not a timm VisionTransformer")
    distilled = isinstance(vit, VisionTransformerDistilled)
    if getattr(vit, "attn_pool", None) is not None:
        refuse("attention pooling (global_pool='map') is not supported: it reads every token with its own "
               "attention, which token pruning would change")
    if vit.global_pool not in ("token", "avg") or (vit.global_pool == "avg" and vit.pool_include_prefix):
        refuse(f"global_pool={vit.global_pool!r} is not supported; 'token' (the class token) and 'avg' (the "
               "mean of the patch tokens) are")
    if vit.global_pool == "token" and vit.cls_token is None:
        refuse("global_pool='token' needs a class token")
    if distilled and vit.distilled_training:
        refuse("a distilled model in distilled-training mode returns two outputs; call "
               "set_distilled_training(False)")
    if vit.pos_embed is None or vit.dynamic_img_size:
        refuse("it needs a fixed absolute position embedding (no dynamic image size, no RoPE-only model)")
    if not isinstance(vit.head, nn.Linear):
        refuse("it has no linear classifier head (num_classes=0); create it with num_classes set")
    blocks = list(vit.blocks)
    for i, b in enumerate(blocks):
        if type(b) is not Block or type(b.attn) is not Attention or type(b.mlp) not in (Mlp, SwiGLU, GluMlp):
            refuse(f"block {i} is {type(b).__name__}/{type(b.attn).__name__}/{type(b.mlp).__name__}; only "
                   "timm's pre-norm Block with Attention and Mlp, SwiGLU or GluMlp can be sliced (parallel "
                   "blocks and RoPE attention are not)")
        if not isinstance(b.attn.norm, nn.Identity) or b.attn.gate is not None or \
                not isinstance(b.mlp.norm, nn.Identity):
            refuse(f"block {i} uses scale-norm or gated attention, or a normalised MLP")
        if _act_name(b.mlp.act) is None:
            refuse(f"block {i}'s MLP activation is {type(b.mlp.act).__name__}; GELU, SiLU and sigmoid are "
                   "supported")
        if isinstance(b.mlp, GluMlp) and b.mlp.chunk_dim != -1:
            refuse(f"block {i}'s GluMlp is convolutional (use_conv=True)")
    b0 = blocks[0]
    shapes = {(b.attn.num_heads, b.attn.head_dim, type(b.mlp), b.mlp.fc2.in_features) for b in blocks}
    if len(shapes) != 1:
        refuse("blocks differ in heads, head width or MLP type or width")
    return ModelSpec(
        img_size=tuple(vit.patch_embed.img_size), patch_size=tuple(vit.patch_embed.patch_size),
        in_chans=vit.patch_embed.proj.in_channels, num_classes=vit.head.out_features,
        embed_dim=vit.embed_dim, depth=len(blocks), num_heads=b0.attn.num_heads,
        head_dim=b0.attn.head_dim, mlp_hidden=b0.mlp.fc2.in_features,
        qkv_bias=b0.attn.qkv.bias is not None, proj_bias=b0.attn.proj.bias is not None,
        qk_norm=not isinstance(b0.attn.q_norm, nn.Identity),
        layer_scale=not isinstance(b0.ls1, nn.Identity),
        patch_norm=not isinstance(vit.patch_embed.norm, nn.Identity),
        pre_norm=not isinstance(vit.norm_pre, nn.Identity),
        norm_eps=b0.norm1.eps, act=_act_name(b0.mlp.act),
        mlp_kind={Mlp: "mlp", SwiGLU: "swiglu", GluMlp: "glu"}[type(b0.mlp)],
        gate_last=getattr(b0.mlp, "gate_last", False),
        scorer=scorer,
        class_token=vit.cls_token is not None, dist_token=distilled,
        reg_tokens=0 if vit.reg_token is None else vit.reg_token.shape[1],
        embed_prefix=not vit.no_embed_class, pool=vit.global_pool,
        final_norm=not isinstance(vit.norm, nn.Identity), fc_norm=not isinstance(vit.fc_norm, nn.Identity),
    )


def _act_name(act: nn.Module) -> str | None:
    """torch's and timm's GELU, SiLU and sigmoid modules -> a name ``subnet.activation`` builds; else None."""
    from timm.layers.activations import GELU, GELUTanh, Sigmoid, Swish

    if isinstance(act, nn.GELU):
        return "gelu_tanh" if act.approximate == "tanh" else "gelu"
    return {GELU: "gelu", GELUTanh: "gelu_tanh", nn.SiLU: "silu", Swish: "silu", nn.Sigmoid: "sigmoid",
            Sigmoid: "sigmoid"}.get(type(act))


class Supernet(nn.Module):
    def __init__(self, vit: nn.Module, bounds: dict | None = None, scorer: str = "cls_attention"):
        super().__init__()
        self.spec = spec_from_timm(vit, scorer)
        self.vit = vit
        s = self.spec
        self.space = SearchSpace.for_model(s.embed_dim, s.depth, s.num_heads, s.mlp_hidden,
                                           s.num_patches, bounds, s.head_dim, s.qk_norm)
        # WDPruning: a classifier after every shallower depth, initialised from the final one
        final = [k for k in ("norm", "fc_norm", "head", "head_dist") if hasattr(vit, k)]
        self.exits = nn.ModuleDict({
            str(d): nn.ModuleDict({k: copy.deepcopy(getattr(vit, k)) for k in final})
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
        return functional_call(self.template(cfg), self.subnet_weights(cfg), (x,), strict=True)

    def extract(self, cfg: SubnetConfig) -> SubnetViT:
        """A standalone module with copies of the subnet's weights; no reference to the supernet."""
        model = build_subnet(self.spec, self.space.validate(cfg), device="meta")
        weights = {k: v.detach().clone() for k, v in self.subnet_weights(cfg).items()}
        model.load_state_dict(weights, strict=True, assign=True)
        return model.train(self.training)

    def template(self, cfg: SubnetConfig) -> SubnetViT:
        """The weightless (meta) module of ``cfg``; the most recent 256 are kept (a search visits thousands)."""
        key = cfg.key()
        template = self._templates.pop(key, None)
        if template is None:
            template = build_subnet(self.spec, self.space.validate(cfg), device="meta")
            template.layout = subnet_layout(self, cfg, template)  # read at every forward: made once per config
        self._templates[key] = template  # most recently used last
        if len(self._templates) > 256:
            del self._templates[next(iter(self._templates))]
        return template

    def subnet_weights(self, cfg: SubnetConfig) -> dict[str, torch.Tensor]:
        """The subnet's weights as views of the shared parameters, named as in ``SubnetViT``
        (``supernet.structure`` declares how each is cut)."""
        return subnet_weights(self, cfg)
