"""What a model card says about the model: its base, its datasets, its license; local paths in a Hub model's
card are set aside, never resolved."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, InputError
from ..references import is_local_reference
from .resolve import ResolvedModel

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- model cards
def _local_ref(value: Any, base_dir: Path) -> Any:
    """Resolve a relative local path written in a local model's card against the model directory."""
    if not isinstance(value, str) or not value:
        return value
    if value.startswith(("./", "../", "~")) or value in (".", ".."):
        return str((base_dir / Path(value).expanduser()).resolve())
    if os.path.isabs(value):
        return value
    candidate = base_dir / value
    return str(candidate.resolve()) if candidate.exists() else value


#: At most this much of a README is read for its front matter (cards travel between people: untrusted).
MAX_CARD_BYTES = 4 << 20
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)(?:\r?\n)?^---[ \t]*\r?$", re.S | re.M)


def card_front_matter(readme: Path, reference: str) -> dict:
    """The YAML metadata between a README's ``---`` lines, parsed safely: at most :data:`MAX_CARD_BYTES` read, no
    YAML aliases (an alias bomb in a card cannot expand), ``{}`` without front matter.

    Raises:
        CheckpointError: unreadable, not UTF-8, not valid YAML, or using aliases.
    """
    import yaml

    from ..yaml_files import parse_yaml

    hint = f"fix the front matter between the '---' lines of {readme}"
    try:
        with open(readme, "rb") as f:
            text = f.read(MAX_CARD_BYTES).decode("utf-8")
    except UnicodeDecodeError as err:
        raise CheckpointError(f"the model card of {reference} is not UTF-8 text ({err.reason} at byte {err.start})",
                              hint=hint) from None
    except OSError as err:
        raise CheckpointError(f"cannot read the model card of {reference}: {err.strerror or err}") from None
    match = _FRONT_MATTER.match(text)
    if match is None:
        return {}
    try:
        meta = parse_yaml(match.group(1))
    except yaml.YAMLError as err:
        raise CheckpointError(f"the model card of {reference} has invalid YAML metadata: "
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__}", hint=hint) from None
    return meta if isinstance(meta, dict) else {}


def read_card_metadata(resolved: ResolvedModel) -> dict:
    """The YAML metadata of the model's README.md (``{}`` when there is no card or no metadata).

    For a local model, relative local paths in ``base_model`` and ``datasets`` (e.g. ``base_model: ../../base``)
    are resolved against the model directory, so they stay valid wherever the caller runs.

    Args:
        resolved: A resolved model.

    Returns:
        The metadata dict.

    Raises:
        CheckpointError: The README's front matter is not valid YAML.
    """
    readme = resolved.local_dir / "README.md"
    if not readme.is_file():
        return {}
    meta = card_front_matter(readme, resolved.reference)
    if resolved.is_local:
        for key in ("base_model", "datasets"):
            value = meta.get(key)
            if isinstance(value, list):
                meta[key] = [_local_ref(v, resolved.local_dir) for v in value]
            elif value is not None:
                meta[key] = _local_ref(value, resolved.local_dir)
        _local_base(meta, resolved.local_dir)
    else:
        _drop_local_paths(meta)
    return meta


#: Card fields that name other models or datasets, and where :func:`read_card_metadata` puts the local paths a
#: Hub model's card names (they are never resolved: they mean a folder on the machine that wrote the card).
_REFERENCE_FIELDS = ("base_model", "datasets", "hfdistac.base", "hfdistac.datasets")
LOCAL_PATHS_KEY = "_local_paths"


def _looks_local(value: object) -> bool:
    return isinstance(value, str) and (value.startswith((".", "/", "~", "\\")) or os.path.isabs(value))


def _drop_local_paths(meta: dict) -> None:
    """Remove the local paths a Hub model's card names (``base_model: ../../base``) from its reference fields and
    record them under :data:`LOCAL_PATHS_KEY`: resolving them against the reader's working directory would pick
    up whatever happens to lie there. :func:`local_paths_note` says what was found in an error message."""
    found: dict[str, str] = {}
    for name in _REFERENCE_FIELDS:
        owner, key = (meta.get("hfdistac"), name.split(".")[1]) if "." in name else (meta, name)
        if not isinstance(owner, dict) or key not in owner:
            continue
        value = owner[key]
        if isinstance(value, list):
            local = [v for v in value if _looks_local(v)]
            if local:
                found[name] = local[0] if len(local) == 1 else ", ".join(local)
            owner[key] = [v for v in value if not _looks_local(v)]
        elif _looks_local(value):
            found[name] = value
            owner.pop(key)
    if found:
        meta[LOCAL_PATHS_KEY] = found


def local_paths_note(meta: dict, *fields: str) -> str:
    """`` (its card names ... a local path ...)``: why a Hub model's card gave no usable reference, or ``""``."""
    found = meta.get(LOCAL_PATHS_KEY) if isinstance(meta, dict) else None
    shown = [f"{name}: {value!r}" for name, value in (found or {}).items() if name.split(".")[-1] in fields]
    if not shown:
        return ""
    return (f" (its card names {', '.join(shown)}: a local path on the machine that wrote the card, which is "
            "never resolved against this working directory)")


def _local_base(meta: dict, local_dir: Path) -> None:
    """A local base is not named in a published card (no local paths there): for a local folder, take it from
    the card's ``hfdistac.base`` resolved against the folder (the example suite's ``../../base``; its
    ``hfdistac.datasets`` likewise stand in for ``datasets``), else from
    the resolved settings or report an hfdistac output keeps beside its card (``hfdistac_config.json``,
    ``report.json``), when that folder still exists."""
    recorded = meta.get("hfdistac") if isinstance(meta.get("hfdistac"), dict) else None
    if recorded is not None and isinstance(recorded.get("datasets"), list) and not meta.get("datasets"):
        meta["datasets"] = [_local_ref(v, local_dir) for v in recorded["datasets"]]
    if recorded is not None and isinstance(recorded.get("base"), str) and recorded["base"].strip():
        recorded["base"] = _local_ref(recorded["base"].strip(), local_dir)
        return
    for name in ("hfdistac_config.json", "report.json"):  # condition keeps the base in the first, merge in the second
        try:
            saved = json.loads((local_dir / name).read_text()) if (local_dir / name).is_file() else {}
        except (OSError, ValueError):
            continue
        base = saved.get("base") if isinstance(saved, dict) else None
        if isinstance(base, str) and base and (not is_local_reference(base) or Path(base).expanduser().is_dir()):
            meta["hfdistac"] = {**(recorded or {}), "base": base}
            return


def card_base_model(meta: dict) -> str | None:
    """The ``base_model`` of card metadata (the first one when the card lists several), or ``None``.

    Args:
        meta: Card metadata, as returned by :func:`read_card_metadata`.

    Returns:
        A reference usable with :func:`resolve_model`, or ``None``.
    """
    value = meta.get("base_model") if isinstance(meta, dict) else None
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str) and v.strip()), None)
    return value.strip() if isinstance(value, str) and value.strip() else None


def infer_base(meta: dict, reference: str, given: str | None = None) -> str:
    """The pretrained base of a model: ``given`` (``--base``), else the card's ``hfdistac.base`` (written by
    hfdistac outputs, whose ``base_model`` names the *source* models), else the card's ``base_model``.

    Args:
        meta: Card metadata of the model (:func:`read_card_metadata`).
        reference: The model reference (for the error message).
        given: An explicit base, which always wins.

    Raises:
        InputError: when none of them names a base.
    """
    if given:
        return given
    recorded = meta.get("hfdistac") if isinstance(meta, dict) else None
    if isinstance(recorded, dict) and isinstance(recorded.get("base"), str) and recorded["base"].strip():
        return recorded["base"].strip()
    base = card_base_model(meta)
    if base is None:
        raise InputError(f"no --base given and the card of {reference!r} names no base_model"
                         + local_paths_note(meta, "base_model", "base"),
                         hint="pass --base with the base's Hub id or local folder, e.g. --base "
                              "openai/clip-vit-base-patch32")
    return base


def card_datasets(meta: dict) -> list[str]:
    """The ``datasets`` of card metadata as a list (empty when absent).

    Args:
        meta: Card metadata, as returned by :func:`read_card_metadata`.

    Returns:
        Dataset references.
    """
    value = meta.get("datasets") if isinstance(meta, dict) else None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [str(v).strip() for v in value if v is not None and str(v).strip()]


