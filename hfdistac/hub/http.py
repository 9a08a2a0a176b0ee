"""Talking to the Hub safely: errors translated into one line with a hint, transient failures retried, and
every token scrubbed from what is shown."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import HfDistacError, HubError

logger = logging.getLogger(__name__)

T = TypeVar("T")

_TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{6,}\b")
_AUTH_HINT = "log in with `hf auth login` or set HF_TOKEN to a token that can access the repo"
_WRITE_HINT = ("log in with `hf auth login` or set HF_TOKEN to a token with write access to the repo's "
               "namespace (create one at https://huggingface.co/settings/tokens)")


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
