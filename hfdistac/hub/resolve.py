"""Model references pinned to an exact version and made available locally: ``repo_id[@revision]`` resolved
to a commit SHA once, a local directory identified by a content hash of its weights."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError, HubError, InputError, ReferenceNotFoundError
from ..references import is_local_reference, regular_file_inside_model
from .http import _offline, _translate

logger = logging.getLogger(__name__)

#: What ``resolve_model`` downloads by default: config, safetensors weights (+ shard index), the card, and the
#: tokenizer / image-processor files (all ``*.json`` / ``*.txt``).
DEFAULT_ALLOW_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json", "README.md", "*.json", "*.txt"]
#: Never downloaded, whatever ``allow_patterns`` says: pickles and other frameworks' weights.
NEVER_DOWNLOAD_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt", "*.msgpack", "*.h5", "*.ot", "*.onnx"]
#: Weight files that would need unpickling: detected (to refuse them clearly), never loaded.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")

_HASH_CHUNK = 1 << 20
REPO_ID_RE = re.compile(r"^(?:[\w\-.]+/)?[\w\-.]+$")


# --------------------------------------------------------------------------------------------- references
def parse_reference(ref: str) -> tuple[str, str | None]:
    """Split a Hub reference ``repo_id[@revision]`` into its repo id and revision.

    Args:
        ref: ``"owner/name"``, ``"owner/name@branch"``, ``"owner/name@<commit sha>"`` or ``"name@refs/pr/3"``.

    Returns:
        ``(repo_id, revision)``; ``revision`` is ``None`` when not given (the default branch).

    Raises:
        InputError: ``ref`` is empty, is a local path, or is not a valid repo id.
    """
    ref = str(ref).strip()
    if not ref:
        raise InputError("empty model reference", hint="pass `owner/name[@revision]` or a local directory")
    if is_local_reference(ref):
        raise InputError(f"{ref!r} is a local path, not a Hub reference",
                         hint="use resolve_model() for references that may be local directories")
    repo_id, sep, revision = ref.partition("@")
    if sep and not revision:
        raise InputError(f"empty revision after '@' in {ref!r}",
                         hint="write `owner/name@<branch, tag or commit sha>` or drop the '@'")
    if not REPO_ID_RE.match(repo_id) or "--" in repo_id or ".." in repo_id or len(repo_id) > 96:
        raise InputError(f"{ref!r} is neither an existing local directory nor a Hub repo id (`owner/name[@revision]`)",
                         hint="check the spelling; local paths must exist, repo ids look like `openai/clip-vit-base-patch32`")
    return repo_id, (revision or None)


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference pinned to an exact version and available on local disk.

    Attributes:
        reference: The reference as the user wrote it.
        local_dir: Directory holding the files (a cache snapshot for Hub models).
        repo_id: The Hub repo id, ``None`` for a local directory.
        revision: The commit SHA for a Hub model; ``"sha256:<16 hex>"`` (content hash of the weights) for a local one.
        is_local: Whether the reference was a local directory.
        pickle_only: The model has pickle weights (``.bin``/``.pt``) and no safetensors. For a Hub model nothing of
            the weights was downloaded; callers refuse it (see :func:`require_safetensors`).
    """

    reference: str
    local_dir: Path
    repo_id: str | None
    revision: str
    is_local: bool
    pickle_only: bool = False

    @property
    def safetensors_files(self) -> list[Path]:
        """The ``*.safetensors`` files at the top of :attr:`local_dir`, sorted."""
        return sorted(self.local_dir.glob("*.safetensors"))

    @property
    def pinned_reference(self) -> str:
        """``repo_id@sha`` for a Hub model (reproducible), the directory for a local one."""
        return f"{self.repo_id}@{self.revision}" if self.repo_id else str(self.local_dir)


def require_safetensors(resolved: ResolvedModel) -> list[Path]:
    """The model's safetensors files, or a clear :class:`CheckpointError` (pickle-only or no weights).

    Args:
        resolved: A resolved model.

    Returns:
        The ``*.safetensors`` files.

    Raises:
        CheckpointError: The model has only pickle weights (never unpickled) or no weights at all.
    """
    files = resolved.safetensors_files
    if files:
        return files
    if resolved.pickle_only:
        raise CheckpointError(
            f"{resolved.reference} has only pickle weights (.bin/.pt), which hfdistac never loads (unpickling runs "
            "arbitrary code); safetensors weights are required",
            hint="convert it once with `model = CLIPVisionModel.from_pretrained(path); "
                 "model.save_pretrained(out, safe_serialization=True)` in a trusted environment, or use the "
                 "Hub's safetensors conversion bot (https://huggingface.co/spaces/safetensors/convert)")
    raise CheckpointError(f"no *.safetensors weights in {resolved.reference} ({resolved.local_dir})",
                          hint="pass a directory or repo that contains model.safetensors (save with save_pretrained)")


#: Content hashes already computed in this process, keyed by every weight file's path, size and mtime: a local
#: model is hashed once per process however often it is resolved (a 3-task merge resolved each model 16 times).
_HASH_CACHE: dict[tuple, str] = {}


def _content_hash(files: list[Path], root: Path) -> str:
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = _hash_files(files, root)
        logger.info("local model %s: %s", root, _HASH_CACHE[key])
    return _HASH_CACHE[key]


def _hash_files(files: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(str(path.stat().st_size).encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]


def _resolve_local(ref: str) -> ResolvedModel:
    path = Path(ref).expanduser()
    if not path.exists():
        raise ReferenceNotFoundError(f"no such directory: {ref}",
                                     hint="check the path, or pass a Hub repo id like `owner/name[@revision]`")
    if not path.is_dir():
        raise ReferenceNotFoundError(f"not a directory: {ref}",
                                     hint="pass the directory that holds config.json and the *.safetensors weights")
    path = path.resolve()
    weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.safetensors.index.json"))
    # hashed below: each must be a regular file of the folder (a link to /dev/zero would be read forever)
    weights = [regular_file_inside_model(path, p.name) for p in weights]
    pickle_only = False
    if not any(p.suffix == ".safetensors" for p in weights):
        weights = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)
        pickle_only = bool(weights)
    revision = _content_hash(weights, path)  # logged once, when first computed
    return ResolvedModel(reference=ref, local_dir=path, repo_id=None, revision=revision, is_local=True,
                         pickle_only=pickle_only)


#: The resolutions of the current run (:func:`resolving_once`), by reference, patterns and token.
_RUN_RESOLUTIONS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("hfdistac_resolutions", default=None)


@contextlib.contextmanager
def resolving_once() -> Iterator[None]:
    """Within this block every model reference is resolved once: the first :func:`resolve_model` of a reference
    asks the Hub (or hashes the folder), later ones get the same :class:`ResolvedModel`. Each ``run_*`` entry point
    wraps its run in it, so a merge that needs a model's files, identity, card and license in five stages resolves
    it once (nested blocks share the outer one)."""
    handle = _RUN_RESOLUTIONS.set({}) if _RUN_RESOLUTIONS.get() is None else None
    try:
        yield
    finally:
        if handle is not None:
            _RUN_RESOLUTIONS.reset(handle)


def resolve_model(ref: str, *, allow_patterns: list[str] | None = None, token: str | bool | None = None
                  ) -> ResolvedModel:
    """Pin a model reference to an exact version and make its files available locally (once per reference inside
    :func:`resolving_once`).

    A local directory is used in place and identified by a content hash of its weights (``*.safetensors``, or the
    pickle files when there are none, so that :func:`require_safetensors` can refuse them). A Hub reference
    ``repo_id[@revision]`` is resolved to its commit SHA once (``HfApi.resolve_revision``, which also records the
    mapping in the cache so the same reference resolves offline later), then exactly that commit is downloaded
    with ``snapshot_download``, limited to ``allow_patterns``. Pickle and other-framework weights are never
    downloaded; a repo whose only weights are pickles resolves with ``pickle_only=True`` (its config and card
    are downloaded, so the caller can say which model it is and refuse it). Offline, a cached snapshot is used
    as is (``pickle_only`` cannot be checked then; :func:`require_safetensors` still refuses a model without
    safetensors weights).

    Args:
        ref: ``repo_id[@revision]`` or a local directory.
        allow_patterns: Glob patterns of the files to download (default :data:`DEFAULT_ALLOW_PATTERNS`).
        token: Hub token; default: huggingface_hub's (``HF_TOKEN`` or ``hf auth login``).

    Returns:
        The :class:`ResolvedModel`.

    Raises:
        ReferenceNotFoundError: No such local directory, repo or revision.
        HubError: Offline and not cached, the Hub unreachable, access refused (401/403), or a downloaded file
            whose bytes differ from the sha256 the Hub gave for it (:func:`verify_downloads`).
    """
    memo = _RUN_RESOLUTIONS.get()
    key = (str(ref), tuple(allow_patterns or ()), token)
    if memo is not None and key in memo:
        return memo[key]
    resolved = _resolve(ref, allow_patterns, token)
    if memo is not None:
        memo[key] = resolved
    return resolved


def _resolve(ref: str, allow_patterns: list[str] | None, token: str | bool | None) -> ResolvedModel:
    if is_local_reference(ref):
        return _resolve_local(str(ref))
    repo_id, revision = parse_reference(ref)
    from huggingface_hub import HfApi, snapshot_download

    api = HfApi(token=token)
    what = f"model {ref!r}"
    try:
        resolved = api.resolve_revision(repo_id, revision=revision)
        local_dir = Path(snapshot_download(repo_id, revision=resolved, allow_patterns=allow_patterns or
                                           DEFAULT_ALLOW_PATTERNS, ignore_patterns=NEVER_DOWNLOAD_PATTERNS,
                                           token=token))
    except Exception as err:
        raise _translate(err, what=what, token=token, reading=True, not_found=ReferenceNotFoundError) from err
    sha = resolved.resolved
    verify_downloads(local_dir, str(ref))
    pickle_only = False
    if not any(local_dir.glob("*.safetensors")) and not _offline():
        try:
            files = api.list_repo_files(repo_id, revision=sha)
        except Exception as err:
            raise _translate(err, what=what, token=token, reading=True, not_found=ReferenceNotFoundError) from err
        pickle_only = not any(f.endswith(".safetensors") for f in files) and any(
            f.endswith(PICKLE_SUFFIXES) for f in files)
    logger.info("resolved %s to %s@%s", ref, repo_id, sha)
    return ResolvedModel(reference=str(ref), local_dir=local_dir, repo_id=repo_id, revision=sha, is_local=False,
                         pickle_only=pickle_only)


#: Downloaded files already checked against their sha256 in this process, by path, size and mtime.
_VERIFIED: set[tuple] = set()
_SHA256_NAME = re.compile(r"[0-9a-f]{64}")


def verify_downloads(local_dir: Path, reference: str) -> None:
    """Check every LFS file of a downloaded snapshot (weights, adapters) against the sha256 the Hub gave for it.

    huggingface_hub stores an LFS file as the blob ``blobs/<sha256>`` the Hub announced (its ``X-Linked-Etag``) and
    links the snapshot's file to it, but does not check that the bytes have that hash: a download corrupted on the
    way, a tampered mirror or a cache changed afterwards would be used as is. Each file is hashed once per process
    and file state (:data:`_VERIFIED`); files that are not LFS blobs (small text files, a cache without links) have
    no announced hash and are left alone.

    Raises:
        HubError: a file whose bytes differ, naming the cached copy to delete so the next run downloads it again.
    """
    for path in sorted(p for p in local_dir.iterdir() if p.is_symlink() or p.is_file()):
        blob = path.resolve()
        if not _SHA256_NAME.fullmatch(blob.name) or not blob.is_file():
            continue
        stat = blob.stat()
        state = (str(blob), stat.st_size, stat.st_mtime_ns)
        if state in _VERIFIED:
            continue
        digest = hashlib.sha256()
        with open(blob, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != blob.name:
            raise HubError(f"{path.name} of {reference} does not match the sha256 the Hub gave for it (expected "
                           f"{blob.name[:16]}…, got {digest.hexdigest()[:16]}…): the download was corrupted or the "
                           "cached copy was changed, so it is not used",
                           f"delete the cached copy {blob} and run again to download it afresh")
        _VERIFIED.add(state)


def resolve_dataset_revision(repo_id: str, revision: str | None = None, *, token: str | bool | None = None) -> str:
    """The commit SHA of a dataset repo at ``revision`` (for provenance records).

    Offline (or with the Hub unreachable) a revision resolved before is read from the cache.

    Args:
        repo_id: Dataset repo id (``owner/name``).
        revision: Branch, tag or commit; default branch when ``None``.
        token: Hub token; default: huggingface_hub's.

    Returns:
        The 40-hex commit SHA.

    Raises:
        ReferenceNotFoundError: No such dataset repo or revision.
        HubError: Offline and never resolved before, or access refused.
    """
    from huggingface_hub import HfApi

    try:
        return HfApi(token=token).resolve_revision(repo_id, repo_type="dataset", revision=revision).resolved
    except Exception as err:
        ref = f"{repo_id}@{revision}" if revision else repo_id
        raise _translate(err, what=f"dataset {ref!r}", token=token, reading=True,
                         not_found=ReferenceNotFoundError) from err


