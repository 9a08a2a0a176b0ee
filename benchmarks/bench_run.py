"""`hfdistac run` end to end on the example suite: each stage's time, what ran and what was reused, the evaluation
rate, and the second run of the same command (which must reuse every stage).

    python benchmarks/bench_run.py example-suite                       # norm-mismatch and low-confidence recipes
    python benchmarks/bench_run.py example-suite --recipes norm-mismatch --out /tmp/bench-run

Each run is a fresh process (`python -m hfdistac.cli run ...`), timed with its CPU time (children included); the
run's own report (run.json) gives the stages. Prints the user's Table 1 of each recipe and a timing table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(recipe: Path, out: Path, extra: list[str]) -> tuple[float, float, dict]:
    cpu0, t0 = _cpu(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hfdistac.cli", "run", str(recipe), "--output", str(out),
                           "--no-progress", *extra], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"hfdistac run failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, _cpu() - cpu0, json.loads((out / "run.json").read_text())


def _evaluated_images(out: Path) -> tuple[int, float]:
    """Images evaluated by the merges of a run and the seconds their first evaluation took (from merge reports)."""
    images = seconds = 0.0
    for report in sorted((out / "merges").glob("*/report.json")):
        zs = json.loads(report.read_text())["zero_shot"]
        images += zs.get("eval_images", 0)
        seconds += zs.get("eval_seconds", 0.0)
    return int(images), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("--recipes", nargs="+", default=["norm-mismatch", "low-confidence"])
    parser.add_argument("--out", type=Path, default=Path("bench-run"))
    parser.add_argument("--condition-lr", default="3e-4", help="the suite's fine-tuning rate, as the demo uses")
    args = parser.parse_args()
    rows = []
    for name in args.recipes:
        recipe = args.suite.resolve() / "recipes" / f"{name}.yaml"
        out = args.out.resolve() / name
        extra = ["--condition-lr", args.condition_lr]
        first = run_once(recipe, out, extra)
        second = run_once(recipe, out, extra)
        print(f"\n## {name}\n")
        print((out / "table.md").read_text())
        images, seconds = _evaluated_images(out)
        for label, (wall, cpu, report) in (("first run", first), ("second run", second)):
            ran = [s["stage"] for s in report["stages"] if not s["reused"]]
            rows.append((name, label, wall, cpu, len(report["stages"]), len(ran),
                         f"{images / seconds:.0f}" if label == "first run" and seconds else ""))
        print("\n| stage | first run (s) | second run |\n|:--|--:|:--|")
        for a, b in zip(first[2]["stages"], second[2]["stages"], strict=True):
            print(f"| {a['stage']} | {a['seconds']:.1f} | {'reused' if b['reused'] else 'RAN'} ({b['seconds']:.2f} s) |")
    print("\n| recipe | run | wall (s) | CPU (s) | stages | stages run | zero-shot eval images/s |")
    print("|:--|:--|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]} | {r[5]} | {r[6]} |")


if __name__ == "__main__":
    main()
