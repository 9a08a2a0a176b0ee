"""``hfdistac demo``: the paper's Table 1 in miniature, offline, on the built-in example suite.

The paper's protocol (DisTaC, arXiv 2508.01148, §3.1 and §5.1), at the suite's size:

1. Build (or reuse) the example suite: a tiny CLIP pretrained on synthetic captioned images, N tasks, and per
   task a standard, a high-learning-rate (60×) and a label-smoothed fine-tune.
2. **Norm mismatch, once per task**: that task's high-learning-rate model swapped into the standard ones,
   ``inspect``'ed, the flagged vector conditioned with DisTaC as ``inspect`` recommends (κ to the mean norm
   of the others, temperatures (10, 10)), every method merged with and without it. The scenario's numbers
   are the mean over those runs (``norm_mismatch_runs`` holds each one).
3. **Low confidence**: every model label-smoothed; each flagged one sharpened (κ = 1, (1, 10)).
4. Every scenario is normalised by its own source models (the paper's "Individual" row differs per
   scenario); a "+ DisTaC" scenario by the models it conditioned. α is chosen on the suite's ``holdout``
   split (images no model was fine-tuned on), TIES keeps the paper-equivalent density
   (:func:`~.paper.paper_equivalent_density`), merges are calibrated after merging.
5. A κ sweep on the suite's own norm-mismatch recipe (naive rescaling, task arithmetic): shrinking the long
   vector vs stretching the short ones (the paper's Figure 3 question).

How it runs: the recipes and the two suite-level diagnoses are prepared here; the conditioning runs and the
merges (40-odd steps on the default suite) are jobs (:mod:`.jobs`) that ``--workers`` processes of one torch
thread each share (:mod:`.worker`); the tables are then assembled from the steps' reports. On the suite's
tiny models a second thread barely helps a step, a second process nearly doubles the work done.

Everything lands in one directory, each step's output with its report, card and plots; the final table
(``table1.md``, beside the paper's ViT-B/32 numbers) is written as Markdown and JSON (``demo.json``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..pipeline.chain import flagged, recipe_with, write_recipe
from .config import DemoConfig
from .jobs import (
    JOBS_FILE,
    conditioned_report,
    diagnose,
    done_path,
    merge_scenario,
    norm_mismatch_paths,
    run_queue,
    step_cpu_seconds,
    sweep_merge,
)
from .paper import PAPER_TABLE1, paper_equivalent_density, table1_markdown

logger = logging.getLogger(__name__)

#: Most worker processes the demo starts by default (each holds ~0.6 GB; there are 40-odd steps to share).
MAX_DEFAULT_WORKERS = 8


def _mean_column(columns: list[dict]) -> dict:
    """The mean over runs of each row's numbers (α kept per run, as ``alpha_per_run``)."""
    import numpy as np

    out: dict[str, dict] = {}
    for row in columns[0]:
        cells = [c[row] for c in columns if row in c]
        mean = {}
        for key in cells[0]:
            values = [c.get(key) for c in cells]
            if key == "alpha":
                mean["alpha_per_run"] = values
            elif all(isinstance(v, (int, float)) for v in values):
                mean[key] = round(float(np.mean(values)), 4)
        out[row] = mean
    return out


def _load_suite(config: DemoConfig, root: Path) -> tuple[Path, dict]:
    from ..example_suite import build_example_suite, suite_status

    if not config.suite:
        suite_dir = root / "example-suite"
        return suite_dir, build_example_suite(suite_dir, num_tasks=config.tasks, seed=config.seed,
                                              progress=config.progress).as_dict()
    # A suite given by the user is used as it is: never rebuilt (that would delete their directory).
    suite_dir = Path(config.suite).expanduser().resolve()
    if suite_status(suite_dir) != "complete":
        raise InputError(f"--suite {config.suite!r} is not a complete example suite "
                         f"(status: {suite_status(suite_dir)})",
                         "build one with `hfdistac example-suite DIR`, or drop --suite to build one inside DIR")
    return suite_dir, json.loads((suite_dir / "suite.json").read_text())


@dataclasses.dataclass
class _Plan:
    """What the demo prepared before its steps run: the steps themselves, and what the tables need."""

    suite_dir: Path
    root: Path
    tasks: list[str]
    methods: list[str]
    density: float
    jobs: list[dict[str, Any]]
    diagnoses: dict[str, dict]
    sweep: list[dict]


def _plan(suite_dir: Path, root: Path, tasks: list[str], methods: list[str], density: float,
          config: DemoConfig) -> _Plan:
    """Write every recipe, diagnose the suite's own low-confidence and norm-mismatch recipes, write the κ sweep's
    rescaled vectors; return the conditioning runs and merges as jobs (dependencies in ``after``)."""
    from ..diagnosis import LOW_CONFIDENCE

    recipes = suite_dir / "recipes"
    jobs: list[dict[str, Any]] = []

    def add(kind: str, after=(), **fields) -> int:
        jobs.append({"kind": kind, "after": list(after), **fields})
        return len(jobs) - 1

    def merge(recipe: Path, out: Path, after=()) -> int:
        return add("merge", after, recipe=str(recipe), out=str(out), methods=methods, density=density)

    conditioning = {}
    for task in tasks:  # norm mismatch, once per task: the longest steps first
        p = norm_mismatch_paths(root, task)
        write_recipe(recipes / "original.yaml", {task: str(suite_dir / "models" / f"{task}-highlr")}, p["recipe"],
                     p["slug"], f"'{task}' replaced by its high-learning-rate model (norm mismatch)",
                     keep_normalizer=False)
        conditioning[task] = add("norm_mismatch_condition", root=str(root), task=task)
    diagnoses = {"low-confidence": diagnose(recipes / "low-confidence.yaml", root / "inspect" / "low-confidence",
                                            config)}
    low = flagged(diagnoses["low-confidence"], LOW_CONFIDENCE, root)
    sharpened = [add("condition", model=m, base=diagnoses["low-confidence"]["base"], preset="confidence",
                     out=str(out)) for m, out in low.values()]
    recipe_with(recipes / "low-confidence.yaml", {name: str(out) for name, (_, out) in low.items()},
                root / "recipes" / "low-confidence-distac.yaml", "low-confidence-distac")
    merge(recipes / "original.yaml", root / "merges" / "original")
    for task in tasks:
        p = norm_mismatch_paths(root, task)
        merge(p["recipe"], p["merge"])
        merge(p["distac_recipe"], p["distac_merge"], after=[conditioning[task]])
    merge(recipes / "low-confidence.yaml", root / "merges" / "low-confidence")
    merge(root / "recipes" / "low-confidence-distac.yaml", root / "merges" / "low-confidence-distac", after=sharpened)
    diagnoses["norm-mismatch"] = diagnose(recipes / "norm-mismatch.yaml", root / "inspect" / "norm-mismatch", config)
    sweep = kappa_sweep_plan(root, recipes / "norm-mismatch.yaml", diagnoses["norm-mismatch"], config)
    for row in sweep:
        add("sweep_merge", recipe=row["recipe"], out=row["out"])
    return _Plan(suite_dir, root, tasks, methods, density, jobs, diagnoses, sweep)


def _default_workers(jobs: int) -> int:
    from ..runtime import free_cores

    return max(1, min(free_cores(), MAX_DEFAULT_WORKERS, jobs))


def _run_jobs(root: Path, jobs: list[dict[str, Any]], config: DemoConfig) -> tuple[int, dict[str, float]]:
    """Run the demo's steps: inline when one process is asked for, else in worker processes; returns how many
    processes ran them and the steps' CPU seconds by kind."""
    from tqdm.auto import tqdm

    from ..processes import module_command, run_worker_processes

    workers = max(1, min(config.workers, len(jobs))) if config.workers else _default_workers(len(jobs))
    work = root / ".jobs"
    shutil.rmtree(work, ignore_errors=True)  # claims of an interrupted run; finished steps keep their reports
    (work / "done").mkdir(parents=True)
    (work / JOBS_FILE).write_text(json.dumps({"config": config.to_dict(), "jobs": jobs}), encoding="utf-8")
    with tqdm(total=len(jobs), desc=f"demo steps ({workers} process{'es' if workers > 1 else ''})",
              disable=not config.progress, dynamic_ncols=True) as bar:
        if workers == 1:
            run_queue(work, jobs, config, on_done=lambda i: bar.update(1))
        else:
            run_worker_processes(lambda i, n: module_command("hfdistac.demo.worker", work, i, n), workers, work,
                                 finished=lambda: sum(done_path(work, i).exists() for i in range(len(jobs))),
                                 total=len(jobs), what="demo", bar=bar)
    cpu = step_cpu_seconds(work, jobs)
    shutil.rmtree(work, ignore_errors=True)
    return workers, cpu


def _assemble(plan: _Plan, config: DemoConfig) -> tuple[dict, list[dict], list[dict], dict]:
    """Table 1, the norm-mismatch runs, the conditioned models and every diagnosis, read from the steps' reports."""
    from ..diagnosis import LOW_CONFIDENCE, NORM_MISMATCH

    reading = dataclasses.replace(config, overwrite=False)
    root, methods, density = plan.root, plan.methods, plan.density
    recipes = plan.suite_dir / "recipes"
    table = {"original": merge_scenario(recipes / "original.yaml", root / "merges" / "original", methods, density,
                                        reading)}
    diagnoses: dict[str, dict] = {}
    reports, runs = [], []
    for task in plan.tasks:
        p = norm_mismatch_paths(root, task)
        diagnoses[p["slug"]] = diagnose(p["recipe"], p["inspect"], reading)
        targets = flagged(diagnoses[p["slug"]], NORM_MISMATCH, root)
        reports += [conditioned_report(name, out, p["slug"]) for name, (_, out) in targets.items()]
        runs.append({"task": task, "flagged": sorted(targets), "table": {
            "norm mismatch": merge_scenario(p["recipe"], p["merge"], methods, density, reading),
            "norm mismatch + DisTaC": merge_scenario(p["distac_recipe"], p["distac_merge"], methods, density,
                                                     reading)}})
    for scenario in ("norm mismatch", "norm mismatch + DisTaC"):
        table[scenario] = _mean_column([r["table"][scenario] for r in runs])
    diagnoses.update(plan.diagnoses)
    low = flagged(plan.diagnoses["low-confidence"], LOW_CONFIDENCE, root)
    reports += [conditioned_report(name, out, "low-confidence") for name, (_, out) in low.items()]
    table["low confidence"] = merge_scenario(recipes / "low-confidence.yaml", root / "merges" / "low-confidence",
                                             methods, density, reading)
    table["low confidence + DisTaC"] = merge_scenario(root / "recipes" / "low-confidence-distac.yaml",
                                                      root / "merges" / "low-confidence-distac", methods, density,
                                                      reading)
    return table, runs, reports, diagnoses


def run_demo(config: DemoConfig) -> dict:
    """Run the whole demo (library form of ``hfdistac demo``) and return its summary."""
    from ..runtime import apply_thread_policy

    apply_thread_policy()  # the command line's thread default, once per process
    from ..outputs import write_json
    from ..runtime import torch_state

    t0 = time.perf_counter()
    root = Path(config.directory).expanduser().resolve()  # the recipes name absolute paths: usable from anywhere
    root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    suite_dir, suite_figures = _load_suite(config, root)
    timings["example suite"] = round(time.perf_counter() - t0, 1)
    task_names = list(suite_figures["task_names"])
    unknown = [t for t in config.mismatch_tasks or () if t not in task_names]
    if unknown:
        raise InputError(f"--mismatch-tasks {', '.join(map(repr, unknown))} not in the suite",
                         f"the suite's tasks: {', '.join(task_names)}")
    methods = config.methods or list(PAPER_TABLE1)
    ties = paper_equivalent_density(suite_dir / "base")
    start = time.perf_counter()
    with torch_state(threads=1):  # as every step runs: the numbers do not depend on the machine's cores
        plan = _plan(suite_dir, root, config.mismatch_tasks or task_names, methods, ties["density"], config)
    timings["preparation"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    workers, step_cpu = _run_jobs(root, plan.jobs, config)
    timings[f"{len(plan.jobs)} steps in {workers} process{'es' if workers > 1 else ''}"] = \
        round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    with torch_state(threads=1):
        table, runs, reports, diagnoses = _assemble(plan, config)
        sweep = kappa_sweep_rows(plan.sweep, root, config)
    timings["tables"] = round(time.perf_counter() - start, 1)

    summary = {"suite": str(suite_dir), "suite_summary": suite_figures, "diagnoses": diagnoses,
               "conditioned": reports, "table": table, "norm_mismatch_runs": runs, "methods": methods,
               "ties_density": ties, "kappa_sweep": sweep, "workers": workers, "timings_s": timings,
               "step_cpu_s": step_cpu,
               "total_s": round(time.perf_counter() - t0, 1), "config": config.to_dict()}
    summary["table_markdown"] = table1_markdown(table, methods, runs=len(runs), ties=ties)
    write_json(root / "demo.json", summary)
    (root / "table1.md").write_text(summary["table_markdown"] + "\n")
    return summary


def kappa_sweep_plan(root: Path, recipe_path: Path, diagnosis: dict, config: DemoConfig) -> list[dict]:
    """The κ sweep's rescaled task vectors and recipes: shrink the long vector, or stretch the others.

    No distillation here: the question is which direction of norm matching merging prefers. With κ* the
    norm-matching factor of the long vector (mean norm of the others / its norm) and a multiple ``m``:
    *shrink long* scales the long vector by m·κ* (m = 1: it has the others' mean norm); *stretch others* scales
    every other vector by 1/(m·κ*) (m = 1: their mean norm equals the long one's). Both match norms at m = 1;
    they differ in how far from θ₀ the merge lands. Each recipe is then merged with task arithmetic, α chosen
    on validation as everywhere (:func:`kappa_sweep_rows`).

    Returns:
        One row per (mode, multiple): ``{"mode", "multiple", "kappa", "recipe", "out"}``; empty when ``inspect``
        flagged no norm mismatch.
    """
    from ..checkpoints import load_base
    from ..merge_eval import task_vector_for
    from ..recipe import load_recipe
    from ..task_vectors import save_task_vector

    long = next((m for m in diagnosis["models"] if "norm_mismatch" in m["flags"]), None)
    if long is None:
        return []
    kappa_star = long["recommendation"]["kappa"]
    base = load_base(diagnosis["base"])
    recipe = load_recipe(recipe_path)
    work = root / "kappa-sweep"
    rows = []
    for mode in ("shrink long", "stretch others"):
        for mult in config.kappa_grid or [0.25, 0.5, 1.0, 2.0, 4.0]:
            factor = kappa_star * mult if mode == "shrink long" else 1.0 / (kappa_star * mult)
            tag = f"{mode.split()[0]}-{mult:g}"
            replacements = {}
            for t in recipe.tasks:
                if (t.name == long["name"]) != (mode == "shrink long"):
                    continue
                d = work / tag / t.name
                if not (d / "task_vector.safetensors").is_file():
                    tv, _ = task_vector_for(t.model, base, d.parent, f"_{t.name}_raw", base.weights)
                    d.mkdir(parents=True, exist_ok=True)
                    save_task_vector(tv.scaled(factor), d / "task_vector.safetensors",
                                     {"base": base.resolved.reference, "base_revision": base.resolved.revision,
                                      "method": "rescale", "scale": repr(factor)})
                replacements[t.name] = str(d)
            r_path = recipe_with(recipe_path, replacements, work / f"{tag}.yaml", f"kappa-{tag}")
            rows.append({"mode": mode, "multiple": mult, "kappa": factor, "recipe": str(r_path),
                         "out": str(work / f"{tag}-merge")})
    return rows


def kappa_sweep_rows(plan: list[dict], root: Path, config: DemoConfig) -> list[dict]:
    """The κ sweep's table (α and merged accuracy per row of :func:`kappa_sweep_plan`) and its plot."""
    from ..plots import sweep_plot

    if not plan:
        return []
    reading = dataclasses.replace(config, overwrite=False)
    rows = []
    for row in plan:
        r = sweep_merge(Path(row["recipe"]), Path(row["out"]), reading)["results"][0]
        rows.append({"mode": row["mode"], "multiple": row["multiple"], "kappa": row["kappa"], "alpha": r["alpha"],
                     "mean_accuracy": r["mean_accuracy"], "mean_normalized_accuracy": r["mean_normalized_accuracy"]})
    sweep_plot(rows, root / "kappa_sweep.png")
    return rows
