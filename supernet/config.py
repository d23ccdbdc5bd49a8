"""A subnet is plain data: one dataclass that round-trips through YAML unchanged."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

CONFIG_VERSION = 1
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
    version: int = CONFIG_VERSION

    def to_dict(self) -> dict:
        d = asdict(self)
        return {"version": d.pop("version"), **d}

    @classmethod
    def from_dict(cls, d: dict) -> "SubnetConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"a subnet config must be a mapping, got {type(d).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ConfigError(f"unknown subnet config key(s) {unknown}; valid keys are {valid}")
        missing = sorted(set(valid) - set(d) - {"version"})
        if missing:
            raise ConfigError(f"subnet config is missing {missing}; valid keys are {valid}")
        version = d.get("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ConfigError(f"subnet config version {version} is not supported (this vitnas reads "
                              f"version {CONFIG_VERSION})")
        def whole(v):  # no silent coercion: 48.9 or true is not a width
            return isinstance(v, int) and not isinstance(v, bool)

        def fraction(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        for key, ok, what in (("embed_dim", whole, "a whole number"), ("depth", whole, "a whole number")):
            if not ok(d[key]):
                raise ConfigError(f"subnet config {key} must be {what}, got {d[key]!r}")
        for key, ok, what in (("heads", whole, "whole numbers"), ("mlp", whole, "whole numbers"),
                              ("ops", lambda v: v in OPS, f"one of {list(OPS)}"), ("keep", fraction, "fractions")):
            if not isinstance(d[key], list) or not all(ok(v) for v in d[key]):
                raise ConfigError(f"subnet config {key} must be a list of {what}, got {d[key]!r}")
        return cls(embed_dim=d["embed_dim"], depth=d["depth"], heads=list(d["heads"]), mlp=list(d["mlp"]),
                   ops=list(d["ops"]), keep=[float(v) for v in d["keep"]])

    def to_yaml(self, path: str | Path | None = None, extra: dict | None = None) -> str:
        """YAML text (lists in flow style, one line per axis); written to ``path`` when given.

        ``extra`` (metrics, provenance) is written after the config keys; ``from_yaml`` ignores it.
        """
        lines = [f"version: {self.version}", f"embed_dim: {self.embed_dim}", f"depth: {self.depth}"]
        for key in ("heads", "mlp", "ops", "keep"):
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
                tuple(self.keep))
