"""All Hub I/O of hfdistac: model references, revision pinning, card metadata, and publishing.

One room per concern: :mod:`.resolve` (references pinned to a commit or a content hash, downloads verified against
the sha256 the Hub gives), :mod:`.card_metadata` (what a card says: base, datasets, license), :mod:`.push` (one
commit per folder, card pull requests) and :mod:`.http` (errors, retries, secrets). This package re-exports what
the rest of hfdistac uses.

A model reference is ``repo_id[@revision]`` or a local directory. Hub revisions are resolved to a commit SHA
once (and that SHA is what every later download and every provenance record uses); a local directory is
identified by a content hash of its weight files. Only what a CLIP merge needs is downloaded (config,
safetensors weights, README, tokenizer/processor files): pickle files are never fetched, let alone unpickled.

Everything goes through huggingface_hub with its defaults, so ``HF_TOKEN``, ``HF_HOME``, ``HF_HUB_OFFLINE`` and
``HF_ENDPOINT`` behave as in every other HF library. Errors become :class:`~hfdistac.errors.HubError` /
:class:`~hfdistac.errors.ReferenceNotFoundError` with one line saying what happened and a hint saying how to fix
it; the token never appears in any message or log line.
"""

from __future__ import annotations

from ..references import is_local_reference
from .card_metadata import (
    LOCAL_PATHS_KEY,
    card_base_model,
    card_datasets,
    infer_base,
    local_paths_note,
    read_card_metadata,
)
from .http import scrub_secrets
from .push import files_to_push, open_card_pr, push_folder
from .resolve import (
    DEFAULT_ALLOW_PATTERNS,
    NEVER_DOWNLOAD_PATTERNS,
    PICKLE_SUFFIXES,
    ResolvedModel,
    parse_reference,
    require_safetensors,
    resolve_dataset_revision,
    resolve_model,
)

__all__ = ["DEFAULT_ALLOW_PATTERNS", "LOCAL_PATHS_KEY", "NEVER_DOWNLOAD_PATTERNS", "PICKLE_SUFFIXES", "ResolvedModel",
           "card_base_model", "card_datasets", "files_to_push", "infer_base", "is_local_reference",
           "local_paths_note", "open_card_pr", "parse_reference", "push_folder", "read_card_metadata",
           "require_safetensors", "resolve_dataset_revision", "resolve_model", "scrub_secrets"]
