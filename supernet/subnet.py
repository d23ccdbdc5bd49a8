"""The physical subnet: a small, standalone ViT built from plain data (a ModelSpec and a SubnetConfig).

The supernet runs a subnet by calling *this* module with sliced views of its shared weights
(``torch.func.functional_call``), and ``Supernet.extract`` fills the same module with copies. One code
path for both is what makes ``sn(x, cfg) == sn.extract(cfg)(x)`` hold to float32 round-off.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import SubnetConfig
from .scorers import build_scorer
from .space import tokens_kept


@dataclass(frozen=True)
class ModelSpec:
    """The base ViT's architecture as plain data: everything a subnet module needs besides its config."""

    img_size: tuple[int, int]
    patch_size: tuple[int, int]
    in_chans: int
    num_classes: int
    embed_dim: int
    depth: int
    num_heads: int
    head_dim: int
    mlp_hidden: int
    qkv_bias: bool = True
    proj_bias: bool = True
    qk_norm: bool = False
    layer_scale: bool = False
    patch_norm: bool = False
    pre_norm: bool = False
    norm_eps: float = 1e-6
    act: str = "gelu"            # "gelu", "gelu_tanh", "silu" or "sigmoid"
    mlp_kind: str = "mlp"        # timm's Mlp (fc1, act, fc2), SwiGLU (fc1_g, fc1_x) or GluMlp (fc1 packed)
    gate_last: bool = False      # GluMlp: the gate is the second half of fc1's outputs
    scorer: str = "cls_attention"
    # prefix tokens, in timm's order (class, distillation, registers): never dropped, never pooled by "avg"
    class_token: bool = True
    dist_token: bool = False     # DeiT distilled: a second head reads it, the two heads' logits are averaged
    reg_tokens: int = 0
    embed_prefix: bool = True    # the position embedding covers the prefix tokens (timm: not no_embed_class)
    pool: str = "token"          # "token" (the class token) or "avg" (the mean of the patch tokens)
    final_norm: bool = True      # timm's `norm` after the last block
    fc_norm: bool = False        # timm's `fc_norm` after pooling

    @property
    def prefix(self) -> int:
        return int(self.class_token) + int(self.dist_token) + self.reg_tokens

    @property
    def grid(self) -> tuple[int, int]:
        return self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1]

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        d = dict(d)
        d["img_size"], d["patch_size"] = tuple(d["img_size"]), tuple(d["patch_size"])
        return cls(**d)


def _norm(spec: ModelSpec, dim: int, present: bool = True) -> nn.Module:
    return nn.LayerNorm(dim, eps=spec.norm_eps) if present else nn.Identity()


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class PatchEmbed(nn.Module):
    def __init__(self, spec: ModelSpec, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(spec.in_chans, dim, spec.patch_size, spec.patch_size)
        self.norm = _norm(spec, dim, spec.patch_norm)

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


def patch_attention(spec: ModelSpec, attn: torch.Tensor) -> torch.Tensor:
    """[B, heads, T, T] attention -> [B, n] score per patch token: the attention the class token pays it,
    or without a class token the attention it receives, averaged over tokens; both averaged over heads."""
    if spec.class_token:
        return attn[:, :, 0, spec.prefix:].mean(dim=1)
    return attn[:, :, :, spec.prefix:].mean(dim=(1, 2))


class Attention(nn.Module):
    """Multi-head self-attention over ``heads`` heads, each with ``qk`` query/key and ``v`` value channels
    (of the base model's ``head_dim``). The logits keep the base model's scale, 1/sqrt(head_dim): a narrower
    head drops terms of the dot product, it does not rescale the rest (the largest subnet is the base)."""

    def __init__(self, spec: ModelSpec, dim: int, heads: int, qk: int, v: int, return_cls_attn: bool):
        super().__init__()
        self.spec = spec
        self.heads, self.qk, self.v = heads, qk, v
        self.return_cls_attn = return_cls_attn  # only the block whose attention scores a later token drop
        self.qkv = nn.Linear(dim, heads * (2 * qk + v), bias=spec.qkv_bias)  # [q | k | v], head-major in each
        self.q_norm = _norm(spec, qk, spec.qk_norm)  # (the space keeps qk whole when they are normalised)
        self.k_norm = _norm(spec, qk, spec.qk_norm)
        self.proj = nn.Linear(heads * v, dim, bias=spec.proj_bias)
        self.softmax = nn.Softmax(dim=-1)  # a module, so the gate methods can read and mask the map (hooks)

    def forward(self, x):
        B, N, _ = x.shape
        h, scale = self.heads, self.spec.head_dim ** -0.5
        q, k, v = (t.reshape(B, N, h, -1).transpose(1, 2)
                   for t in self.qkv(x).split([h * self.qk, h * self.qk, h * self.v], dim=-1))
        q, k = self.q_norm(q), self.k_norm(k)
        cls_attn = None
        if self.return_cls_attn or self.softmax._forward_hooks:  # the map is read: compute it explicitly
            attn = self.softmax((q * scale) @ k.transpose(-2, -1))
            x = attn @ v
            if self.return_cls_attn:
                cls_attn = patch_attention(self.spec, attn)
        else:
            x = F.scaled_dot_product_attention(q, k, v, scale=scale)
        return self.proj(x.transpose(1, 2).reshape(B, N, -1)), cls_attn


class ConvMixer(nn.Module):
    """SPViT's convolution derived from an MSA block: the block's own value and output projections around
    a depthwise 3×3 kernel over the token grid (each head's channels share one 3×3 kernel, mapped from the
    heads by a learned head-to-offset table). Each prefix token takes the mean of all values, the output a
    uniform attention would give it."""

    def __init__(self, spec: ModelSpec, dim: int, heads: int, v: int):
        super().__init__()
        self.grid, self.prefix = spec.grid, spec.prefix
        width = heads * v
        self.v = nn.Linear(dim, width, bias=spec.qkv_bias)
        self.kernel = nn.Parameter(torch.zeros(width, 1, 3, 3))
        self.proj = nn.Linear(width, dim, bias=spec.proj_bias)

    def forward(self, x):
        B, N, _ = x.shape
        return self.proj(conv_mix(self.v(x), self.kernel, self.prefix, self.grid)), None


def activation(name: str) -> nn.Module:
    return {"gelu": lambda: nn.GELU(), "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "silu": nn.SiLU,
            "sigmoid": nn.Sigmoid}[name]()


def mlp_hidden(spec: ModelSpec, mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The hidden units of a timm-layout MLP (after its activation, or its gate): what the mlp axis prunes,
    one unit across the gate and value projections of a gated MLP."""
    if spec.mlp_kind == "swiglu":
        return mlp.act(mlp.fc1_g(x)) * mlp.fc1_x(x)
    h = mlp.fc1(x)
    if spec.mlp_kind == "glu":
        a, b = h.chunk(2, dim=-1)
        return a * mlp.act(b) if spec.gate_last else mlp.act(a) * b
    return mlp.act(h)


class Mlp(nn.Module):
    """timm's Mlp, SwiGLU or GluMlp layout (``spec.mlp_kind``) with ``hidden`` units."""

    def __init__(self, spec: ModelSpec, dim: int, hidden: int):
        super().__init__()
        self.spec = spec
        if spec.mlp_kind == "swiglu":
            self.fc1_g = nn.Linear(dim, hidden, bias=spec.proj_bias)
            self.fc1_x = nn.Linear(dim, hidden, bias=spec.proj_bias)
        else:
            self.fc1 = nn.Linear(dim, hidden * (2 if spec.mlp_kind == "glu" else 1), bias=spec.proj_bias)
        self.act = activation(spec.act)
        self.fc2 = nn.Linear(hidden, dim, bias=spec.proj_bias)

    def forward(self, x):
        return self.fc2(mlp_hidden(self.spec, self, x))


def conv_mix(v: torch.Tensor, kernel: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """SPViT's conv over values ``v`` [B, T, C]: depthwise 3×3 over the patch grid; prefix tokens get the mean."""
    B = v.shape[0]
    patches = v[:, prefix:].transpose(1, 2).reshape(B, -1, *grid)
    patches = F.conv2d(patches, kernel, padding=1, groups=patches.shape[1]).flatten(2).transpose(1, 2)
    if not prefix:  # no prefix token (*_gap models): torch's TorchScript ONNX exporter widens an expand to 0
        return patches
    return torch.cat([v.mean(dim=1, keepdim=True).expand(-1, prefix, -1), patches], dim=1)


def drop_tokens(x: torch.Tensor, scores: torch.Tensor, keep: int, prefix: int) -> torch.Tensor:
    """Keep the prefix tokens and the ``keep`` highest-scoring patch tokens (gathered densely)."""
    idx = scores.topk(keep, dim=1).indices
    patches = x[:, prefix:].gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return torch.cat([x[:, :prefix], patches], dim=1)


def summary_token(spec: ModelSpec, x: torch.Tensor) -> torch.Tensor:
    """The token a scorer compares patches with: the class token, or without one the mean patch."""
    return x[:, 0] if spec.class_token else x[:, spec.prefix:].mean(dim=1)


def readout(spec: ModelSpec, x: torch.Tensor, head: nn.Module) -> torch.Tensor:
    """Logits from the final tokens as timm's forward_head computes them; ``head`` holds ``norm``,
    ``fc_norm``, ``head`` (and ``head_dist``) as attributes or keys, present or Identity."""
    get = (lambda k: head[k]) if isinstance(head, nn.ModuleDict) else (lambda k: getattr(head, k))
    x = get("norm")(x)
    if spec.dist_token:
        return (get("head")(x[:, 0]) + get("head_dist")(x[:, 1])) / 2
    pooled = x[:, 0] if spec.pool == "token" else x[:, spec.prefix:].mean(dim=1)
    return get("head")(get("fc_norm")(pooled))


class Block(nn.Module):
    def __init__(self, spec: ModelSpec, dim: int, heads: int, qk: int, v: int, mlp: int, op: str,
                 keep_tokens: int | None, return_cls_attn: bool):
        super().__init__()
        self.spec = spec
        self.keep_tokens = keep_tokens  # patch tokens kept on entry; None = no drop here
        self.scorer = build_scorer(spec.scorer, dim, spec.embed_dim) if keep_tokens is not None else None
        self.norm1 = _norm(spec, dim)
        self.mixer = (Attention(spec, dim, heads, qk, v, return_cls_attn) if op == "msa"
                      else ConvMixer(spec, dim, heads, v))
        self.ls1 = LayerScale(dim) if spec.layer_scale else nn.Identity()
        self.norm2 = _norm(spec, dim)
        self.mlp = Mlp(spec, dim, mlp)
        self.ls2 = LayerScale(dim) if spec.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor, cls_attn: torch.Tensor | None):
        if self.scorer is not None:
            p = self.spec.prefix
            scores = self.scorer(x[:, p:], summary_token(self.spec, x), cls_attn)
            x = drop_tokens(x, scores, self.keep_tokens, p)
        y, attn = self.mixer(self.norm1(x))
        x = x + self.ls1(y)
        x = x + self.ls2(self.mlp(self.norm2(x)))
        return x, (attn if attn is not None else cls_attn)


def token_plan(spec: ModelSpec, cfg: SubnetConfig) -> list[tuple[int | None, bool]]:
    """Per kept block: the patch tokens it keeps on entry (None: it drops none) and whether its attention
    returns the class-token map (only an MSA block whose map scores a later drop). Read by the module and by
    the latency table's shape terms, which need it without building a module."""
    tokens = [tokens_kept(k, spec.num_patches) for k in cfg.keep]
    drops = [t < e for t, e in zip(tokens, [spec.num_patches] + tokens[:-1])]
    scores_a_drop = [False] * cfg.depth
    last_msa = None
    for i in range(cfg.depth):
        if drops[i] and last_msa is not None:
            scores_a_drop[last_msa] = True
        if cfg.ops[i] == "msa":
            last_msa = i
    return [(t if d else None, r) for t, d, r in zip(tokens, drops, scores_a_drop)]


class SubnetViT(nn.Module):
    """A ViT of one subnet's shape; holds plain data (``spec``, ``cfg``) and its own weights only."""

    def __init__(self, spec: ModelSpec, cfg: SubnetConfig):
        super().__init__()
        self.spec, self.cfg = spec, cfg
        dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(spec, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if spec.class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if spec.dist_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, spec.reg_tokens, dim)) if spec.reg_tokens else None
        embedded = spec.num_patches + (spec.prefix if spec.embed_prefix else 0)
        self.pos_embed = nn.Parameter(torch.zeros(1, embedded, dim))
        self.norm_pre = _norm(spec, dim, spec.pre_norm)
        qk, v = cfg.head_widths(spec.head_dim)
        self.blocks = nn.ModuleList(
            Block(spec, dim, cfg.heads[i], qk[i], v[i], cfg.mlp[i], cfg.ops[i], keep, returns_map)
            for i, (keep, returns_map) in enumerate(token_plan(spec, cfg)))
        self.norm = _norm(spec, dim, spec.final_norm)
        self.fc_norm = _norm(spec, dim, spec.fc_norm)
        self.head = nn.Linear(dim, spec.num_classes)
        self.head_dist = nn.Linear(dim, spec.num_classes) if spec.dist_token else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm_pre(add_position(self.spec, self.patch_embed(x), self.pos_embed,
                                       [self.cls_token, self.dist_token, self.reg_token]))
        cls_attn = None
        for blk in self.blocks:
            x, cls_attn = blk(x, cls_attn)
        return readout(self.spec, x, self)


def add_position(spec: ModelSpec, patches: torch.Tensor, pos_embed: torch.Tensor,
                 prefix: list[torch.Tensor | None]) -> torch.Tensor:
    """Prefix tokens (those not None, in this order) before the patches, and the position embedding, as timm's
    ``_pos_embed`` does: over the prefix too, or (``no_embed_class``) over the patches only."""
    B = patches.shape[0]
    prefix = [t.expand(B, -1, -1) for t in prefix if t is not None]
    if spec.embed_prefix:
        return torch.cat(prefix + [patches], dim=1) + pos_embed
    return torch.cat(prefix + [patches + pos_embed], dim=1)


def build_subnet(spec: ModelSpec, cfg: SubnetConfig, device: torch.device | str | None = None) -> SubnetViT:
    """The module for ``cfg``; on the ``meta`` device it costs no memory (weights are supplied later)."""
    with torch.device(device) if device is not None else nullcontext():
        return SubnetViT(spec, cfg)


def conv_kernel(offsets: torch.Tensor, heads: int, v: int) -> torch.Tensor:
    """Depthwise 3×3 kernel for the first ``heads`` heads, ``v`` value channels each, from a [num_heads, 9]
    head-to-offset table."""
    return offsets[:heads].repeat_interleave(v, dim=0).view(heads * v, 1, 3, 3)

