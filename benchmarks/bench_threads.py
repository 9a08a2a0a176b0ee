"""Benchmark: thread counts on a machine whose cores are busy (``hfdistac --threads``).

Starts one spinning process per core (a busy neighbour), then times ``hfdistac condition`` and
``hfdistac merge`` on the example suite with ``--threads 1``, ``2``, … up to the core count, and with the default
(``--threads 0``: the free cores), ``--repeats`` times each, interleaved; then the same without the neighbour.
Prints median wall seconds and the default's ratio to the best count.

Usage::

    python benchmarks/bench_threads.py --suite example-suite          # a built suite (hfdistac example-suite DIR)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _spinners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def _commands(suite: Path, out: Path, threads: int) -> dict[str, list[str]]:
    hf = [sys.executable, "-m", "hfdistac.cli"]
    return {
        "condition (100 steps)": [*hf, "condition", "--recipe", str(suite / "recipes" / "norm-mismatch.yaml"), "--task",
                                  "colour", "--steps", "100", "--lr", "3e-4", "--output", str(out / "c"), "--overwrite",
                                  "--no-progress", "--threads", str(threads)],
        "merge (task arithmetic, every task)": [*hf, "merge", str(suite / "recipes" / "original.yaml"), "--method",
                                             "task_arithmetic", "--output", str(out / "m"), "--overwrite",
                                             "--no-progress", "--threads", str(threads)],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    counts = [*range(1, cores + 1), 0]
    for load in ("busy neighbour (one spinning process per core)", "idle"):
        spinners = _spinners(cores) if load.startswith("busy") else []
        try:
            time.sleep(1)
            times: dict[tuple[str, int], list[float]] = {}
            with tempfile.TemporaryDirectory() as tmp:
                for _ in range(args.repeats):
                    for n in counts:
                        for job, cmd in _commands(args.suite, Path(tmp), n).items():
                            times.setdefault((job, n), []).append(_time(cmd))
        finally:
            for s in spinners:
                s.kill()
                s.wait()
        print(f"\n{cores} cores, {load}; median wall s of {args.repeats} runs\n")
        print("| job | " + " | ".join(f"--threads {n}" + (" (default)" if n == 0 else "") for n in counts)
              + " | default / best |")
        print("|:--|" + "--:|" * (len(counts) + 1))
        for job in _commands(args.suite, Path("."), 0):
            med = {n: statistics.median(times[(job, n)]) for n in counts}
            best = min(med[n] for n in counts if n)
            print(f"| {job} | " + " | ".join(f"{med[n]:.1f}" for n in counts) + f" | {med[0] / best:.2f} |")


if __name__ == "__main__":
    main()
