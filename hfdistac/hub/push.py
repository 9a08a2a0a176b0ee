"""Publishing: a folder in one commit (verified to have landed, retried when the connection drops), and card
pull requests."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

from ..errors import InputError, ReferenceNotFoundError
from .http import _with_retries
from .resolve import REPO_ID_RE

logger = logging.getLogger(__name__)


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

    from ..upload_files import upload_contents

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
    if not REPO_ID_RE.match(repo_id) or "--" in repo_id or ".." in repo_id or len(repo_id) > 96:
        raise InputError(f"invalid repo id {repo_id!r}: expected `owner/name` (letters, digits, '-', '_', '.')",
                         hint="for example `my-user/clip-vit-b32-distac-cars`")
    return repo_id


