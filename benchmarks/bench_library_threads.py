"""A library call (`run_merge`) next to a busy neighbour: with the command line's thread default, which library
calls now apply (the free cores), against torch's own default (every core), side by side in one run.

    python benchmarks/bench_library_threads.py example-suite [--repeats 3]

One busy-loop process plays the neighbour; each measurement is a fresh Python process merging the suite's
original recipe with task arithmetic (fixed α, so the work is one evaluation per task). Prints median wall and
CPU seconds per setting and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, time, resource, torch
import hfdistac.runtime as r
mode, recipe, out = sys.argv[1:4]
if mode == "torch-default":
    r._threads_chosen = True                 # as before: library calls left torch's default in place
    torch.set_num_threads(r.available_cores())
from hfdistac import MergeConfig, run_merge
t0, c0 = time.perf_counter(), time.process_time()
run_merge(MergeConfig(recipe=recipe, method="task_arithmetic", alpha=0.3, output=out, progress=False))
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "threads": torch.get_num_threads()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    recipe = str(args.suite.resolve() / "recipes" / "original.yaml")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    results: dict[str, list[dict]] = {"policy (free cores)": [], "torch-default": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.repeats):
                for mode in results:
                    out = Path(tmp) / f"{i}-{mode.split()[0]}"
                    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_NUM_THREADS",)}
                    proc = subprocess.run([sys.executable, "-c", CHILD, mode.split()[0], recipe, str(out)],
                                          capture_output=True, text=True, env=env)
                    if proc.returncode:
                        raise SystemExit(proc.stderr[-2000:])
                    results[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    finally:
        burner.kill()
    print("| setting | threads | median wall (s) | median CPU (s) |\n|:--|--:|--:|--:|")
    med = {}
    for mode, rows in results.items():
        med[mode] = statistics.median(r["wall"] for r in rows)
        print(f"| {mode} | {rows[0]['threads']} | {med[mode]:.1f} | {statistics.median(r['cpu'] for r in rows):.1f} |")
    print(f"\ntorch's default / policy, wall: {med['torch-default'] / med['policy (free cores)']:.2f}x")


if __name__ == "__main__":
    main()
