"""The prunable structure of the supernet, declared once.

``shared_tensors`` names every shared tensor that holds units of a prunable axis and how: the tensor seen as
groups of dimensions (a head is ``head_dim`` consecutive rows of qkv), and which of those dimensions are
axes. ``subnet_layout`` says which shared tensor each weight of a ``SubnetViT`` is cut from. Slicing
(``Supernet.subnet_weights``), importance reordering, magnitude importance and WDPruning's initial
saliencies read these two and nothing else, so an axis or a layer is described in one place.

An axis is ``"embed"`` (embedding channels, shared by every block) or ``"heads.i"`` / ``"mlp.i"`` (block i's
heads / MLP hidden units). Every axis is sorted by importance, so a subnet takes the *first* k units.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .config import SubnetConfig
from .scorers import SCORERS
from .subnet import ModelSpec, conv_kernel


@dataclass(frozen=True)
class Shared:
    """A shared tensor (``row`` of it, if set) seen as ``groups``: each of its dimensions split into
    sub-dimensions; ``axes`` maps a flat sub-dimension to the axis whose units it holds."""

    groups: tuple[tuple[int, ...], ...]
    axes: dict[int, str] = field(default_factory=dict)
    row: int | None = None

    def view(self, t: torch.Tensor) -> torch.Tensor:
        return (t if self.row is None else t[self.row]).view([n for g in self.groups for n in g])


@dataclass(frozen=True)
class Cut:
    """A subnet weight: shared tensor ``name`` cut to the subnet's axis sizes; ``pick`` selects one index of
    a sub-dimension (the value third of qkv for SPViT's conv), ``make`` derives the weight from the cut."""

    name: str
    pick: dict[int, int] = field(default_factory=dict)
    make: Callable[[torch.Tensor], torch.Tensor] | None = None


def _whole(shape) -> tuple[tuple[int, ...], ...]:
    return tuple((n,) for n in shape)


def shared_tensors(sn) -> dict[str, Shared]:
    """Every supernet tensor a subnet is cut from, by its name in ``sn.named_parameters()`` (the supernet
    keeps this as ``sn.shared``)."""
    s: ModelSpec = sn.spec
    E, H, hd = s.embed_dim, s.num_heads, s.head_dim
    params = dict(sn.named_parameters())
    out: dict[str, Shared] = {}

    def embed_last(name):  # a vector or token of embedding channels in the last dimension
        shape = params[name].shape
        out[name] = Shared(_whole(shape), {len(shape) - 1: "embed"})

    def norm(prefix):
        for p in ("weight", "bias"):
            if f"{prefix}.{p}" in params:
                embed_last(f"{prefix}.{p}")

    def linear(prefix, out_axis, in_axis, out_groups=None, in_groups=None):
        """A Linear whose output units are ``out_axis`` and inputs ``in_axis`` (None: whole)."""
        w = params[f"{prefix}.weight"]
        og, ig = out_groups or (w.shape[0],), in_groups or (w.shape[1],)
        axes = {}
        if out_axis:
            axes[out_axis[0]] = out_axis[1]
        if in_axis:
            axes[len(og) + in_axis[0]] = in_axis[1]
        out[f"{prefix}.weight"] = Shared((og, ig), axes)
        if f"{prefix}.bias" in params:
            out[f"{prefix}.bias"] = Shared((og,), {k: v for k, v in axes.items() if k < len(og)})

    w = params["vit.patch_embed.proj.weight"]
    out["vit.patch_embed.proj.weight"] = Shared(_whole(w.shape), {0: "embed"})
    out["vit.patch_embed.proj.bias"] = Shared(((E,),), {0: "embed"})
    for name in ("vit.patch_embed.norm", "vit.norm_pre"):
        norm(name)
    for name in ("vit.cls_token", "vit.dist_token", "vit.reg_token", "vit.pos_embed"):
        if name in params:
            embed_last(name)
    for i in range(s.depth):
        b, heads, mlp = f"vit.blocks.{i}", f"heads.{i}", f"mlp.{i}"
        norm(f"{b}.norm1")
        norm(f"{b}.norm2")
        linear(f"{b}.attn.qkv", (1, heads), (0, "embed"), out_groups=(3, H, hd))
        linear(f"{b}.attn.proj", (0, "embed"), (0, heads), in_groups=(H, hd))
        for qk in ("q_norm", "k_norm"):  # per head-dimension: never cut
            for p in ("weight", "bias"):
                if f"{b}.attn.{qk}.{p}" in params:
                    out[f"{b}.attn.{qk}.{p}"] = Shared(((hd,),))
        if s.mlp_kind == "swiglu":  # a hidden unit is one row of each of the gate and value projections
            linear(f"{b}.mlp.fc1_g", (0, mlp), (0, "embed"))
            linear(f"{b}.mlp.fc1_x", (0, mlp), (0, "embed"))
        elif s.mlp_kind == "glu":  # packed: [value | gate] (or the reverse), one row of each half per unit
            linear(f"{b}.mlp.fc1", (1, mlp), (0, "embed"), out_groups=(2, s.mlp_hidden))
        else:
            linear(f"{b}.mlp.fc1", (0, mlp), (0, "embed"))
        linear(f"{b}.mlp.fc2", (0, "embed"), (0, mlp))
        for ls in ("ls1", "ls2"):
            if f"{b}.{ls}.gamma" in params:
                embed_last(f"{b}.{ls}.gamma")
        out[f"conv_offsets#{i}"] = Shared(((H,), (9,)), {0: heads}, row=i)
    for head in ["vit"] + [f"exits.{d}" for d in sn.exits]:
        norm(f"{head}.norm")
        norm(f"{head}.fc_norm")
        for classifier in ("head", "head_dist"):
            if f"{head}.{classifier}.weight" in params:
                linear(f"{head}.{classifier}", None, (0, "embed"))
    for scorer, blocks in sn.token_scorers.items():
        embed_dims = SCORERS[scorer].embed_dims
        for i, module in enumerate(blocks):
            for p, t in module.named_parameters():
                axes = {embed_dims[p]: "embed"} if p in embed_dims else {}
                out[f"token_scorers.{scorer}.{i}.{p}"] = Shared(_whole(t.shape), axes)
    return out


def subnet_layout(sn, cfg: SubnetConfig, template) -> dict[str, Cut]:
    """Each weight of ``cfg``'s ``SubnetViT`` (``template``, by its state-dict names) and the shared tensor it is
    cut from (``Supernet.template`` keeps it with the template).
    The subnet names its weights as the base model does, but for the mixer (``attn`` in timm), the
    classifier (that of its depth) and its token scorer (that of its block)."""
    s: ModelSpec = sn.spec
    classifier = "vit" if cfg.depth == s.depth else f"exits.{cfg.depth}"
    layout: dict[str, Cut] = {}
    for key in template.state_dict():
        top, *rest = key.split(".")
        if top in ("norm", "fc_norm", "head", "head_dist"):
            layout[key] = Cut(f"{classifier}.{key}")
        elif top != "blocks":
            layout[key] = Cut(f"vit.{key}")
        elif rest[1] == "scorer":
            layout[key] = Cut(f"token_scorers.{s.scorer}.{rest[0]}.{'.'.join(rest[2:])}")
        elif rest[1:] == ["mixer", "kernel"]:  # SPViT's 3×3 kernel, made from this block's offset table
            h = cfg.heads[int(rest[0])]
            layout[key] = Cut(f"conv_offsets#{rest[0]}", make=lambda o, h=h: conv_kernel(o, h, s.head_dim))
        elif rest[1:3] == ["mixer", "v"]:  # SPViT's conv reuses the value third of this block's qkv
            layout[key] = Cut(f"vit.blocks.{rest[0]}.attn.qkv.{rest[3]}", pick={0: 2})
        else:
            layout[key] = Cut("vit." + key.replace(".mixer.", ".attn.", 1))
    return layout


def axis_sizes(cfg: SubnetConfig) -> dict[str, int]:
    """How many units of each axis ``cfg`` keeps."""
    sizes = {"embed": cfg.embed_dim}
    for i in range(cfg.depth):
        sizes[f"heads.{i}"], sizes[f"mlp.{i}"] = cfg.heads[i], cfg.mlp[i]
    return sizes


def tensor(sn, name: str) -> torch.Tensor:
    """The whole shared tensor ``name`` refers to (a ``#row`` suffix names a row of it)."""
    return sn.get_parameter(name.split("#")[0])


def cut(t: torch.Tensor, shared: Shared, sizes: dict[str, int], pick: dict[int, int] | None = None
        ) -> torch.Tensor:
    """``t`` cut to the first ``sizes[axis]`` units of each axis (a view where the layout allows)."""
    v = shared.view(t)
    for dim, axis in shared.axes.items():
        v = v.narrow(dim, 0, sizes[axis])
    kept = [d for d in range(v.dim()) if d not in (pick or {})]
    for dim, index in sorted((pick or {}).items(), reverse=True):
        v = v.select(dim, index)
    shape, flat = [], 0
    for g in shared.groups:  # merge each original dimension's remaining sub-dimensions back
        dims = [d for d in range(flat, flat + len(g)) if d in kept]
        shape.append(math.prod(v.shape[kept.index(d)] for d in dims))
        flat += len(g)
    return v.reshape(shape)


def subnet_weights(sn, cfg: SubnetConfig) -> dict[str, torch.Tensor]:
    """The subnet's weights, named as in ``SubnetViT``, cut from the shared tensors (views where possible)."""
    shared, sizes = sn.shared, axis_sizes(cfg)
    weights = {}
    for key, c in sn.template(cfg).layout.items():
        w = cut(tensor(sn, c.name), shared[c.name], sizes, c.pick)
        weights[key] = c.make(w) if c.make else w
    return weights


def unit_magnitudes(sn) -> dict[str, torch.Tensor]:
    """Per axis, each unit's L1 norm over every shared weight it owns."""
    scores: dict[str, torch.Tensor] = {}
    for name, shared in sn.shared.items():
        v = shared.view(tensor(sn, name)).detach().abs()
        for dim, axis in shared.axes.items():
            others = [d for d in range(v.dim()) if d != dim]
            per_unit = v.sum(dim=others) if others else v  # (sum over an empty list would sum everything)
            scores[axis] = scores[axis] + per_unit if axis in scores else per_unit
    return scores


@torch.no_grad()
def permute(sn, orders: dict[str, torch.Tensor]) -> None:
    """Permute every shared tensor's units in place (``orders[axis]``: new position -> old unit), so that
    optimisers keep pointing at the same parameters."""
    for name, shared in sn.shared.items():
        v = shared.view(tensor(sn, name))
        for dim, axis in shared.axes.items():
            if axis in orders:
                v.copy_(v.index_select(dim, orders[axis].to(v.device)))
