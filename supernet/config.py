"""A subnet is plain data: one dataclass that round-trips through YAML unchanged."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import yaml

CONFIG_VERSION = 2  # 2 added qk and v; a version-1 file (whole heads only) reads as full head widths
OPS = ("msa", "conv")


class ConfigError(ValueError):
    """The user's input (a command-line value, a config, a file, data) breaks a rule; the message says which
    and what to do. The CLI prints it as one line; any other exception is a bug and keeps its traceback."""


@dataclass
class SubnetConfig:
    embed_dim: int
    depth: int
    heads: list[int]
    mlp: list[int]
    ops: list[str]
    keep: list[float]
    qk: list[int] | None = None   # per block: query/key width of each head; None: the base model's head width
    v: list[int] | None = None    # per block: value width of each head; None: the base model's head width
    version: int = CONFIG_VERSION

    def to_dict(self) -> dict:
        d = asdict(self)
        return {"version": d.pop("version"), **{k: d[k] for k in KEYS if d[k] is not None}}

    def head_widths(self, head_dim: int) -> tuple[list[int], list[int]]:
        """(qk, v) per kept block, the base model's ``head_dim`` where the config leaves them unset."""
        return (list(self.qk) if self.qk is not None else [head_dim] * self.depth,
                list(self.v) if self.v is not None else [head_dim] * self.depth)

    def first(self, depth: int) -> "SubnetConfig":
        """The config of this one's first ``depth`` blocks."""
        return replace(self, depth=depth, **{k: getattr(self, k)[:depth] for k in LISTS if getattr(self, k) is not None})

    @classmethod
    def from_dict(cls, d: dict) -> "SubnetConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"a subnet config must be a mapping, got {type(d).__name__}")
        valid = ["version", *KEYS]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ConfigError(f"unknown subnet config key(s) {unknown}; valid keys are {valid}")
        missing = sorted(set(valid) - set(d) - {"version", *OPTIONAL})
        if missing:
            raise ConfigError(f"subnet config is missing {missing}; valid keys are {valid}")
        version = d.get("version", CONFIG_VERSION)
        if version not in (1, CONFIG_VERSION):
            raise ConfigError(f"subnet config version {version} is not supported (this vitnas reads "
                              f"versions 1 and {CONFIG_VERSION})")
        def whole(v):  # no silent coercion: 48.9 or true is not a width
            return isinstance(v, int) and not isinstance(v, bool)

        def fraction(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        for key, ok, what in (("embed_dim", whole, "a whole number"), ("depth", whole, "a whole number")):
            if not ok(d[key]):
                raise ConfigError(f"subnet config {key} must be {what}, got {d[key]!r}")
        for key, ok, what in (("heads", whole, "whole numbers"), ("qk", whole, "whole numbers"),
                              ("v", whole, "whole numbers"), ("mlp", whole, "whole numbers"),
                              ("ops", lambda v: v in OPS, f"one of {list(OPS)}"), ("keep", fraction, "fractions")):
            if key in OPTIONAL and d.get(key) is None:
                continue
            if not isinstance(d[key], list) or not all(ok(v) for v in d[key]):
                raise ConfigError(f"subnet config {key} must be a list of {what}, got {d[key]!r}")
        optional = {k: list(d[k]) for k in OPTIONAL if d.get(k) is not None}
        return cls(embed_dim=d["embed_dim"], depth=d["depth"], heads=list(d["heads"]), mlp=list(d["mlp"]),
                   ops=list(d["ops"]), keep=[float(v) for v in d["keep"]], **optional)

    def to_yaml(self, path: str | Path | None = None, extra: dict | None = None) -> str:
        """YAML text (lists in flow style, one line per axis); written to ``path`` when given.

        ``extra`` (metrics, provenance) is written after the config keys; ``from_yaml`` ignores it.
        """
        lines = [f"version: {self.version}", f"embed_dim: {self.embed_dim}", f"depth: {self.depth}"]
        for key in LISTS:
            if getattr(self, key) is not None:
                lines.append(f"{key}: {yaml.safe_dump(getattr(self, key), default_flow_style=True).strip()}")
        text = "\n".join(lines) + "\n"
        if extra:
            text += yaml.safe_dump(extra, sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> "SubnetConfig":
        """Read a config file (extra keys such as ``metrics`` or ``provenance`` are ignored)."""
        path = Path(path_or_text)
        is_file = "\n" not in str(path_or_text) and path.exists()
        try:
            text = path.read_text() if is_file else str(path_or_text)
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not a text (YAML) subnet config") from None
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path if is_file else '<text>'}" + (f", line {mark.line + 1}" if mark else "")
            raise ConfigError(f"malformed YAML in {where}: {getattr(e, 'problem', e)}") from None
        if isinstance(d, dict):
            d = {k: v for k, v in d.items() if k not in ("metrics", "provenance")}
        return cls.from_dict(d)

    def key(self) -> tuple:
        """Hashable identity (cache key for templates and measurements)."""
        return (self.embed_dim, self.depth, tuple(self.heads), tuple(self.mlp), tuple(self.ops),
                tuple(self.keep), *(None if w is None else tuple(w) for w in (self.qk, self.v)))


LISTS = ("heads", "qk", "v", "mlp", "ops", "keep")  # the per-block keys, in the order files list them
KEYS = ("embed_dim", "depth", *LISTS)
OPTIONAL = ("qk", "v")
