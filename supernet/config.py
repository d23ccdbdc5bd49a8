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
        try:
            return cls(embed_dim=int(d["embed_dim"]), depth=int(d["depth"]),
                       heads=[int(v) for v in d["heads"]], mlp=[int(v) for v in d["mlp"]],
                       ops=[str(v) for v in d["ops"]], keep=[float(v) for v in d["keep"]])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"subnet config has a value of the wrong type ({e}); embed_dim and depth "
                              "are integers, heads/mlp lists of integers, ops a list of "
                              f"{'/'.join(OPS)}, keep a list of fractions") from None

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
        text = path.read_text() if is_file else str(path_or_text)
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
