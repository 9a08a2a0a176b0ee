"""Process settings the command line applies before a command: CPU threads, and memory given back when freed.

Threads: hfdistac never oversubscribes the cores.

torch's default intra-op thread count is the number of cores, whatever else runs. On a machine whose cores are
busy that is the worst choice: OpenMP threads wait for each other at every operation while the neighbours hold
the cores (measured: ``hfdistac demo`` took 3,682 s at the default and 342 s with one thread, with an identical
result). :func:`default_threads` takes the cores this process may use and leaves out those other processes are
running on right now; :func:`set_threads` applies a count (``hfdistac --threads N``; the command line calls it
before every command), and :func:`apply_thread_policy` gives library calls (``run_merge(...)``) the same
default once per process. Worker processes get their share: the example suite's fine-tuning workers, the demo's
step workers (:mod:`hfdistac.processes`) and DataLoader workers run one thread each, and as many workers as
there are free cores.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

logger = logging.getLogger(__name__)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def busy_cores(samples: int = 5, interval: float = 0.01) -> int:
    """Cores other processes are running on now: runnable tasks in ``/proc/stat`` minus this one (the largest
    of a few samples; 0 where ``/proc/stat`` does not exist)."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/stat") as f:
                running = next(int(line.split()[1]) for line in f if line.startswith("procs_running"))
        except (OSError, StopIteration, ValueError):
            return 0
        counts.append(max(0, running - 1))
        if i + 1 < samples:
            time.sleep(interval)
    return max(counts)


def free_cores() -> int:
    """Cores nobody else is using: :func:`available_cores` minus :func:`busy_cores`, at least 1."""
    return max(1, available_cores() - busy_cores())


def default_threads() -> int:
    """The thread count hfdistac uses unless told otherwise: the free cores (see the module docstring)."""
    return free_cores()


_threads_chosen = False  # set_threads was called (by the command line, the user, or the policy below)


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (``None`` or 0: :func:`default_threads`); returns the count.

    Also the way to override the library's default (``hfdistac.set_threads(4)`` before ``run_merge(...)``)."""
    import torch

    global _threads_chosen
    n = int(threads) if threads else default_threads()
    torch.set_num_threads(n)
    _threads_chosen = True
    logger.info("torch intra-op threads: %d (%d cores available)", n, available_cores())
    return n


def apply_thread_policy() -> int | None:
    """The command line's thread default for library calls: every ``run_*`` function calls this first.

    The first call in a process sets torch's threads to :func:`default_threads` (the free cores), as ``hfdistac
    COMMAND`` does, unless the count was already chosen: by :func:`set_threads` (the command line's
    ``--threads``, or the caller), or by ``OMP_NUM_THREADS`` in the environment. Later calls do nothing, so a
    caller's own ``torch.set_num_threads`` after the first run is kept. Returns the count it set, or ``None``.
    """
    global _threads_chosen
    if _threads_chosen or os.environ.get("OMP_NUM_THREADS"):
        _threads_chosen = True
        return None
    return set_threads(None)


#: Allocations from this size up are served by mmap and given back to the system when freed (glibc).
MMAP_THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3


def release_freed_memory() -> bool:
    """Make freed tensors give their memory back to the system (glibc only; a no-op elsewhere).

    glibc serves allocations above a *dynamic* threshold with mmap and returns them on free; but every large
    block freed raises the threshold (up to 32 MB), after which tensors of a ViT-B/32 tower (≤ 9.4 MB each) come
    from the heap, and memory freed there stays in the process. A fixed 1 MB threshold keeps the peak resident
    size near what is alive: measured on ``condition`` at ViT-B/32, 3.48 → 3.20 GB. The command line calls this
    first; returns whether it took effect.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        return bool(ctypes.CDLL(name).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def torch_state(threads: int | None):
    """Isolate the caller's global torch RNG state (and optionally its thread count) from what runs inside.

    The example suite's training and the demo's steps run at one thread inside it, so their results do not
    depend on the machine's core count or on how many worker processes share the work.
    """
    import torch

    global _threads_chosen
    old_threads, old_chosen = torch.get_num_threads(), _threads_chosen
    with torch.random.fork_rng(devices=[]):
        if threads:
            torch.set_num_threads(threads)
            _threads_chosen = True  # a library call made inside keeps this count (apply_thread_policy)
        try:
            yield
        finally:
            torch.set_num_threads(old_threads)
            _threads_chosen = old_chosen
