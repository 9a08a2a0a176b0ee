"""Reading a Hub dataset as a stream without hanging: bounded retries, said as they happen, then one clear error.

``datasets`` retries a broken read of a stream 20 times, 5 s apart (and huggingface_hub each request up to 5 times),
and says so only in log records that the command line silences: a dropped connection or a cut shard looked like a
hang of minutes. Inside
:func:`bounded_stream_reads` a read (or the opening of a shard) is retried :data:`STREAM_RETRIES` times,
:data:`STREAM_RETRY_SECONDS` apart, each retry is logged on ``hfdistac.progress`` (always shown), and what breaks the
stream for good becomes a :class:`~hfdistac.errors.DataError` naming the dataset, the split and the row
(:func:`stream_error`). Each HTTP request is bounded by huggingface_hub's own timeout (``HF_HUB_DOWNLOAD_TIMEOUT``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

from ..errors import DataError

#: Tries of a broken stream read (or shard opening) before it is given up.
STREAM_RETRIES = 3
#: Seconds between those tries.
STREAM_RETRY_SECONDS = 2.0
#: Retries of one HTTP request of a shard by huggingface_hub, inside each of those tries (its default: 5).
HTTP_RETRIES = 2

_SETTINGS = {"STREAMING_READ_MAX_RETRIES": STREAM_RETRIES, "STREAMING_OPEN_MAX_RETRIES": STREAM_RETRIES,
             "STREAMING_READ_RETRY_INTERVAL": STREAM_RETRY_SECONDS, "STREAMING_OPEN_RETRY_INTERVAL": STREAM_RETRY_SECONDS,
             "STREAMING_READ_SERVER_UNAVAILABLE_RETRY_INTERVAL": STREAM_RETRY_SECONDS,
             "STREAMING_READ_RATE_LIMIT_RETRY_INTERVAL": STREAM_RETRY_SECONDS}
#: Where datasets (its stream reads) and huggingface_hub (its HTTP requests) log their retries.
_RETRY_LOGGERS = ("datasets.utils.file_utils", "huggingface_hub.utils._http")


class _SayRetries(logging.Handler):
    """Forwards datasets' "Retrying" records to ``hfdistac.progress``, naming the dataset."""

    def __init__(self, what: str):
        super().__init__(logging.WARNING)
        self.what = what
        self.said = logging.getLogger("hfdistac.progress")

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Retrying" in message:
            self.said.warning("%s: the connection broke (%s)", self.what, message)


@contextlib.contextmanager
def bounded_stream_reads(what: str) -> Iterator[None]:
    """Within this block, streamed reads of ``datasets`` are retried a bounded number of times, each retry said.

    Args:
        what: How to name the stream in the messages (``dataset 'org/name' split 'test'``).
    """
    import datasets.config
    import huggingface_hub.hf_file_system as hf_fs

    saved = {name: getattr(datasets.config, name) for name in _SETTINGS if hasattr(datasets.config, name)}
    backoff = getattr(hf_fs, "http_backoff", None)
    if backoff is not None:  # each HTTP read of a shard: 2 tries, not 5 with waits up to 8 s (under datasets' tries)
        hf_fs.http_backoff = functools.partial(backoff, max_retries=HTTP_RETRIES, max_wait_time=STREAM_RETRY_SECONDS)
    handler = _SayRetries(what)
    sources = [logging.getLogger(name) for name in _RETRY_LOGGERS]
    before = [(source.level, source.propagate) for source in sources]
    for name in saved:
        setattr(datasets.config, name, _SETTINGS[name])
    for source in sources:
        source.addHandler(handler)
        source.setLevel(logging.WARNING)
        source.propagate = False  # said once, by us
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(datasets.config, name, value)
        if backoff is not None:
            hf_fs.http_backoff = backoff
        for source, (level, propagate) in zip(sources, before, strict=True):
            source.removeHandler(handler)
            source.setLevel(level)
            source.propagate = propagate


def is_connection_error(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is a broken connection, a timeout or an HTTP error, not bad data."""
    seen = 0
    while err is not None and seen < 8:
        name = type(err).__name__
        module = type(err).__module__ or ""
        if isinstance(err, (ConnectionError, TimeoutError)) or module.startswith(("httpx", "httpcore", "requests",
                                                                                   "urllib3", "aiohttp")) \
                or name in ("HfHubHTTPError", "RemoteProtocolError", "ReadTimeout", "ConnectTimeout"):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def stream_error(reference: str, split: str, row: int, err: BaseException) -> DataError:
    """The one-line error of a stream that broke off for good at ``row``."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return DataError(f"the stream of split {split!r} of dataset {reference!r} broke off at row {row} after "
                     f"{STREAM_RETRIES} tries ({text})",
                     "check the network connection (or HF_ENDPOINT) and run again; rows a run stores are kept, and a "
                     "local copy of the dataset (a folder path) needs no network")
