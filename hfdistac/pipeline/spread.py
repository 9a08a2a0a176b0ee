"""Conditioning several flagged tasks on several processes: each process conditions its own tasks, alone.

Under ``accelerate launch --num_processes N`` with at least N flagged tasks, ``run`` gives process r the tasks
r, r + N, … and each is conditioned as one ``condition`` run of a single process (a child process with the
launcher's variables removed, on the process's own GPU), instead of one task after another across all N
processes. Measured on the example suite (2 CPU processes, 2 tasks × 60 steps, ``benchmarks/bench_processes.py``):
22.8 s one after another across both, 10.0 s side by side; no gradient is exchanged, and each task's result is
exactly the one-process result. With fewer tasks than processes each task is conditioned across all of them
(:func:`~.chain.condition`), so no process idles.

``python -m hfdistac.pipeline.spread JOB.json`` is the child: it runs one :class:`ConditionConfig` and records a
user-facing error for the parent (:func:`hfdistac.processes.write_worker_error`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Variables of a launcher (accelerate, torchrun) that would make the child join the parent's process group.
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                    "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "ACCELERATE_USE_CPU")


def spreads(tasks: int, processes: int) -> bool:
    """Whether ``tasks`` flagged tasks are spread over ``processes`` (one per process) rather than each run across
    all of them: when every process gets at least one."""
    return processes > 1 and tasks >= processes


def child_environment(environ: dict[str, str], device_index: int | None, threads: int = 1) -> dict[str, str]:
    """``environ`` without the launcher's variables (a process of its own), on GPU ``device_index`` when given,
    with ``threads`` torch threads (its share of the cores: the other processes' children run beside it)."""
    env = {k: v for k, v in environ.items() if k not in LAUNCH_VARIABLES}
    env["OMP_NUM_THREADS"] = str(max(1, threads))
    if device_index is not None:
        visible = environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else None
        env["CUDA_VISIBLE_DEVICES"] = devices[device_index] if devices and device_index < len(devices) \
            else str(device_index)
    return env


def condition_spread(jobs: list[tuple[str, Path, dict[str, Any], bool]], run_here: Callable[[dict], dict],
                     environ: dict[str, str], device_index: int | None) -> dict[str, dict]:
    """Condition this process's share of ``jobs`` (``(task, output, ConditionConfig fields, reused)``), each in a
    child process of its own; every process raises if any process's share failed.

    Args:
        jobs: Every flagged task, in the same order on every process; ``reused``: its output is up to date (the
            main process decided for all), nothing to do.
        run_here: Reads a finished job's report (``fields`` → report).
        environ: The environment to start the children from.
        device_index: This process's GPU (``None`` on CPUs).

    Returns:
        Task → its report, for every job (read back after all processes are done).
    """
    import torch

    from ..distributed import all_reduce_sum, barrier, world
    from ..errors import TrainingError
    from ..processes import worker_failure
    from ..runtime import available_cores

    rank, count = world()
    threads = max(1, available_cores() // count)
    failure: Exception | None = None
    for i, (name, out, fields, reused) in enumerate(jobs):
        if i % count != rank or reused:
            continue
        workdir = out.parent / f".{out.name}.spread-{os.getpid()}"
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "job.json").write_text(json.dumps(fields), encoding="utf-8")
        logger.info("process %d conditions %s alone", rank, name)
        with open(workdir / "child.log", "wb") as log:
            code = subprocess.run([sys.executable, "-m", __name__, str(workdir)], stdout=log,
                                  stderr=subprocess.STDOUT, env=child_environment(environ, device_index, threads)).returncode
        if code != 0:  # its recorded error (or its log's tail) is kept in the exception
            failure = worker_failure(workdir, 0, code, f"conditioning {name!r}")
        shutil.rmtree(workdir, ignore_errors=True)
        if failure is not None:
            break
    failed = int(all_reduce_sum(torch.tensor([float(failure is not None)]))[0])  # every process learns of it
    if failure is not None:
        raise failure
    if failed:
        raise TrainingError(f"conditioning failed on {failed} other process(es)", "see their error above")
    barrier()
    return {name: run_here(fields) for name, _, fields, _ in jobs}


def main(argv: list[str] | None = None) -> int:
    """The child: ``python -m hfdistac.pipeline.spread WORKDIR`` runs ``WORKDIR/job.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m hfdistac.pipeline.spread WORKDIR\n")
        return 2
    workdir = Path(args[0])
    from ..conditioning import ConditionConfig, run_condition
    from ..errors import HfDistacError
    from ..processes import write_worker_error

    try:
        run_condition(ConditionConfig(**json.loads((workdir / "job.json").read_text(encoding="utf-8"))))
    except HfDistacError as e:
        write_worker_error(workdir, 0, e)
        sys.stderr.write(f"error: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
