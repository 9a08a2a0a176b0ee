"""Atomic output directories: write into a temporary sibling, rename into place on success.

A failed or interrupted command leaves nothing half-written at the destination: the temporary folder is
removed on error (and a stale one from a killed run is ignored and can be deleted).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from .errors import InputError


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except (ValueError, RuntimeError):
            pass
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (temp file + rename); dataclasses, tensors scalars and NaN handled."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def check_destination(path: str | Path, overwrite: bool) -> Path:
    """Fail early (before any work) when the destination exists and may not be replaced."""
    p = Path(path).expanduser()
    if p.exists() and not overwrite:
        if p.is_dir() and not any(p.iterdir()):
            return p
        raise InputError(f"output {str(p)!r} already exists", "choose another --output or pass --overwrite")
    if p.exists() and not p.is_dir():
        raise InputError(f"output {str(p)!r} exists and is not a directory")
    return p


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` when the block succeeds.

    Args:
        path: The final directory.
        overwrite: Replace an existing non-empty directory.
    """
    final = check_destination(path, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{tmp.name[-8:]}")
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
