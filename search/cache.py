"""The cache under ``$VITNAS_CACHE`` (default ``~/.cache/vitnas``): where entries live and how they are named
(by their settings and the code that produces them)."""
from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import textwrap
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("VITNAS_CACHE", Path.home() / ".cache" / "vitnas"))


def code_identity(obj) -> str:
    """What the source of ``obj`` (a function, class or module) does, without its comments and docstrings:
    a cache keyed by it survives a comment edit, not a change of code."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def cache_key(obj, *code) -> str:
    """A cache entry's name: the settings ``obj`` and the code (functions, modules) that produces it."""
    h = hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode())
    for c in code:
        h.update(code_identity(c).encode())
    return h.hexdigest()[:16]


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
