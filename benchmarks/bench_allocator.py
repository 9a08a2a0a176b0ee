"""What glibc's allocator settings cost on the example suite's towers: a merge and a DisTaC run, three settings.

Each run is its own process (``ru_utime``/``ru_stime``, minor page faults and peak RSS are that process's):

* ``glibc default`` — nothing set (what a library caller gets);
* ``fixed 1 MB (until 2026-12-08)`` — ``mallopt(M_MMAP_THRESHOLD, 1 MB)`` as the command line set for every
  command: every block from 1 MB up, the suite's activations included, is a fresh mapping, and the heap's top is
  trimmed at 128 KB;
* ``tuned (now)`` — :func:`hfdistac.runtime.tune_allocator` as the command line calls it (32 MB / 64 MB; the
  loaders switch to 1 MB only for towers with megabyte-sized tensors, which the suite's are not).

The settings run in turn within each repetition, so a busy neighbour weighs on all of them alike; the table
gives medians and each setting's CPU time over the tuned one's. At ViT-B/32 size the tuned process switches to
the 1 MB release (``benchmarks/bench_real_size.py --stages condition merge`` measures its peak memory).

Usage::

    hfdistac example-suite example-suite
    python benchmarks/bench_allocator.py --suite example-suite --reps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {"glibc default": "none", "fixed 1 MB (until 2026-12-08)": "fixed", "tuned (now)": "tuned"}

CHILD = r"""
import ctypes, ctypes.util, json, resource, sys, time
setting, kind, suite, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
import torch
torch.set_num_threads(1)
if setting == "fixed":
    ctypes.CDLL(ctypes.util.find_library("c")).mallopt(-3, 1 << 20)
elif setting == "tuned":
    from hfdistac.runtime import tune_allocator
    assert tune_allocator()
recipe = f"{suite}/recipes/low-confidence.yaml"
start = time.perf_counter()
if kind == "merge":
    from hfdistac.merge_eval import MergeConfig, run_merge
    run_merge(MergeConfig(recipe=recipe, method="task_arithmetic", output=out, overwrite=True, progress=False))
else:
    from hfdistac.distac import ConditionConfig, run_condition
    run_condition(ConditionConfig(recipe=recipe, task="digits", preset="confidence", steps=steps, output=out,
                                  overwrite=True, progress=False))
wall = time.perf_counter() - start
import hfdistac.runtime as rt
r = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": wall, "user": r.ru_utime, "sys": r.ru_stime, "faults": r.ru_minflt,
                  "rss_mb": r.ru_maxrss / 1024, "allocator": rt._allocator}))
"""


def run(setting: str, kind: str, suite: Path, out: Path, steps: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, setting, kind, str(suite), str(out), str(steps)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} with {setting} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", type=Path, default=Path("example-suite"), help="a built example suite")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=100, help="DisTaC steps of the conditioning run")
    a = p.parse_args()
    if not (a.suite / "recipes" / "low-confidence.yaml").is_file():
        raise SystemExit(f"{a.suite} is not a built example suite: run `hfdistac example-suite {a.suite}` first")
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.reps):
            for kind in ("merge", "condition"):
                for label, setting in SETTINGS.items():
                    r = run(setting, kind, a.suite.resolve(), Path(tmp) / f"{kind}-{setting}", a.steps)
                    results.setdefault((kind, label), []).append(r)
                    print(f"rep {rep + 1}/{a.reps} {kind:9s} {label:30s} user {r['user']:6.1f} s  sys "
                          f"{r['sys']:5.1f} s  faults {r['faults']:>9,}", file=sys.stderr, flush=True)
    print(f"\nmedians of {a.reps} runs, one torch thread; merge = task arithmetic on low-confidence.yaml "
          f"(21 alphas x 8 tasks' holdout + test); condition = {a.steps} DisTaC steps x 128 images\n")
    print("| run | allocator | wall s | user s | sys s | CPU s | CPU / tuned | minor faults | peak RSS MB |")
    print("|:--|:--|--:|--:|--:|--:|--:|--:|--:|")
    for kind in ("merge", "condition"):
        tuned = statistics.median(r["user"] + r["sys"] for r in results[(kind, "tuned (now)")])
        for label in SETTINGS:
            rs = results[(kind, label)]
            med = {k: statistics.median(r[k] for r in rs) for k in ("wall", "user", "sys", "faults", "rss_mb")}
            cpu = statistics.median(r["user"] + r["sys"] for r in rs)
            print(f"| {kind} | {label} | {med['wall']:.1f} | {med['user']:.1f} | {med['sys']:.1f} | {cpu:.1f} | "
                  f"{cpu / tuned:.2f} | {med['faults']:,.0f} | {med['rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
