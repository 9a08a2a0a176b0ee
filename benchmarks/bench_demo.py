"""Benchmark: the README's main command, stage by stage, and the demo's steps in one process vs several.

1. ``--main-command``: the README's main command on a fresh directory (``hfdistac example-suite``, ``hfdistac
   inspect``, ``hfdistac demo``), each stage's wall and CPU seconds (CPU of the process and its children).
2. The demo on an existing suite with ``--workers 1`` and with the default (one process per free core),
   alternated ``--repeats`` times, ``--overwrite`` each time; median wall and CPU seconds, the ratio, and whether
   the two wrote the same Table 1 (they must: every step runs at one torch thread either way).

Usage::

    python benchmarks/bench_demo.py --main-command                                  # ~10 min on 2 cores
    python benchmarks/bench_demo.py --suite example-suite --mismatch-tasks colour   # 1 of the 8 runs, faster
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HF = [sys.executable, "-m", "hfdistac.cli"]


def _run(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall s, CPU s of the command and everything it started)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main_command(work: Path) -> None:
    stages = [("example-suite", [*HF, "example-suite", "example-suite", "--no-progress"]),
              ("inspect", [*HF, "inspect", "example-suite/recipes/norm-mismatch.yaml", "--no-progress"]),
              ("demo", [*HF, "demo", "hfdistac-demo", "--suite", "example-suite", "--no-progress"])]
    rows = [(name, *_run(cmd, work)) for name, cmd in stages]
    print("| stage | wall s | CPU s |\n|:--|--:|--:|")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:.0f} | {cpu:.0f} |")
    print(f"| **total** | **{sum(r[1] for r in rows):.0f}** | {sum(r[2] for r in rows):.0f} |")
    summary = json.loads((work / "hfdistac-demo" / "demo.json").read_text())
    print(f"\ndemo: {summary['workers']} worker process(es); {summary['timings_s']}")


def workers_side_by_side(suite: Path, work: Path, tasks: list[str], repeats: int) -> None:
    results: dict[str, list[tuple[float, float]]] = {"1": [], "default": []}
    tables: dict[str, dict] = {}
    processes: dict[str, int] = {}
    for _ in range(repeats):
        for label in ("1", "default"):
            out = work / f"demo-{label}"
            cmd = [*HF, "demo", str(out), "--suite", str(suite.resolve()), "--overwrite", "--no-progress",
                   "--workers", "1" if label == "1" else "0"]
            if tasks:
                cmd += ["--mismatch-tasks", *tasks]
            results[label].append(_run(cmd, work))
            summary = json.loads((out / "demo.json").read_text())
            tables[label] = {"table": summary["table"], "kappa_sweep": summary["kappa_sweep"]}
            processes[label] = summary["workers"]
    print("| --workers | processes | median wall s | median CPU s |\n|:--|--:|--:|--:|")
    med = {}
    for label in ("1", "default"):
        walls, cpus = zip(*results[label], strict=True)
        med[label] = statistics.median(walls)
        print(f"| {label} | {processes[label]} | {med[label]:.1f} | {statistics.median(cpus):.1f} |")
    print(f"\nspeed-up of the default over one process: {med['1'] / med['default']:.2f}x (wall, medians of {repeats})")
    print(f"same Table 1 and kappa sweep: {'yes' if tables['1'] == tables['default'] else 'NO'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--main-command", action="store_true", help="time the README's main command on a fresh directory")
    p.add_argument("--suite", type=Path, help="an existing example suite (for the side-by-side)")
    p.add_argument("--mismatch-tasks", nargs="*", default=[], help="norm-mismatch runs of the side-by-side "
                   "(default: all, as the demo)")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        if args.main_command:
            main_command(Path(tmp))
        if args.suite:
            workers_side_by_side(args.suite, Path(tmp), args.mismatch_tasks, args.repeats)
        if not (args.main_command or args.suite):
            p.error("give --main-command, --suite DIR or both")


if __name__ == "__main__":
    main()
