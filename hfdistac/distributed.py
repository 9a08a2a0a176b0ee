"""Several processes, one result: the process group of ``accelerate launch`` / ``torchrun``, and the few collective
operations that merging and evaluating need.

``hfdistac condition`` trains data-parallel through its ``Accelerator``. ``hfdistac merge`` (and ``run``'s merges)
split their *evaluation* instead: every process builds the same merged weights, runs its share of each split's
batches, and the logits are gathered back into the split's row order (:func:`gather_rows`), so every process then
computes the same accuracies, α and temperatures as one process would, to the last counted image. Statistics over
unlabeled images (RegMean's Gram matrices, SAMerging's gradient) are summed or averaged over the processes
(:func:`all_reduce_sum`). Only the main process writes and pushes (:func:`is_main`).

Without a process group every function here is the one-process identity, so the library runs unchanged in a
plain Python process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)


def start(device: torch.device) -> torch.device:
    """Join the process group a launcher describes (``accelerate launch``, ``torchrun``), if any, and return the
    device this process evaluates on: its own GPU under a multi-GPU launch, else ``device``.

    In a plain process this creates accelerate's one-process state and changes nothing.
    """
    from accelerate import PartialState

    state = PartialState(cpu=device.type == "cpu")
    if state.num_processes > 1 and device.type == "cuda" and state.device.type == "cuda":
        return state.device
    return device


def local_device_index() -> int | None:
    """This process's GPU index on its machine under a multi-GPU launch (``None`` on CPUs or in one process)."""
    if world()[1] > 1 and torch.cuda.is_available() and torch.distributed.get_backend() == "nccl":
        return torch.cuda.current_device()
    return None


def world() -> tuple[int, int]:
    """``(rank, number of processes)`` of the default process group; ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this is the process that writes, pushes and prints (rank 0, or the only process)."""
    return world()[0] == 0


def finish(wait: bool = True) -> None:
    """Leave the process group at the end of a command, so that no communication thread outlives the interpreter
    (gloo's can abort a process at exit otherwise): wait for the other processes first (``wait``, after success;
    not after an error, when they may never arrive), then destroy the group. A no-op without one."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    try:
        if wait and world()[1] > 1:
            torch.distributed.barrier()
    except RuntimeError as e:  # another process is gone: its own error is the one to read
        logger.warning("leaving the process group without the other processes (%s)", str(e).splitlines()[0][:200])
    torch.distributed.destroy_process_group()


def _comm_device() -> torch.device:
    """Where collective tensors must live: this process's GPU for NCCL, the CPU otherwise."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait until every process gets here (a no-op in one process)."""
    if world()[1] > 1:
        torch.distributed.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the processes, in place (a no-op in one process); returns it."""
    if world()[1] > 1:
        dev = _comm_device()
        moved = tensor.to(dev)
        torch.distributed.all_reduce(moved, op=torch.distributed.ReduceOp.SUM)
        if moved is not tensor:
            tensor.copy_(moved)
    return tensor


def broadcast_values(values: Sequence[float]) -> list[float]:
    """The main process's ``values`` (a few numbers, same count everywhere) on every process."""
    if world()[1] == 1:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=_comm_device())
    torch.distributed.broadcast(t, src=0)
    return t.cpu().tolist()


def gather_rows(tensors: Sequence[torch.Tensor], positions: torch.Tensor) -> list[torch.Tensor]:
    """Every process's rows of ``tensors`` (same first dimension as ``positions``), on every process, ordered by
    ``positions`` (each row's index in the whole split, unique across processes).

    One process: the tensors reordered by ``positions``. Rows are exchanged as tensors (padded to the longest
    process's count), never pickled.
    """
    order_local = torch.argsort(positions, stable=True)
    if world()[1] == 1:
        return [t[order_local] for t in tensors]
    dev = _comm_device()
    size = torch.tensor([len(positions)], device=dev)
    sizes = [torch.zeros_like(size) for _ in range(world()[1])]
    torch.distributed.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    longest = max(counts)

    def gathered(t: torch.Tensor) -> torch.Tensor:
        padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=dev)
        padded[:len(t)] = t.to(dev)
        parts = [torch.empty_like(padded) for _ in counts]
        torch.distributed.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)]).cpu()

    all_positions = gathered(positions.long())
    if len(torch.unique(all_positions)) != len(all_positions):
        raise RuntimeError("gather_rows: two processes evaluated the same row (the split was not partitioned)")
    order = torch.argsort(all_positions, stable=True)
    return [gathered(t)[order] for t in tensors]


def own_batches(num_batches: int, rank: int, count: int) -> list[int]:
    """The batches of a split that process ``rank`` of ``count`` evaluates: every ``count``-th, from ``rank``.

    Whole batches, so each image is run in the same batch as in one process (bit-identical logits), and the last,
    smaller batch goes to one process only.
    """
    return list(range(rank, num_batches, count))


def batch_slices(sizes: Sequence[int], rank: int, count: int) -> list[tuple[int, int]]:
    """Process ``rank``'s rows ``[start, stop)`` of each batch of ``sizes`` images, when every batch is split across
    the ``count`` processes in near-equal contiguous slices (the first ``size % count`` slices one row longer)."""
    out = []
    for size in sizes:
        base, extra = divmod(size, count)
        start = rank * base + min(rank, extra)
        out.append((start, start + base + (1 if rank < extra else 0)))
    return out
