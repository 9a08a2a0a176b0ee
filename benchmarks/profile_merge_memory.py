"""Profile: the resident memory of each stage of one ``merge`` (task vectors, reference rows, merge, write).

Runs ``run_merge`` in this process with a thread sampling its RSS every 10 ms, and prints the RSS and the peak
since the previous mark at the start and end of each stage, then the process's peak (``ru_maxrss``). Use it on
the 8-task look-alike of ``bench_real_size.py`` (which writes ``WORKDIR/recipe-8.yaml``) with the same settings
as its merge stage: 16 validation and test images per task, α in {0.3, 0.4}; SAMerging 4 steps × 2 batches per
task, WUDI 5 iterations (its time changes with them, not what is resident).

Usage::

    python benchmarks/profile_merge_memory.py /tmp/real/recipe-8.yaml regmean    # needs psutil
"""

from __future__ import annotations

import argparse
import functools
import resource
import sys
import threading
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe")
    p.add_argument("method")
    p.add_argument("--output", default=None, help="where the merge writes (default: a temporary folder)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    import tempfile

    import psutil

    proc, peak = psutil.Process(), [0]

    def sample() -> None:
        while True:
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.01)

    threading.Thread(target=sample, daemon=True).start()

    def mark(what: str) -> None:
        rss = proc.memory_info().rss
        print(f"[{time.strftime('%H:%M:%S')}] {what}: rss {rss / 2**20:.0f} MB, peak since last mark "
              f"{max(peak[0], rss) / 2**20:.0f} MB", flush=True)
        peak[0] = rss

    import torch

    torch.set_num_threads(a.threads)
    from hfdistac.runtime import tune_allocator

    tune_allocator()  # as the command line does
    import hfdistac.merge_eval.methods as methods
    import hfdistac.merge_eval.outputs as outputs
    import hfdistac.merge_eval.scoring as scoring
    import hfdistac.merge_eval.sources as sources
    from hfdistac.merge_eval import MergeConfig, run_merge

    def wrap(owner, name: str, label: str) -> None:
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def marked(*args, **kwargs):
            suffix = f" {args[0]}" if args and isinstance(args[0], str) else ""
            mark(f"before {label}{suffix}")
            out = inner(*args, **kwargs)
            mark(f"after {label}{suffix}")
            return out

        setattr(owner, name, marked)

    wrap(sources, "build_task_vectors", "task vectors")
    wrap(scoring, "load_task_data", "task data")
    wrap(scoring, "reference_rows", "reference rows")
    wrap(methods, "merge_with", "merge")
    wrap(outputs.OutputWriter, "method", "write")
    extra = {"steps": 4, "batches_per_task": 2} if a.method == "samerging" else {"wudi_iterations": 5}
    with tempfile.TemporaryDirectory() as tmp:
        mark("start")
        run_merge(MergeConfig(recipe=a.recipe, method=a.method, val_limit=16, test_limit=16, alpha_grid=[0.3, 0.4],
                              output=a.output or f"{tmp}/out", overwrite=True, progress=False, **extra))
        mark("done")
    print(f"peak RSS of the process (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
