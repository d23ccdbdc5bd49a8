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

from .config import SubnetConfig
from .space import SearchSpace
from .scorers import SCORERS, build_scorer, has_weights
from .subnet import ModelSpec, SubnetViT, build_subnet, conv_kernel, drop_blocks


class UnsupportedModel(ValueError):
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
        """The subnet's weights as views of the shared parameters, named as in ``SubnetViT``.

        Every axis is sorted by importance, so the subnet always takes the *first* k of everything.
        """
        s, vit, e = self.spec, self.vit, cfg.embed_dim
        w: dict[str, torch.Tensor] = {}

        def add(prefix: str, module: nn.Module, out: int | None = None, inp: int | None = None):
            """weight[:out, :inp] and bias[:out] of a Linear/LayerNorm/Conv (None = keep whole)."""
            w[f"{prefix}.weight"] = module.weight[:out, :inp] if inp is not None else module.weight[:out]
            if getattr(module, "bias", None) is not None:
                w[f"{prefix}.bias"] = module.bias[:out]

        add("patch_embed.proj", vit.patch_embed.proj, e)
        if s.patch_norm:
            add("patch_embed.norm", vit.patch_embed.norm, e)
        w["cls_token"] = vit.cls_token[..., :e]
        w["pos_embed"] = vit.pos_embed[..., :e]
        if s.pre_norm:
            add("norm_pre", vit.norm_pre, e)
        H, hd, E = s.num_heads, s.head_dim, s.embed_dim
        for i in range(cfg.depth):
            b, h, m, p = vit.blocks[i], cfg.heads[i], cfg.mlp[i], f"blocks.{i}."
            add(p + "norm1", b.norm1, e)
            qkv_w = b.attn.qkv.weight.view(3, H, hd, E)[:, :h, :, :e]
            qkv_b = b.attn.qkv.bias.view(3, H, hd)[:, :h] if s.qkv_bias else None
            if cfg.ops[i] == "msa":
                w[p + "mixer.qkv.weight"] = qkv_w.reshape(3 * h * hd, e)
                if s.qkv_bias:
                    w[p + "mixer.qkv.bias"] = qkv_b.reshape(-1)
                if s.qk_norm:
                    add(p + "mixer.q_norm", b.attn.q_norm)
                    add(p + "mixer.k_norm", b.attn.k_norm)
            else:  # SPViT: the conv reuses this block's value projection
                w[p + "mixer.v.weight"] = qkv_w[2].reshape(h * hd, e)
                if s.qkv_bias:
                    w[p + "mixer.v.bias"] = qkv_b[2].reshape(-1)
                w[p + "mixer.kernel"] = conv_kernel(self.conv_offsets[i], h, hd)
            add(p + "mixer.proj", b.attn.proj, e, h * hd)
            add(p + "norm2", b.norm2, e)
            add(p + "mlp.fc1", b.mlp.fc1, m, e)
            add(p + "mlp.fc2", b.mlp.fc2, e, m)
            if s.layer_scale:
                w[p + "ls1.gamma"] = b.ls1.gamma[:e]
                w[p + "ls2.gamma"] = b.ls2.gamma[:e]
        if s.scorer in self.token_scorers:
            for i, drops in enumerate(drop_blocks(s, cfg)):
                if drops:
                    for k, v in self.token_scorers[s.scorer][i].weights_for(e).items():
                        w[f"blocks.{i}.scorer.{k}"] = v
        head = {"norm": vit.norm, "head": vit.head} if cfg.depth == s.depth else self.exits[str(cfg.depth)]
        add("norm", head["norm"], e)
        add("head", head["head"], None, e)
        return w
