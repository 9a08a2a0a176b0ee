"""A worker process of ``hfdistac demo``: ``python -m hfdistac.demo.worker WORKDIR INDEX COUNT``.

Reads the demo's settings and job list from ``WORKDIR/jobs.json`` and runs jobs until none is left (see
:func:`hfdistac.demo.jobs.run_queue`). A user-facing error is recorded for the parent process, which raises it
(:func:`hfdistac.processes.write_worker_error`); any other failure leaves its traceback in the worker's log.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``WORKDIR INDEX COUNT``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        sys.stderr.write("usage: python -m hfdistac.demo.worker WORKDIR INDEX COUNT\n")
        return 2
    workdir, index = Path(args[0]), int(args[1])
    from transformers.utils import logging as hf_logging

    from ..errors import HfDistacError
    from ..processes import write_worker_error
    from ..runtime import tune_allocator
    from .config import DemoConfig
    from .jobs import JOBS_FILE, run_queue

    tune_allocator()  # a process of hfdistac's own, as the command line's
    hf_logging.disable_progress_bar()
    spec = json.loads((workdir / JOBS_FILE).read_text(encoding="utf-8"))
    config = DemoConfig(**{**spec["config"], "progress": False})
    try:
        run_queue(workdir, spec["jobs"], config)
    except HfDistacError as e:
        write_worker_error(workdir, index, e)
        sys.stderr.write(f"error: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
