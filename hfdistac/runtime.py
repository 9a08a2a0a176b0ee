"""Process settings the command line applies before a command: CPU threads, and how freed memory is reused.

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

Memory: :func:`tune_allocator` (the command line and hfdistac's worker processes call it first) lets glibc reuse
freed blocks of the sizes a forward pass allocates again and again, and :func:`fit_allocator_to_model` (called by
the checkpoint loaders) switches a process to giving freed blocks back to the system once it loads a tower whose
parameter tensors are megabyte-sized, where keeping them would cost hundreds of MB.
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


#: glibc's allocator (``mallopt`` parameters) and the values hfdistac gives them.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Where glibc's own dynamic thresholds settle once a large block has been freed (64-bit): blocks up to 32 MB come
#: from the heap and are reused, and up to 64 MB freed at the heap's top stays there.
RECYCLE_MMAP_BYTES, RECYCLE_TRIM_BYTES = 32 << 20, 64 << 20
#: With towers whose parameter tensors reach this size, blocks from this size up are mmapped and given back
#: to the system when freed; the heap's top is trimmed at glibc's default (128 KB).
RELEASE_MMAP_BYTES, RELEASE_TRIM_BYTES = 1 << 20, 128 << 10

_allocator = None  # None: glibc's defaults (not tuned); "recycle" or "release": what tune/fit set


def _mallopt(settings: list[tuple[int, int]]) -> bool:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return all(bool(libc.mallopt(param, value)) for param, value in settings)
    except (OSError, AttributeError):  # not glibc
        return False


def tune_allocator() -> bool:
    """Let freed memory be reused by the same sizes, until a large tower is loaded (glibc only; else a no-op).

    glibc serves blocks above a *dynamic* threshold with mmap, a fresh mapping every time, each page faulted in
    and zeroed by the kernel; every large block freed raises that threshold (up to 32 MB). A forward pass
    allocates the same activation sizes batch after batch, so until the threshold has risen they are mapped and
    unmapped each time, and the heap's top is trimmed and grown again. Setting the thresholds where glibc would
    settle anyway (32 MB mmap, 64 MB trim) makes that deterministic from the first batch. On the example suite's
    towers a fixed 1 MB threshold, which the command line set for every command until 2026-12-08, cost a merge
    26.0 CPU s against 18.9 and a 100-step DisTaC run 25.3 against 21.0 (``benchmarks/bench_allocator.py``).
    :func:`fit_allocator_to_model` then switches to giving memory back when a tower with megabyte-sized tensors is
    loaded. The command line and hfdistac's worker processes call this first; library calls leave the allocator
    to the caller. Returns whether it took effect.
    """
    global _allocator
    if _allocator is not None:
        return True
    if not _mallopt([(_M_MMAP_THRESHOLD, RECYCLE_MMAP_BYTES), (_M_TRIM_THRESHOLD, RECYCLE_TRIM_BYTES)]):
        return False
    _allocator = "recycle"
    return True


def fit_allocator_to_model(largest_tensor_bytes: int) -> bool:
    """After :func:`tune_allocator`: give freed memory back to the system once a tower's parameter tensors reach
    :data:`RELEASE_MMAP_BYTES` (ViT-B/32's are 2.4 and 9.4 MB; the example suite's at most 0.15 MB).

    Freed parameter-sized blocks would otherwise stay in the process: blocks from 1 MB up are mmapped and unmapped
    when freed, which kept ``condition``'s peak resident size at ViT-B/32 at 3.20 GB instead of 3.48 GB when it was
    introduced (``benchmarks/bench_real_size.py --stages condition``: 2,901 MB now, 2,902 MB when the command line
    set the 1 MB threshold for every command, the same weights), at the price of a fresh mapping for every
    activation from 1 MB up. The loaders of :mod:`hfdistac.checkpoints` call this; it does nothing unless the
    process tuned its allocator, and never goes back. Returns whether the allocator now releases.
    """
    global _allocator
    if _allocator == "recycle" and largest_tensor_bytes >= RELEASE_MMAP_BYTES \
            and _mallopt([(_M_MMAP_THRESHOLD, RELEASE_MMAP_BYTES), (_M_TRIM_THRESHOLD, RELEASE_TRIM_BYTES)]):
        _allocator = "release"
    return _allocator == "release"


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
