"""What a model or dataset reference is: a local path or a Hub repo id (no I/O beyond a stat, no imports of the
HF stack), so that every module can ask, cards included, without importing the Hub client."""

from __future__ import annotations

import os
from pathlib import Path


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
