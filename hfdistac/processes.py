"""Worker processes: run a job module in parallel processes and wait for them, failing fast.

Tiny models (the example suite's, the demo's) spend most of a step in per-operation overhead that a second
torch thread does not share: measured on the suite, a DisTaC run takes 25.2 s at one thread and 21.1 s at
two, a merge 20.4 and 18.5 s. Two processes of one thread each do nearly twice the work of one process of
two. :func:`run_worker_processes` starts ``count`` processes of a job module (``python -m MODULE WORKDIR
INDEX COUNT``), follows their progress and, when one fails, stops the others and raises: the error the job
raised when the worker recorded one (:func:`write_worker_error`), else the tail of the worker's log.

Processes are started with :mod:`subprocess` (not :mod:`multiprocessing`): nothing is pickled, and a script
that calls the library needs no ``if __name__ == "__main__"`` guard, which the spawn start method would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import errors

ERROR_FILE = "worker-{index}.error.json"
LOG_FILE = "worker-{index}.log"


def module_command(module: str, workdir: Path, index: int, count: int) -> list[str]:
    """The command line of worker ``index`` of ``count``: ``python -m MODULE WORKDIR INDEX COUNT``."""
    return [sys.executable, "-m", module, str(workdir), str(index), str(count)]


def write_worker_error(workdir: Path, index: int, error: errors.HfDistacError) -> None:
    """Record a user-facing error of worker ``index`` so the parent raises the same error (type, message, hint)."""
    path = Path(workdir) / ERROR_FILE.format(index=index)
    path.write_text(json.dumps({"type": type(error).__name__, "message": error.message, "hint": error.hint}),
                    encoding="utf-8")


def worker_failure(workdir: Path, index: int, code: int, what: str) -> Exception:
    """The error of worker ``index`` that exited with ``code``: the one it recorded (:func:`write_worker_error`),
    else a ``RuntimeError`` with the tail of its log."""
    recorded = Path(workdir) / ERROR_FILE.format(index=index)
    if recorded.is_file():
        e = json.loads(recorded.read_text(encoding="utf-8"))
        cls = getattr(errors, e["type"], None)
        if isinstance(cls, type) and issubclass(cls, errors.HfDistacError):
            return cls(e["message"], e["hint"])
    tail = (Path(workdir) / LOG_FILE.format(index=index)).read_text(errors="replace")[-2000:]
    return RuntimeError(f"{what} worker {index} exited with code {code}:\n{tail}")


def run_worker_processes(command: Callable[[int, int], list[str]], count: int, workdir: Path, *,
                         finished: Callable[[], int], total: int, what: str, bar=None,
                         poll_seconds: float = 0.2) -> None:
    """Run ``count`` worker processes until ``finished()`` reaches ``total``; raise as soon as one fails.

    Args:
        command: ``command(index, count)`` → the worker's command line (see :func:`module_command`).
        count: Number of processes.
        workdir: Where each worker's log (``worker-<i>.log``, its stdout and stderr) is written.
        finished: How many jobs are done (read from the files the workers leave).
        total: How many jobs there are.
        what: How to name the workers in an error ("example-suite fine-tuning").
        bar: A tqdm bar advanced as jobs finish (optional).
        poll_seconds: How often progress and exit codes are checked.

    Raises:
        HfDistacError: the error a worker recorded with :func:`write_worker_error`.
        RuntimeError: a worker exited non-zero without one (its log's tail in the message), or every worker
            exited while jobs were left.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    procs, logs = [], []
    try:
        for i in range(count):
            log = open(workdir / LOG_FILE.format(index=i), "wb")  # noqa: SIM115 (closed below)
            logs.append(log)
            procs.append(subprocess.Popen(command(i, count), stdout=log, stderr=subprocess.STDOUT))
        done = 0
        while done < total:
            now = finished()
            if bar is not None:
                bar.update(now - done)
            done = now
            failed = [(i, p.returncode) for i, p in enumerate(procs) if p.poll() not in (None, 0)]
            if failed:
                raise worker_failure(workdir, *failed[0], what)
            if done < total:
                # every worker exited cleanly: count again (one may have finished since the count above)
                if all(p.poll() == 0 for p in procs) and finished() < total:
                    raise RuntimeError(f"{what} workers finished with {finished()} of {total} jobs done")
                time.sleep(poll_seconds)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for log in logs:
            log.close()
