"""One process against two: `hfdistac merge` and `hfdistac run` on the example suite, plain and under
`accelerate launch --multi_gpu --num_processes 2` (on CPUs: ACCELERATE_USE_CPU=1), side by side, with the
results compared.

    python benchmarks/bench_processes.py example-suite                 # merge x3 each, run x1 each, layouts
    python benchmarks/bench_processes.py example-suite --repeats 5 --skip-run

Every command is a fresh process (wall and CPU time, children included; medians over the repeats, the two
settings alternated so that a noisy neighbour hits both). Merges use a warm evaluation cache (the individual
models' accuracies), as a second merge of the same recipe does; each `run` starts from an empty output.
"Identical" compares, per method, α, every α-curve point and every test accuracy; merged weights that are not
bit-identical are reported as ‖Δ‖/‖θ‖ (RegMean and SAMerging sum over the processes in another order; an SVD-based
method computed in each process at another thread count than one process's rounds differently).

`--layouts` also times the alternative for conditioning several flagged tasks on N processes: one task after
another, each across all processes (what `run` does), against the tasks spread over single processes run side
by side.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _env() -> dict:
    return dict(os.environ, ACCELERATE_USE_CPU="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))


def timed(argv: list[str], processes: int) -> tuple[float, float]:
    """Run ``hfdistac ARGV`` in ``processes`` processes; (wall s, CPU s)."""
    cmd = [*LAUNCH, "--num_processes", str(processes), "-m", "hfdistac.cli", *argv] if processes > 1 else \
        [sys.executable, "-m", "hfdistac.cli", *argv]
    cpu0, t0 = _cpu(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=_env())
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:2])} failed ({processes} processes):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, _cpu() - cpu0


def compare_merges(a: Path, b: Path) -> tuple[list[str], list[str]]:
    """``(differences, notes)`` of two merge outputs (no differences: identical as the module docstring defines it;
    the notes give the data-driven methods' weight differences)."""
    import torch
    from safetensors.torch import load_file

    ra, rb = (json.loads((d / "report.json").read_text()) for d in (a, b))
    diffs, notes = [], []
    if ra["zero_shot"]["accuracy"] != rb["zero_shot"]["accuracy"]:
        diffs.append("zero-shot accuracies")
    for x, y in zip(ra["results"], rb["results"], strict=True):
        m = x["method"]
        if x["alpha"] != y["alpha"] or x["alpha_curve"] != y["alpha_curve"]:
            diffs.append(f"{m}: alpha {x['alpha']} vs {y['alpha']}")
        if [t["accuracy"] for t in x["tasks"]] != [t["accuracy"] for t in y["tasks"]]:
            diffs.append(f"{m}: test accuracies")
        wa, wb = (load_file(str(d / m / "model.safetensors")) for d in (a, b))
        if not all(torch.equal(wa[k], wb[k]) for k in wa):
            num = sum(float((wa[k] - wb[k]).pow(2).sum()) for k in wa) ** 0.5
            den = sum(float(wa[k].pow(2).sum()) for k in wa) ** 0.5
            why = "sums over processes" if m in ("regmean", "regmean_plusplus", "samerging") else \
                "float rounding: another thread count, or a conditioned input that differs so"
            notes.append(f"{m}: weights differ by {num / den:.1e} of their norm ({why})")
    return diffs, notes


def bench_merge(recipe: Path, out: Path, repeats: int, method: str) -> list[tuple]:
    argv = ["merge", str(recipe), "--method", method, "--calibrate", "--no-progress"]
    times: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    timed([*argv, "--output", str(out / "warm"), "--overwrite"], 1)  # the evaluation cache, once
    for _ in range(repeats):
        for n in (1, 2):
            times[n].append(timed([*argv, "--output", str(out / f"merge-{n}"), "--overwrite"], n))
    diffs, notes = compare_merges(out / "merge-1", out / "merge-2")
    rows = []
    for n in (1, 2):
        walls, cpus = [t[0] for t in times[n]], [t[1] for t in times[n]]
        rows.append((f"merge --method {method}", n, statistics.median(walls), statistics.median(cpus),
                     f"{min(walls):.1f}-{max(walls):.1f}"))
    print(f"\nmerge 1 vs 2 processes: {'DIFFERENT' if diffs else 'identical'}"
          + "".join(f"\n  - {d}" for d in diffs + notes))
    return rows


def bench_run(recipe: Path, out: Path, lr: str) -> list[tuple]:
    rows, reports = [], {}
    for n in (1, 2):
        dest = out / f"run-{n}"
        shutil.rmtree(dest, ignore_errors=True)
        wall, cpu = timed(["run", str(recipe), "--output", str(dest), "--condition-lr", lr, "--no-progress"], n)
        reports[n] = json.loads((dest / "run.json").read_text())
        rows.append((f"run {recipe.stem} (first)", n, wall, cpu, ""))
    t1, t2 = reports[1]["table"], reports[2]["table"]
    print(f"\nrun 1 vs 2 processes, Table 1: {'identical' if t1 == t2 else 'DIFFERENT'}")
    if t1 != t2:
        print(json.dumps({"one": t1, "two": t2}, indent=1)[:3000])
    for scenario in ("original", "distac"):
        diffs, notes = compare_merges(out / "run-1" / "merges" / scenario, out / "run-2" / "merges" / scenario)
        print(f"  merges/{scenario}: " + ("; ".join(diffs) or "identical") + "".join(f"; {n}" for n in notes))
    print((out / "run-2" / "table.md").read_text())
    return rows


def bench_layouts(suite: Path, out: Path, steps: int, lr: str) -> list[tuple]:
    """Two tasks conditioned on two processes: one after the other across both, or one per process side by side."""
    models = [suite / "models" / name for name in ("colour-ls", "background-ls")]
    data = [suite / "data" / name for name in ("colour", "background")]
    common = ["--preset", "confidence", "--steps", str(steps), "--lr", lr, "--no-progress", "--overwrite",
              "--base", str(suite / "base")]
    t0, c0 = time.perf_counter(), _cpu()
    for i, (m, d) in enumerate(zip(models, data, strict=True)):
        timed(["condition", str(m), "--data", str(d), *common, "--output", str(out / f"seq-{i}")], 2)
    sequential = (time.perf_counter() - t0, _cpu() - c0)
    t0, c0 = time.perf_counter(), _cpu()
    procs = [subprocess.Popen([sys.executable, "-m", "hfdistac.cli", "condition", str(m), "--data", str(d), *common,
                               "--threads", "1", "--output", str(out / f"par-{i}")], cwd=REPO, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i, (m, d) in enumerate(zip(models, data, strict=True))]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"condition failed: {p.stderr.read()[-2000:]}")
    spread = (time.perf_counter() - t0, _cpu() - c0)
    return [(f"condition 2 tasks x {steps} steps: one after another, each on 2 processes", 2, *sequential, ""),
            (f"condition 2 tasks x {steps} steps: one per process, side by side", 2, *spread, "")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("--recipe", default="norm-mismatch")
    parser.add_argument("--method", default="all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-processes"))
    parser.add_argument("--condition-lr", default="3e-4", help="the suite's fine-tuning rate, as the demo uses")
    parser.add_argument("--layout-steps", type=int, default=60)
    parser.add_argument("--skip-run", action="store_true")
    parser.add_argument("--skip-layouts", action="store_true")
    args = parser.parse_args()
    suite = args.suite.resolve()
    recipe = suite / "recipes" / f"{args.recipe}.yaml"
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} cores; torch threads per process: the command line's default (the cores / processes)")
    rows = bench_merge(recipe, out, args.repeats, args.method)
    if not args.skip_run:
        rows += bench_run(recipe, out, args.condition_lr)
    if not args.skip_layouts:
        rows += bench_layouts(suite, out, args.layout_steps, args.condition_lr)
    print("\n| command | processes | wall (s, median) | CPU (s, median) | wall range |\n|:--|--:|--:|--:|:--|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]} |")


if __name__ == "__main__":
    main()
