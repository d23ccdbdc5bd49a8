"""Files that other processes may read while they are written (caches, resumable state)."""
from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

# what torch.load raises on a cut-short, overwritten or foreign file
UNREADABLE = (OSError, EOFError, RuntimeError, pickle.UnpicklingError)


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a temporary file of its own next to ``path``, then rename it over ``path``: a reader
    never sees half a file, an interrupted write leaves the last good one, and concurrent writers never share
    a temporary name (the last rename wins)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: Path | None, device, log: Callable[[str], None], then: str) -> dict | None:
    """A state this program saved (``torch.load``, weights only), or None when there is none or it cannot be
    read (then reported with its path and ``then``, what happens instead)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except UNREADABLE as e:
        log(f"{path} is unreadable ({type(e).__name__}); {then}")
        return None
