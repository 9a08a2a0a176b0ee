"""Output directories and files: checked before the work, written atomically, never half-written or replaced.

* :func:`check_destination` — before any work: the destination may not already exist (unless ``overwrite``),
  and its folder must be writable (a read-only folder fails now, not after 500 training steps).
* :class:`OutputLock` — one run per destination: a lock file carrying the owner's pid; a second run to the
  same ``--output`` is refused while the first is alive, and a stale lock of a killed run is taken over.
* :func:`atomic_output_dir` — write into a hidden sibling ``.NAME.tmp-PID-XXXX`` and rename it into place on
  success; on failure it is removed, and those left by a killed run (their pid is dead) are removed by the
  next run. The final rename never replaces a directory that appeared meanwhile unless ``overwrite``.
* :func:`scratch_dir` — scratch space beside the output (not in the system temporary folder), removed after
  use and, when a run was killed, by the next one.
* :func:`write_json` — atomic JSON; every ``OSError`` of these helpers becomes one :class:`OutputError` line
  naming the path and what the errno means (read-only, no space left, ...).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from .errors import InputError, OutputError

logger = logging.getLogger(__name__)


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except (ValueError, RuntimeError):
            pass
    return obj


def os_error(path: str | Path, err: OSError, doing: str = "write") -> OutputError:
    """One line for an ``OSError`` on ``path``: what failed, and what the errno means."""
    meaning = {errno.EROFS: "the file system is read-only", errno.ENOSPC: "no space left on the device",
               errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
               errno.EDQUOT: "disk quota exceeded", errno.ENOTDIR: "a part of the path is not a directory",
               errno.EISDIR: "it is a directory", errno.ENAMETOOLONG: "the name is too long"}.get(
        err.errno, err.strerror or str(err))
    hint = {errno.ENOSPC: "free some space or choose an --output on another disk",
            errno.EDQUOT: "free some space or choose an --output on another disk"}.get(
        err.errno, "choose a location you can write to")
    return OutputError(f"cannot {doing} {str(path)!r}: {meaning}", hint)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (temp file + rename); dataclasses, tensor scalars and NaN handled.

    Raises:
        OutputError: the file cannot be written (naming it and the reason).
    """
    path = Path(path).expanduser()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise os_error(path, e) from None
    return path


def _nearest_existing(path: Path) -> Path:
    p = path
    while not os.path.exists(p) and p.parent != p:  # os.path: a name too long is "not there", not an error
        p = p.parent
    return p


#: What hfdistac adds to an output's name for the files beside it (``.NAME.tmp-PID-XXXXXXXX``, ``.NAME.lock``,
#: ``.NAME.scratch-PID-XXXXXXXX``, ``.NAME.spread-PID``), in bytes at most.
NAME_OVERHEAD = 40


def check_name_lengths(path: str | Path, what: str = "output") -> None:
    """Refuse a path with a component too long for the file system once hfdistac's temporary suffixes are added.

    Raises:
        InputError: naming the component, its length and the limit.
    """
    p = Path(path).expanduser().absolute()
    try:
        limit = os.pathconf(_nearest_existing(p.parent), "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    for i, part in enumerate(p.parts):
        allowed = limit - (NAME_OVERHEAD if i == len(p.parts) - 1 else 0)
        if len(part.encode()) > allowed:
            raise InputError(f"the {what} {str(path)[:80]!r}… has a name of {len(part.encode())} bytes; at most "
                             f"{allowed} fit this file system" + (f" (hfdistac adds up to {NAME_OVERHEAD} for its "
                                                                  "temporary files beside it)" if i == len(p.parts) - 1
                                                                  else ""), "choose a shorter name")


def check_writable(path: str | Path, what: str = "output") -> None:
    """Refuse (before any work) a file or directory that could not be created: its nearest existing folder
    must be a writable directory.

    Raises:
        OutputError: naming the folder and why.
    """
    check_name_lengths(path, what)
    _check_folder_writable(path, what)


def _check_folder_writable(path: str | Path, what: str) -> None:
    """:func:`check_writable` once the names are known to fit."""
    folder = _nearest_existing(Path(path).expanduser().absolute().parent)
    if not folder.is_dir():
        raise OutputError(f"cannot write the {what} {str(path)!r}: {str(folder)!r} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise os_error(folder, e, f"write the {what} {str(path)!r} into") from None


#: Files that only an hfdistac output holds at its top: ``--overwrite`` replaces a folder with one of them only.
OUTPUT_SIGNATURES = ("hfdistac_config.json", "hfdistac/merge_readiness.json")
#: Written into folders hfdistac makes for itself (checkpoints): only a folder holding it is ever removed.
OWNED_MARKER = ".hfdistac-owned"


def is_hfdistac_output(path: str | Path) -> bool:
    """Whether ``path`` is a directory an hfdistac command wrote (one of :data:`OUTPUT_SIGNATURES` at its top)."""
    p = Path(path).expanduser()
    return p.is_dir() and any((p / name).is_file() for name in OUTPUT_SIGNATURES)


def check_destination(path: str | Path, overwrite: bool) -> Path:
    """Fail early (before any work) when the destination exists and may not be replaced, or cannot be written.

    ``overwrite`` replaces an earlier hfdistac output, never a folder of the user's (:func:`is_hfdistac_output`).

    Raises:
        InputError: it exists (without ``overwrite``), is not a directory, or is not an hfdistac output.
        OutputError: its folder is not writable.
    """
    p = Path(path).expanduser()
    check_name_lengths(p)
    exists_with_files = p.exists() and not (p.is_dir() and not any(p.iterdir()))
    if exists_with_files and not overwrite:
        raise InputError(f"output {str(p)!r} already exists", "choose another --output or pass --overwrite")
    if p.exists() and not p.is_dir():
        raise InputError(f"output {str(p)!r} exists and is not a directory")
    if exists_with_files and not is_hfdistac_output(p):
        raise InputError(f"output {str(p)!r} holds files hfdistac did not write: --overwrite only replaces an earlier "
                         "hfdistac output", "choose a new or empty --output (nothing of yours is ever deleted)")
    _check_folder_writable(p, "output")  # the names were checked above, before the first look at the file system
    return p


def check_not_an_input(path: str | Path, inputs, what: str = "--output") -> None:
    """Refuse a destination that is, holds or lies inside one of the run's inputs (models, base, data, recipe): a
    replaced or removed output must never take an input with it.

    Raises:
        InputError: naming the input.
    """
    target = Path(path).expanduser().resolve()
    for ref in inputs:
        if not ref:
            continue
        src = Path(str(ref).split("@")[0]).expanduser()
        if not src.exists():
            continue
        src = src.resolve()
        if src == target or target in src.parents or src in target.parents:
            raise InputError(f"{what} {str(path)!r} {'is' if src == target else 'overlaps'} an input of the run "
                             f"({str(ref)!r})", f"choose a {what} outside the run's models, datasets and recipe")


def claim_owned_dir(path: Path, what: str) -> Path:
    """Create ``path`` (or adopt it when empty or already hfdistac's) and mark it as hfdistac's.

    Raises:
        InputError: it holds files hfdistac did not write.
    """
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / OWNED_MARKER).is_file())):
        raise InputError(f"{what} {str(path)!r} holds files hfdistac did not write",
                         f"choose a new or empty {what}: hfdistac removes it when done")
    path.mkdir(parents=True, exist_ok=True)
    (path / OWNED_MARKER).write_text("made by hfdistac; removed by it when no longer needed\n")
    return path


def remove_owned_dir(path: Path) -> bool:
    """Remove ``path`` only when hfdistac made it (:func:`claim_owned_dir`); returns whether it did."""
    if not (path / OWNED_MARKER).is_file():
        if path.exists():
            logger.warning("left %s in place: hfdistac did not make it", path)
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_pid(name: str) -> int | None:
    """The pid written into a hidden temporary name ``.X.tmp-PID-...`` / ``.X.scratch-PID-...``."""
    try:
        return int(name.rsplit(".", 1)[1].split("-")[1])
    except (IndexError, ValueError):
        return None


def remove_stale(folder: Path, prefix: str) -> list[Path]:
    """Remove ``folder/prefix*`` entries whose owner pid (in the name) is no longer running."""
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.glob(f"{prefix}*"):
        pid = _owner_pid(p.name)
        if pid is None or pid == os.getpid() or pid_alive(pid):
            continue
        logger.info("removing %s, left by an interrupted run (pid %d)", p, pid)
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


class OutputLock:
    """Exclusive use of an output destination by one run (``.NAME.lock`` beside it, holding the owner's pid).

    Raises (on enter):
        InputError: another live process holds the lock.
    """

    def __init__(self, path: str | Path):
        self.target = Path(path).expanduser().absolute()
        self.lock = self.target.with_name(f".{self.target.name}.lock")
        self._held = False

    def __enter__(self) -> OutputLock:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    owner = int(self.lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    owner = 0
                if pid_alive(owner) and owner != os.getpid():
                    raise InputError(f"another hfdistac run (pid {owner}) is writing {str(self.target)!r}",
                                     "wait for it to finish, or choose another --output") from None
                self.lock.unlink(missing_ok=True)  # a killed run's lock
                continue
            except OSError as e:
                raise os_error(self.lock, e, "create the lock") from None
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            self._held = True
            return self
        raise InputError(f"could not lock {str(self.target)!r}", "retry")

    def __exit__(self, *exc) -> None:
        if self._held:
            self.lock.unlink(missing_ok=True)
            self._held = False


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` when the block succeeds.

    Args:
        path: The final directory.
        overwrite: Replace an existing non-empty directory.

    Raises:
        InputError: the destination exists (or appeared while the block ran) and ``overwrite`` is off.
        OutputError: the directory cannot be written (read-only, full disk, ...); nothing is left behind.
    """
    final = check_destination(path, overwrite)
    remove_stale(final.parent, f".{final.name}.tmp-")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    except OSError as e:
        raise os_error(final, e) from None
    try:
        yield tmp
        _move_into_place(tmp, final, overwrite)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise os_error(final, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _move_into_place(tmp: Path, final: Path, overwrite: bool) -> None:
    old = None
    if final.exists():
        if not overwrite and (not final.is_dir() or any(final.iterdir())):
            raise InputError(f"output {str(final)!r} appeared while this run was writing it; it was left as it is",
                             "choose another --output or pass --overwrite")
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{tmp.name[-8:]}")
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(output: str | Path | None, prefix: str = "hfdistac") -> Iterator[Path]:
    """A scratch folder beside ``output`` (``.NAME.scratch-PID-XXXX``), or in the system temporary folder
    when there is no output; removed afterwards, and stale ones of killed runs are removed first."""
    if output is not None:
        out = Path(output).expanduser().absolute()
        folder, name = out.parent, f".{out.name}.scratch-"
    else:
        folder, name = Path(tempfile.gettempdir()), f".{prefix}.scratch-"
    remove_stale(folder, name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{name}{os.getpid()}-", dir=folder))
    except OSError as e:
        raise os_error(folder, e, "create scratch space in") from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
