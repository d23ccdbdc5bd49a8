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
    act: str = "gelu"            # "gelu" or "gelu_tanh"
    scorer: str = "cls_attention"

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


class Attention(nn.Module):
    """Multi-head self-attention over ``heads`` whole heads of the base model's head width."""

    def __init__(self, spec: ModelSpec, dim: int, heads: int, return_cls_attn: bool):
        super().__init__()
        self.heads, self.head_dim = heads, spec.head_dim
        self.return_cls_attn = return_cls_attn  # only the block whose attention scores a later token drop
        self.qkv = nn.Linear(dim, 3 * heads * spec.head_dim, bias=spec.qkv_bias)
        self.q_norm = _norm(spec, spec.head_dim, spec.qk_norm)
        self.k_norm = _norm(spec, spec.head_dim, spec.qk_norm)
        self.proj = nn.Linear(heads * spec.head_dim, dim, bias=spec.proj_bias)

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        cls_attn = None
        if self.return_cls_attn:
            attn = ((q * self.head_dim ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
            x = attn @ v
            cls_attn = attn[:, :, 0, 1:].mean(dim=1)
        else:
            x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, -1)), cls_attn


class ConvMixer(nn.Module):
    """SPViT's convolution derived from an MSA block: the block's own value and output projections around
    a depthwise 3×3 kernel over the token grid (each head's channels share one 3×3 kernel, mapped from the
    heads by a learned head-to-offset table). The class token takes the mean of all values, the output a
    uniform attention would give it."""

    def __init__(self, spec: ModelSpec, dim: int, heads: int):
        super().__init__()
        self.grid = spec.grid
        width = heads * spec.head_dim
        self.v = nn.Linear(dim, width, bias=spec.qkv_bias)
        self.kernel = nn.Parameter(torch.zeros(width, 1, 3, 3))
        self.proj = nn.Linear(width, dim, bias=spec.proj_bias)

    def forward(self, x):
        B, N, _ = x.shape
        v = self.v(x)
        patches = v[:, 1:].transpose(1, 2).reshape(B, -1, *self.grid)
        patches = F.conv2d(patches, self.kernel, padding=1, groups=patches.shape[1])
        out = torch.cat([v.mean(dim=1, keepdim=True), patches.flatten(2).transpose(1, 2)], dim=1)
        return self.proj(out), None


class Mlp(nn.Module):
    def __init__(self, spec: ModelSpec, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=spec.proj_bias)
        self.act = nn.GELU(approximate="tanh" if spec.act == "gelu_tanh" else "none")
        self.fc2 = nn.Linear(hidden, dim, bias=spec.proj_bias)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def drop_tokens(x: torch.Tensor, scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Keep the class token and the ``keep`` highest-scoring patch tokens (gathered densely)."""
    idx = scores.topk(keep, dim=1).indices
    patches = x[:, 1:].gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return torch.cat([x[:, :1], patches], dim=1)


class Block(nn.Module):
    def __init__(self, spec: ModelSpec, dim: int, heads: int, mlp: int, op: str,
                 keep_tokens: int | None, return_cls_attn: bool):
        super().__init__()
        self.keep_tokens = keep_tokens  # patch tokens kept on entry; None = no drop here
        self.scorer = build_scorer(spec.scorer, dim, spec.embed_dim) if keep_tokens is not None else None
        self.norm1 = _norm(spec, dim)
        self.mixer = (Attention(spec, dim, heads, return_cls_attn) if op == "msa"
                      else ConvMixer(spec, dim, heads))
        self.ls1 = LayerScale(dim) if spec.layer_scale else nn.Identity()
        self.norm2 = _norm(spec, dim)
        self.mlp = Mlp(spec, dim, mlp)
        self.ls2 = LayerScale(dim) if spec.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor, cls_attn: torch.Tensor | None):
        if self.scorer is not None:
            x = drop_tokens(x, self.scorer(x, cls_attn), self.keep_tokens)
        y, attn = self.mixer(self.norm1(x))
        x = x + self.ls1(y)
        x = x + self.ls2(self.mlp(self.norm2(x)))
        return x, (attn if attn is not None else cls_attn)


def drop_blocks(spec: ModelSpec, cfg: SubnetConfig) -> list[bool]:
    """Which kept blocks drop tokens on entry (fewer tokens kept than entered)."""
    tokens = [tokens_kept(k, spec.num_patches) for k in cfg.keep]
    return [t < e for t, e in zip(tokens, [spec.num_patches] + tokens[:-1])]


class SubnetViT(nn.Module):
    """A ViT of one subnet's shape; holds plain data (``spec``, ``cfg``) and its own weights only."""

    def __init__(self, spec: ModelSpec, cfg: SubnetConfig):
        super().__init__()
        self.spec, self.cfg = spec, cfg
        dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(spec, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + spec.num_patches, dim))
        self.norm_pre = _norm(spec, dim, spec.pre_norm)
        tokens = [tokens_kept(k, spec.num_patches) for k in cfg.keep]
        drops = drop_blocks(spec, cfg)
        # an MSA block returns its class-token attention only if a later drop would read it
        scored_by = [None] * cfg.depth
        last_msa = None
        for i in range(cfg.depth):
            if drops[i] and last_msa is not None:
                scored_by[last_msa] = i
            if cfg.ops[i] == "msa":
                last_msa = i
        self.blocks = nn.ModuleList(
            Block(spec, dim, cfg.heads[i], cfg.mlp[i], cfg.ops[i],
                  tokens[i] if drops[i] else None, scored_by[i] is not None)
            for i in range(cfg.depth))
        self.norm = _norm(spec, dim)
        self.head = nn.Linear(dim, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm_pre(x)
        cls_attn = None
        for blk in self.blocks:
            x, cls_attn = blk(x, cls_attn)
        return self.head(self.norm(x[:, 0]))


def build_subnet(spec: ModelSpec, cfg: SubnetConfig, device: torch.device | str | None = None) -> SubnetViT:
    """The module for ``cfg``; on the ``meta`` device it costs no memory (weights are supplied later)."""
    with torch.device(device) if device is not None else nullcontext():
        return SubnetViT(spec, cfg)


def conv_kernel(offsets: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """Depthwise 3×3 kernel for the first ``heads`` heads from a [num_heads, 9] head-to-offset table."""
    return offsets[:heads].repeat_interleave(head_dim, dim=0).view(heads * head_dim, 1, 3, 3)

