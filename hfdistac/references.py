"""What a model or dataset reference is: a local path or a Hub repo id (no I/O beyond a stat, no imports of the
HF stack), so that every module can ask, cards included, without importing the Hub client."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import CheckpointError


def is_local_reference(ref: str) -> bool:
    """Whether ``ref`` names a local path rather than a Hub repo.

    A reference is local when it exists on disk or starts with ``.``, ``/`` or ``~`` (a repo id never does), so a
    local directory is never parsed as a repo id and a mistyped local path is reported as a missing directory.

    Args:
        ref: A model or dataset reference.

    Returns:
        ``True`` for a local path.
    """
    ref = str(ref)
    return ref.startswith((".", "/", "~")) or os.path.isabs(ref) or Path(ref).expanduser().exists()


def file_inside_model(model_dir: Path, name: str) -> Path:
    """``model_dir / name`` once it is known to resolve inside the model's own folder, or inside the model's own
    Hub-cache entry (a snapshot's files link into the entry's ``blobs/``): a link elsewhere would copy any file
    of the machine into an output, and from there onto the Hub.

    Raises:
        CheckpointError: the file links out of the model.
    """
    path = Path(model_dir) / name
    target = path.resolve()
    folder = Path(model_dir).resolve()
    allowed = [folder]
    if folder.parent.name == "snapshots":  # <cache>/models--org--name/snapshots/<sha>: the entry holds the blobs
        allowed.append(folder.parent.parent)
    if not any(target == a or a in target.parents for a in allowed):
        raise CheckpointError(f"{str(path)!r} links outside its model ({str(target)!r}); it is not copied",
                              "replace the link by the file itself (hfdistac never copies a file from outside a "
                              "model's folder into an output)")
    return path


def regular_file_inside_model(model_dir: Path, name: str) -> Path:
    """:func:`file_inside_model`, and a regular file (a link to a device or a pipe would be read forever)."""
    path = file_inside_model(model_dir, name)
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise CheckpointError(f"{str(path)!r} cannot be read ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{str(path)!r} is not a regular file (a device, a pipe or a folder)",
                              "point hfdistac at a model folder holding its safetensors files")
    return path
