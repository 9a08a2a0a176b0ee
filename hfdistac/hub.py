"""All Hub I/O of hfdistac: model references, revision pinning, card metadata, and publishing.

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

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .errors import CheckpointError, HfDistacError, HubError, InputError, ReferenceNotFoundError
from .references import is_local_reference, regular_file_inside_model  # noqa: F401 - hub.is_local_reference

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: What ``resolve_model`` downloads by default: config, safetensors weights (+ shard index), the card, and the
#: tokenizer / image-processor files (all ``*.json`` / ``*.txt``).
DEFAULT_ALLOW_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json", "README.md", "*.json", "*.txt"]
#: Never downloaded, whatever ``allow_patterns`` says: pickles and other frameworks' weights.
NEVER_DOWNLOAD_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt", "*.msgpack", "*.h5", "*.ot", "*.onnx"]
#: Weight files that would need unpickling: detected (to refuse them clearly), never loaded.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")

_HASH_CHUNK = 1 << 20
_REPO_ID_RE = re.compile(r"^(?:[\w\-.]+/)?[\w\-.]+$")
_TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{6,}\b")
_AUTH_HINT = "log in with `hf auth login` or set HF_TOKEN to a token that can access the repo"
_WRITE_HINT = ("log in with `hf auth login` or set HF_TOKEN to a token with write access to the repo's "
               "namespace (create one at https://huggingface.co/settings/tokens)")


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
    if not _REPO_ID_RE.match(repo_id) or "--" in repo_id or ".." in repo_id or len(repo_id) > 96:
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


def resolve_model(ref: str, *, allow_patterns: list[str] | None = None, token: str | bool | None = None
                  ) -> ResolvedModel:
    """Pin a model reference to an exact version and make its files available locally.

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
        HubError: Offline and not cached, the Hub unreachable, or access refused (401/403).
    """
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
    from huggingface_hub import metadata_load

    readme = resolved.local_dir / "README.md"
    if not readme.is_file():
        return {}
    try:
        meta = metadata_load(readme) or {}
    except Exception as err:  # yaml errors
        raise CheckpointError(f"the model card of {resolved.reference} has invalid YAML metadata: "
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__}",
                              hint=f"fix the front matter between the '---' lines of {readme}") from err
    if not isinstance(meta, dict):
        return {}
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


# --------------------------------------------------------------------------------------------- publishing
def push_folder(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                create_pr: bool = False, commit_message: str | None = None, token: str | bool | None = None,
                retries: int = 3, retry_delay: float = 1.0, repo_type: str = "model") -> dict:
    """Publish every file of ``folder`` to a model repo in ONE commit.

    Creates the repo if needed (``private`` applies only then) and the branch ``revision`` if it does not exist
    (from the default branch), then commits all files (weights through LFS). Transient failures (HTTP 5xx/429,
    dropped connections) are retried with exponential backoff; before a commit is retried, the repo is checked
    for it (a commit whose answer was lost is not made twice, nor a second pull request opened). Symbolic links
    are refused: nothing outside the folder is ever uploaded.

    Args:
        folder: The directory to upload (``.git`` excluded; no symbolic links).
        repo_id: Target repo ``owner/name``.
        private: Create the repo private.
        revision: Branch to commit to (created if missing); default branch when ``None``.
        create_pr: Open a pull request instead of committing to the branch directly.
        commit_message: Commit title (default: ``"Upload <folder name> with hfdistac"``).
        token: Hub token; default: huggingface_hub's (``HF_TOKEN`` or ``hf auth login``).
        retries: Attempts per Hub call for transient errors.
        retry_delay: First backoff delay in seconds (doubled at each retry).
        repo_type: ``model`` (default) or ``dataset``.

    Returns:
        ``{"repo_id", "commit_sha", "commit_url", "pr_url"}`` (``pr_url`` is ``None`` without ``create_pr``).

    Raises:
        InputError: ``folder`` is not a directory, is empty or holds a symbolic link; ``repo_id`` is invalid.
        HubError: Access refused (401/403), repo/branch not found (404), offline, or the Hub kept failing.
    """
    folder = Path(folder).expanduser()
    files = files_to_push(folder)
    repo_id = _check_repo_id(repo_id)
    from huggingface_hub import CommitOperationAdd, HfApi

    from .upload_files import upload_contents

    api = HfApi(token=token)
    what = f"repo {repo_id!r}"
    retry = {"what": what, "token": token, "retries": retries, "retry_delay": retry_delay}
    _with_retries(lambda: api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type),
                  step=f"creating {what}", **retry)
    if revision and revision != "main":
        _with_retries(lambda: api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type=repo_type),
                      step=f"creating branch {revision!r} of {what}", **retry)
    message = commit_message or f"Upload {folder.resolve().name} with hfdistac"
    with tempfile.TemporaryDirectory(prefix="hfdistac-upload-") as scratch:
        # what is uploaded names no local path, and its cards name the destination (hfdistac.upload_files)
        contents = upload_contents(folder, files, repo_id, Path(scratch))
        landed = _LandedCheck(api, repo_id, revision, create_pr, contents, repo_type)

        def commit():  # operations are mutated by create_commit: build them afresh for every attempt
            ops = [CommitOperationAdd(path_in_repo=path,
                                      path_or_fileobj=data if isinstance(data, bytes) else str(data))
                   for path, data in contents.items()]
            info = api.create_commit(repo_id, ops, commit_message=message, revision=revision, create_pr=create_pr,
                                     repo_type=repo_type)
            return {"repo_id": repo_id, "commit_sha": info.oid, "commit_url": info.commit_url, "pr_url": info.pr_url}

        result = _with_retries(commit, step=f"pushing {len(files)} files to {what}", landed=landed, **retry)
    logger.info("pushed %d files from %s to %s (commit %s)", len(files), folder, repo_id, result["commit_sha"])
    return result


def files_to_push(folder: Path) -> list[Path]:
    """Every file of an output directory to upload (``.git`` excluded), refusing symbolic links.

    A symlink may point anywhere (a token file, a private key): pushing follows no link, and one found inside
    the folder stops the push before anything is sent.

    Raises:
        InputError: ``folder`` is not a directory, is empty, or holds a symbolic link.
    """
    if not folder.is_dir() or folder.is_symlink():
        raise InputError(f"nothing to push: {folder} is not a directory",
                         hint="pass the output directory written by hfdistac")
    files = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        if ".git" in dirnames:
            dirnames.remove(".git")
        for name in [*dirnames, *filenames]:
            if (here / name).is_symlink():
                raise InputError(f"refusing to push {folder}: {here / name} is a symbolic link (to "
                                 f"{os.readlink(here / name)!r})",
                                 hint="a link may point at anything (a token, a key); replace it by a copy of the "
                                      "file it points to, or remove it")
        files.extend(here / f for f in filenames)
    if not files:
        raise InputError(f"nothing to push: {folder} is empty", hint="pass the output directory written by hfdistac")
    return sorted(files)


class _LandedCheck:
    """After a commit attempt whose answer was lost: did it land? (so that a retry does not commit twice)

    Before the first attempt it records the branch head (or, for a pull request, the open PR refs); afterwards a
    new head (or a new PR) whose files equal the local files byte for byte means the commit went through.
    """

    def __init__(self, api, repo_id: str, revision: str | None, create_pr: bool, contents: dict[str, Path | bytes],
                 repo_type: str = "model"):
        self.api, self.repo_id, self.revision, self.create_pr = api, repo_id, revision, create_pr
        self.contents, self.repo_type = contents, repo_type
        self.before = self._state()

    def _state(self) -> set[str] | str | None:
        try:
            if self.create_pr:
                refs = self.api.list_repo_refs(self.repo_id, include_pull_requests=True, repo_type=self.repo_type)
                return {r.ref for r in refs.pull_requests or []}
            return self.api.repo_info(self.repo_id, revision=self.revision, repo_type=self.repo_type).sha
        except Exception as err:  # noqa: BLE001 - an unreadable state just means "cannot tell": retry as before
            logger.debug("could not read the state of %s: %s", self.repo_id, err)
            return None

    def _matches(self, revision: str) -> bool:
        remote = {e.path: e for e in self.api.list_repo_tree(self.repo_id, revision=revision, recursive=True,
                                                             repo_type=self.repo_type)
                  if hasattr(e, "blob_id")}
        for path, content in self.contents.items():
            entry = remote.get(path)
            data = content if isinstance(content, bytes) else content.read_bytes()
            if entry is None:
                return False
            if entry.lfs is not None:
                if entry.lfs.sha256 != hashlib.sha256(data).hexdigest():
                    return False
            elif entry.blob_id != hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest():  # noqa: S324 - git's oid
                return False
        return True

    def __call__(self) -> dict | None:
        """The commit's result if it landed, else ``None``."""
        now = self._state()
        if self.before is None or now is None or now == self.before:
            return None
        from huggingface_hub import constants

        base = f"{constants.ENDPOINT}/{'datasets/' if self.repo_type == 'dataset' else ''}{self.repo_id}"
        try:
            if self.create_pr:
                for ref in sorted(now - self.before, key=lambda r: int(r.rsplit("/", 1)[1]), reverse=True):
                    if self._matches(ref):
                        sha = self.api.repo_info(self.repo_id, revision=ref, repo_type=self.repo_type).sha
                        return {"repo_id": self.repo_id, "commit_sha": sha, "commit_url": f"{base}/commit/{sha}",
                                "pr_url": f"{base}/discussions/{ref.rsplit('/', 1)[1]}"}
                return None
            if self._matches(now):
                return {"repo_id": self.repo_id, "commit_sha": now, "commit_url": f"{base}/commit/{now}",
                        "pr_url": None}
        except Exception as err:  # noqa: BLE001
            logger.debug("could not compare %s with the local files: %s", self.repo_id, err)
        return None


def open_card_pr(repo_id: str, card_text: str, *, commit_message: str | None = None,
                 commit_description: str | None = None, revision: str | None = None,
                 token: str | bool | None = None, retries: int = 3, retry_delay: float = 1.0) -> dict:
    """Open a pull request on an existing model repo that changes only its README.md.

    Args:
        repo_id: The model repo ``owner/name`` (must exist).
        card_text: The full new README.md (front matter + text).
        commit_message: PR title (default: ``"Add merge-readiness diagnostics (hfdistac)"``).
        commit_description: PR description.
        revision: Branch the PR targets; default branch when ``None``.
        token: Hub token; default: huggingface_hub's.
        retries: Attempts for transient errors.
        retry_delay: First backoff delay in seconds.

    Returns:
        ``{"repo_id", "commit_sha", "commit_url", "pr_url"}``.

    Raises:
        ReferenceNotFoundError: The repo or branch does not exist.
        HubError: Access refused, offline, or the Hub kept failing.
    """
    repo_id = _check_repo_id(repo_id)
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    data = card_text.encode("utf-8")

    def commit():
        ops = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=data)]
        return api.create_commit(repo_id, ops, commit_message=commit_message or
                                 "Add merge-readiness diagnostics (hfdistac)",
                                 commit_description=commit_description, revision=revision, create_pr=True)

    info = _with_retries(commit, what=f"model repo {repo_id!r}", step=f"opening a card PR on {repo_id!r}",
                         token=token, retries=retries, retry_delay=retry_delay, not_found=ReferenceNotFoundError)
    logger.info("opened card PR on %s: %s", repo_id, info.pr_url)
    return {"repo_id": repo_id, "commit_sha": info.oid, "commit_url": info.commit_url, "pr_url": info.pr_url}


def _check_repo_id(repo_id: str) -> str:
    repo_id = str(repo_id).strip()
    if not _REPO_ID_RE.match(repo_id) or "--" in repo_id or ".." in repo_id or len(repo_id) > 96:
        raise InputError(f"invalid repo id {repo_id!r}: expected `owner/name` (letters, digits, '-', '_', '.')",
                         hint="for example `my-user/clip-vit-b32-distac-cars`")
    return repo_id


# --------------------------------------------------------------------------------------------- errors, retries
def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def scrub_secrets(text: str, token: str | bool | None = None) -> str:
    """Remove any token (the given one, huggingface_hub's, anything shaped like ``hf_...``) from ``text``."""
    secrets = [token] if isinstance(token, str) and token else []
    try:
        from huggingface_hub import get_token

        found = get_token()
        if found:
            secrets.append(found)
    except Exception:  # never let scrubbing fail the real error
        pass
    for secret in secrets:
        text = text.replace(secret, "***")
    return _TOKEN_RE.sub("hf_***", text)



def _first_line(err: BaseException) -> str:
    server = getattr(err, "server_message", None)
    text = server or str(err) or type(err).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def _xet_unsupported(err: BaseException) -> bool:
    """An upload through Xet to an endpoint that does not serve it (a 404 on its ``xet-write-token`` route):
    huggingface_hub picks Xet whenever ``hf_xet`` is installed; self-hosted or mirror endpoints may lack it."""
    return "xet-write-token" in str(err) and ("404" in str(err) or _status(err) == 404)


def _is_transient(err: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled) or _xet_unsupported(err):
        return False
    if isinstance(err, HfHubHTTPError):
        status = _status(err)
        return status is not None and (status >= 500 or status == 429)
    try:
        import httpx2

        if isinstance(err, httpx2.ProxyError):
            return False
        if isinstance(err, httpx2.TransportError):
            return True
    except ImportError:  # pragma: no cover - huggingface_hub always ships its HTTP client
        pass
    return isinstance(err, (ConnectionError, TimeoutError))


def _translate(err: BaseException, *, what: str, token: str | bool | None, reading: bool = False,
               not_found: type[HfDistacError] = HubError) -> HfDistacError:
    """Turn a huggingface_hub/HTTP error into a one-line hfdistac error with a hint (token scrubbed).

    ``what`` names the object (``"model 'a/b'"``); ``reading`` says whether it was being read (a reference, which
    may also be looked up in the cache or mistaken for a local path) rather than written.
    """
    from huggingface_hub.errors import (
        HfHubHTTPError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
        RevisionResolutionError,
    )

    if isinstance(err, HfDistacError):
        return err
    endpoint = _endpoint()
    status = _status(err)
    if isinstance(err, (OfflineModeIsEnabled, RevisionResolutionError, LocalEntryNotFoundError)) and _offline():
        if reading:
            kind = "only part of it is" if isinstance(err, IncompleteSnapshotError) else "it is not"
            return HubError(scrub_secrets(f"cannot fetch {what}: offline mode is on (HF_HUB_OFFLINE=1) and {kind} in "
                                   "the local cache", token),
                            hint="unset HF_HUB_OFFLINE (or set HF_HUB_OFFLINE=0) to download it, or pass a local "
                                 "directory instead")
        return HubError(f"cannot write to {what}: offline mode is on (HF_HUB_OFFLINE=1)",
                        hint="unset HF_HUB_OFFLINE (or set HF_HUB_OFFLINE=0) to push")
    if _xet_unsupported(err):
        return HubError(scrub_secrets(f"the Hub at {endpoint} does not accept Xet uploads, which huggingface_hub uses "
                               f"for {what} because hf_xet is installed", token),
                        hint="set HF_HUB_DISABLE_XET=1 to upload through plain LFS instead")
    if isinstance(err, RevisionNotFoundError):
        return not_found(scrub_secrets(f"revision not found: {what} has no branch, tag or commit by that name on "
                                f"{endpoint}", token),
                         hint="check the part after '@' (a branch, tag or full commit SHA), or drop it for the "
                              "default branch")
    if status in (401, 403):
        verb = "refused access to" if status == 403 else "requires authentication for"
        return HubError(scrub_secrets(f"the Hub {verb} {what} (HTTP {status}): {_first_line(err)}", token),
                        hint=_AUTH_HINT if reading else _WRITE_HINT)
    if isinstance(err, RepositoryNotFoundError) or status == 404:
        if reading:
            return not_found(scrub_secrets(f"{what} not found: no such repo on {endpoint} and no such local directory",
                                    token),
                             hint="check the repo id `owner/name` (or the path); for a private repo " + _AUTH_HINT)
        return not_found(scrub_secrets(f"{what} not found on {endpoint} (HTTP 404)", token),
                         hint="check the repo id and branch; your token must also be able to see the repo: "
                              + _WRITE_HINT)
    if isinstance(err, (RevisionResolutionError, LocalEntryNotFoundError, OfflineModeIsEnabled)) or (
            _is_transient(err) and not isinstance(err, HfHubHTTPError)):
        cached = " and it is not in the local cache" if reading else ""
        cause = type(err.__cause__ or err).__name__
        hint = "check your connection and HF_ENDPOINT, then retry"
        if reading:
            hint += "; to work offline set HF_HUB_OFFLINE=1 and use models downloaded before, or pass a local directory"
        return HubError(scrub_secrets(f"cannot reach the Hub at {endpoint} for {what}{cached} ({cause})", token), hint=hint)
    if isinstance(err, HfHubHTTPError):
        return HubError(scrub_secrets(f"the Hub failed for {what} (HTTP {status}): {_first_line(err)}", token),
                        hint="retry later; if it persists check https://status.huggingface.co")
    if isinstance(err, ValueError) and "yaml" in str(err).lower():
        return HubError(scrub_secrets(f"the Hub rejected the model card metadata of {what}: {_first_line(err)}", token),
                        hint="fix the YAML front matter of README.md")
    return HubError(scrub_secrets(f"Hub request for {what} failed: {type(err).__name__}: {_first_line(err)}", token),
                    hint="retry; set HFDISTAC_DEBUG=1 to see the traceback")


def _with_retries(fn: Callable[[], T], *, what: str, step: str, token: str | bool | None, retries: int,
                  retry_delay: float, not_found: type[HfDistacError] = HubError,
                  landed: Callable[[], T | None] | None = None) -> T:
    """Call ``fn`` (``step``, for log lines), retrying transient errors with exponential backoff.

    ``retries`` counts all attempts; the delay starts at ``retry_delay`` seconds and doubles. ``landed``, when
    given, is asked after a transient failure whether the attempt took effect anyway (its answer lost): its
    result is returned instead of trying again.
    """
    attempts = max(1, int(retries))
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as err:
            done = landed() if landed is not None and _is_transient(err) else None
            if done is not None:
                logger.warning("%s: the answer was lost (%s) but the change landed; not repeating it", step,
                               scrub_secrets(f"{type(err).__name__}: {_first_line(err)}", token))
                return done
            if attempt < attempts and _is_transient(err):
                delay = retry_delay * 2 ** (attempt - 1)
                logger.warning("%s failed (%s); retrying in %.2fs (attempt %d of %d)", step,
                               scrub_secrets(f"{type(err).__name__}: {_first_line(err)}", token), delay, attempt + 1,
                               attempts)
                time.sleep(delay)
                continue
            raise _translate(err, what=what, token=token, not_found=not_found) from err
    raise AssertionError("unreachable")  # pragma: no cover
