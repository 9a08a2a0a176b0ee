"""Typed, actionable errors.

Every error a user can cause derives from :class:`HfDistacError` and carries a one-line message (what was
given, what is allowed) plus an optional hint (how to fix it). The CLI prints ``error: <message>`` and
``hint: <hint>`` and exits non-zero; the traceback is shown only when ``HFDISTAC_DEBUG=1``.
"""

from __future__ import annotations


class HfDistacError(Exception):
    """Base class of all user-facing errors.

    Args:
        message: What went wrong, naming the offending value.
        hint: How to fix it (optional).
    """

    exit_code = 2
    #: An error names what was given, not all of it: longer messages and hints are cut (a value from an input
    #: file can be arbitrarily long).
    MAX_CHARS = 600

    def __init__(self, message: str, hint: str | None = None):
        message, hint = _bounded(message), _bounded(hint) if hint else hint
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # one line, hint appended so logs keep it
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


def _bounded(text: str) -> str:
    text = " ".join(str(text).splitlines()) if "\n" in str(text) else str(text)
    limit = HfDistacError.MAX_CHARS
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more characters)"


class InputError(HfDistacError):
    """A bad argument value or option combination."""


class ReferenceNotFoundError(HfDistacError):
    """A model or dataset reference that is neither an existing local path nor a reachable Hub repo."""


class HubError(HfDistacError):
    """An error talking to the Hub (auth, missing repo, offline)."""


class CheckpointError(HfDistacError):
    """A checkpoint that cannot be used: not CLIP, pickle-only, or incompatible with its base."""


class DataError(HfDistacError):
    """A dataset that cannot be used: no image column, wrong number of classes, missing split."""


class TrainingError(HfDistacError):
    """A training run that had to stop (for example a non-finite loss)."""


class OutputError(HfDistacError):
    """An output that cannot be written: read-only location, no space left, permission denied."""
