"""Hub dataset revisions: resolved to a commit SHA once per process (and remembered for offline runs)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

def _looks_local(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or Path(ref).expanduser().exists() or ref.count("/") != 1


def _split_revision(ref: str) -> tuple[str, str | None]:
    if "@" in ref and not _looks_local(ref.split("@")[0]):
        repo, rev = ref.rsplit("@", 1)
        return repo, rev or None
    return ref, None


#: Hub dataset revisions resolved in this process: ``(repo, revision asked) -> commit SHA``.
_REVISIONS: dict[tuple[str, str | None], str] = {}


def dataset_revision(spec: Any) -> str | None:
    """The commit SHA a Hub dataset (a :class:`~.splits.DatasetSpec`) is read at: resolved once per process, then
    reused by every read (``None`` for local data, or when the Hub can be reached neither now nor before, e.g.
    offline and never resolved)."""
    if spec.is_local:
        return None
    ref, rev = _split_revision(spec.reference)
    if (ref, rev) not in _REVISIONS:
        try:
            from ..hub import resolve_dataset_revision

            _REVISIONS[(ref, rev)] = resolve_dataset_revision(ref, rev)
            _remember_revision(ref, rev, _REVISIONS[(ref, rev)])
        except Exception as e:  # noqa: BLE001 - datasets itself then says what is wrong with the reference
            known = _remembered_revision(ref, rev)
            if known is None:
                logger.debug("could not resolve dataset revision of %s: %s", ref, e)
                return None
            logger.info("dataset %s: the Hub cannot be reached; using commit %s, resolved on an earlier run", ref,
                        known)
            _REVISIONS[(ref, rev)] = known
        logger.info("dataset %s%s: commit %s", ref, f"@{rev}" if rev else "", _REVISIONS[(ref, rev)])
    return _REVISIONS[(ref, rev)]


def _revisions_file() -> Path:
    """Where the dataset commits resolved online are remembered, for offline runs (``$HF_HOME/hfdistac``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hfdistac" / "dataset_revisions.json"


def _remember_revision(ref: str, rev: str | None, sha: str) -> None:
    import json

    path = _revisions_file()
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
        if not isinstance(known, dict):
            known = {}
        known[f"{ref}@{rev or ''}"] = sha
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except (OSError, ValueError) as e:  # a cache: never fail the run for it (rebuilt on the next success)
        logger.debug("could not remember the revision of %s: %s", ref, e)


def _remembered_revision(ref: str, rev: str | None) -> str | None:
    import json

    try:
        sha = json.loads(_revisions_file().read_text()).get(f"{ref}@{rev or ''}")
    except (OSError, ValueError, AttributeError):
        return None
    return sha if isinstance(sha, str) and len(sha) == 40 else None
