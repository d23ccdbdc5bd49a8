"""The prunable structure of the supernet, declared once.

``shared_tensors`` names every shared tensor that holds units of a prunable axis and how: the tensor seen as
groups of dimensions (a head is ``head_dim`` consecutive rows of q), and which of those dimensions are
axes. ``subnet_layout`` says which shared tensor each weight of a ``SubnetViT`` is cut from. Slicing
(``Supernet.subnet_weights``), importance reordering, magnitude importance and WDPruning's initial
saliencies read these two and nothing else, so an axis or a layer is described in one place.

An axis is ``"embed"`` (embedding channels, shared by every block), ``"heads.i"`` / ``"mlp.i"`` (block i's
heads / MLP hidden units) or ``"qk.i"`` / ``"v.i"`` (the query/key and value channels *of each head* of block
i: units nested in the heads, ``NESTED``, so each head orders its own). Every axis is sorted by importance, so
a subnet takes the *first* k units.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .config import SubnetConfig
from .scorers import SCORERS
from .subnet import ModelSpec, conv_kernel

NESTED = ("qk", "v")  # axes whose units are counted within each head (the dimension before theirs)


def nested(axis: str) -> bool:
    return axis.split(".")[0] in NESTED


@dataclass(frozen=True)
class Shared:
    """A shared tensor (its ``part`` = (n, i): the i-th of n equal slices along dimension 0, if set) seen as
    ``groups``: each of its dimensions split into sub-dimensions; ``axes`` maps a flat sub-dimension to the
    axis whose units it holds (a nested axis comes right after the axis it is nested in)."""

    groups: tuple[tuple[int, ...], ...]
    axes: dict[int, str] = field(default_factory=dict)
    part: tuple[int, int] | None = None

    def view(self, t: torch.Tensor) -> torch.Tensor:
        if self.part is not None:
            t = t.unflatten(0, (self.part[0], -1))[self.part[1]]
        return t.view([n for g in self.groups for n in g])


@dataclass(frozen=True)
class Cut:
    """A subnet weight: the shared tensors ``parts`` (names in ``Supernet.shared``) each cut to the subnet's
    axis sizes and concatenated along dimension 0 (qkv is [q | k | v]); ``make`` derives the weight from
    the cut."""

    parts: tuple[str, ...]
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

    def linear(prefix, out_axis, in_axis, out_groups=None):
        """A Linear whose output units are ``out_axis`` and inputs ``in_axis`` (None: whole)."""
        w = params[f"{prefix}.weight"]
        og, ig = out_groups or (w.shape[0],), (w.shape[1],)
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
        for n, (part, width) in enumerate((("q", f"qk.{i}"), ("k", f"qk.{i}"), ("v", f"v.{i}"))):
            # qkv's rows are [q | k | v], each head-major: one Shared per third, its width axis per head
            # (q and k normalised over the whole head width, one norm weight for all heads: no qk axis)
            axes = {0: heads, 2: "embed"} | ({} if s.qk_norm and part != "v" else {1: width})
            out[f"{b}.attn.qkv.weight#{part}"] = Shared(((H, hd), (E,)), dict(sorted(axes.items())), (3, n))
            if f"{b}.attn.qkv.bias" in params:
                out[f"{b}.attn.qkv.bias#{part}"] = Shared(((H, hd),), {k: a for k, a in axes.items() if k < 2}, (3, n))
        out[f"{b}.attn.proj.weight"] = Shared(((E,), (H, hd)), {0: "embed", 1: heads, 2: f"v.{i}"})
        if f"{b}.attn.proj.bias" in params:
            embed_last(f"{b}.attn.proj.bias")
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
        out[f"conv_offsets#{i}"] = Shared(((H,), (9,)), {0: heads}, (s.depth, i))
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
            layout[key] = Cut((f"{classifier}.{key}",))
        elif top != "blocks":
            layout[key] = Cut((f"vit.{key}",))
        elif rest[1] == "scorer":
            layout[key] = Cut((f"token_scorers.{s.scorer}.{rest[0]}.{'.'.join(rest[2:])}",))
        elif rest[1:] == ["mixer", "kernel"]:  # SPViT's 3×3 kernel, made from this block's offset table
            i = int(rest[0])
            h, v = cfg.heads[i], cfg.head_widths(s.head_dim)[1][i]
            layout[key] = Cut((f"conv_offsets#{i}",), make=lambda o, h=h, v=v: conv_kernel(o, h, v))
        elif rest[1:3] == ["mixer", "v"]:  # SPViT's conv reuses the value third of this block's qkv
            layout[key] = Cut((f"vit.blocks.{rest[0]}.attn.qkv.{rest[3]}#v",))
        elif rest[1:3] == ["mixer", "qkv"]:
            layout[key] = Cut(tuple(f"vit.blocks.{rest[0]}.attn.qkv.{rest[3]}#{p}" for p in "qkv"))
        else:
            layout[key] = Cut(("vit." + key.replace(".mixer.", ".attn.", 1),))
    return layout


def axis_sizes(cfg: SubnetConfig, head_dim: int) -> dict[str, int]:
    """How many units of each axis ``cfg`` keeps (of a nested axis: in each kept unit of its parent)."""
    sizes = {"embed": cfg.embed_dim}
    qk, v = cfg.head_widths(head_dim)
    for i in range(cfg.depth):
        sizes[f"heads.{i}"], sizes[f"mlp.{i}"], sizes[f"qk.{i}"], sizes[f"v.{i}"] = cfg.heads[i], cfg.mlp[i], qk[i], v[i]
    return sizes


def tensor(sn, name: str) -> torch.Tensor:
    """The whole shared tensor ``name`` refers to (a ``#part`` suffix names a part of it)."""
    return sn.get_parameter(name.split("#")[0])


def cut(t: torch.Tensor, shared: Shared, sizes: dict[str, int]) -> torch.Tensor:
    """``t`` cut to the first ``sizes[axis]`` units of each axis (a view where the layout allows)."""
    v = shared.view(t)
    for dim, axis in shared.axes.items():
        v = v.narrow(dim, 0, sizes[axis])
    return v.reshape([math.prod(v.shape[d] for d in dims) for dims in _flat_dims(shared)])


def _flat_dims(shared: Shared) -> list[range]:
    """The flat sub-dimensions of each original dimension."""
    dims, flat = [], 0
    for g in shared.groups:
        dims.append(range(flat, flat + len(g)))
        flat += len(g)
    return dims


def subnet_weights(sn, cfg: SubnetConfig) -> dict[str, torch.Tensor]:
    """The subnet's weights, named as in ``SubnetViT``, cut from the shared tensors (views where possible)."""
    shared, sizes = sn.shared, axis_sizes(cfg, sn.spec.head_dim)
    weights = {}
    for key, c in sn.template(cfg).layout.items():
        parts = [cut(tensor(sn, name), shared[name], sizes) for name in c.parts]
        w = parts[0] if len(parts) == 1 else torch.cat(parts)
        weights[key] = c.make(w) if c.make else w
    return weights


def unit_magnitudes(sn) -> dict[str, torch.Tensor]:
    """Per axis, each unit's L1 norm over every shared weight it owns ([heads, width] for a nested axis)."""
    scores: dict[str, torch.Tensor] = {}
    for name, shared in sn.shared.items():
        v = shared.view(tensor(sn, name)).detach().abs()
        for dim, axis in shared.axes.items():
            own = (dim - 1, dim) if nested(axis) else (dim,)
            others = [d for d in range(v.dim()) if d not in own]
            per_unit = v.sum(dim=others) if others else v  # (sum over an empty list would sum everything)
            scores[axis] = scores[axis] + per_unit if axis in scores else per_unit
    return scores


@torch.no_grad()
def permute(sn, orders: dict[str, torch.Tensor]) -> None:
    """Permute every shared tensor's units in place (``orders[axis]``: new position -> old unit; for a nested
    axis one row per unit of its parent, in the parent's new order), so that optimisers keep pointing at the
    same parameters."""
    for name, shared in sn.shared.items():
        v = shared.view(tensor(sn, name))
        for dim, axis in shared.axes.items():  # in dimension order: a parent before the axis nested in it
            if axis not in orders:
                continue
            order = orders[axis].to(v.device)
            if nested(axis):  # each parent unit's own order, along dimension ``dim``
                shape = [1] * v.dim()
                shape[dim - 1], shape[dim] = order.shape
                v.copy_(v.gather(dim, order.view(shape).expand(v.shape)))
            else:
                v.copy_(v.index_select(dim, order))
