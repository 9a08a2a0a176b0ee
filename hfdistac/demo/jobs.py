"""The demo's steps, as jobs that worker processes share: diagnose, condition, merge.

The steps are the chain of ``hfdistac run`` (:mod:`hfdistac.pipeline.chain`) at the demo's settings. Every step
writes its own output directory and is skipped when that directory already holds its ``report.json`` made from
the same inputs and settings (unless ``--overwrite``), so the demo resumes after an interruption and assembles its
tables by calling the same functions again, which then only read. A job is a JSON dict (``{"kind": ..., "after": [job
indices it needs done first], ...}``); :func:`run_queue` runs the jobs of one demo in any number of processes,
each taking the next job that is ready and nobody has claimed (a claim is a file created exclusively, so two
processes never take the same job). Each job runs at one torch thread (:func:`hfdistac.runtime.torch_state`):
its result does not depend on how many processes share the work.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from ..pipeline import chain
from ..pipeline.chain import flagged, recipe_with

logger = logging.getLogger(__name__)

JOBS_FILE = "jobs.json"


def diagnose(recipe: Path, out: Path, config) -> dict:
    """``hfdistac inspect`` of a recipe (:func:`hfdistac.pipeline.chain.diagnose`)."""
    return chain.diagnose(recipe, out, progress=config.progress, overwrite=config.overwrite)


def condition(model: dict, base: str, kind: str, out: Path, config) -> None:
    """DisTaC on one flagged model as ``inspect`` recommends, at the demo's settings (learning rate: the demo's
    ``--condition-lr``, else the rate the model's card names, which ``inspect`` recommends)."""
    settings = {"steps": config.condition_steps, "batch_size": config.condition_batch_size, "eval_limit": 256}
    lr = config.condition_lr or (model.get("recommendation") or {}).get("lr")
    chain.condition(model, base, kind, out, {**settings, **({"lr": lr} if lr else {})},
                    progress=config.progress, overwrite=config.overwrite)


def conditioned_report(name: str, out: Path, scenario: str) -> dict:
    """The figures of one conditioned model that the demo's summary lists."""
    report = json.loads((out / "report.json").read_text())
    return {"scenario": scenario, "task": name, "output": str(out), **{
        k: report.get(k) for k in ("kappa", "target_norm", "norm_before", "norm_after", "entropy_before",
                                   "entropy_after", "accuracy_before", "accuracy_rescaled_only", "accuracy_after")}}


def merge_scenario(recipe: Path, out: Path, methods: list[str], density: float, config) -> dict:
    """Merge one scenario with every method; its table column (methods + zero-shot + individual)."""
    report = chain.merge(recipe, out, methods, {"density": density, "calibrate": True, "val_limit": 0,
                                                "test_limit": 0}, progress=config.progress, overwrite=config.overwrite)
    return chain.scenario_column(report, methods)


def sweep_merge(recipe: Path, out: Path, config) -> dict:
    """The κ sweep's task-arithmetic merge of one rescaled recipe (its report, read back when it exists)."""
    return chain.merge(recipe, out, ["task_arithmetic"], {"val_limit": 0, "test_limit": 0}, progress=False,
                       overwrite=config.overwrite)


def norm_mismatch_paths(root: Path, task: str) -> dict[str, Path]:
    """Where one norm-mismatch run keeps its recipes, diagnosis and merges."""
    slug = f"norm-mismatch-{task}"
    return {"slug": slug, "recipe": root / "recipes" / f"{slug}.yaml",
            "distac_recipe": root / "recipes" / f"{slug}-distac.yaml", "inspect": root / "inspect" / slug,
            "merge": root / "merges" / slug, "distac_merge": root / "merges" / f"{slug}-distac"}


def norm_mismatch_condition(root: Path, task: str, config) -> None:
    """One norm-mismatch run up to its merges: inspect the recipe, DisTaC what it flags, write the "+ DisTaC" recipe."""
    from ..diagnosis import NORM_MISMATCH

    p = norm_mismatch_paths(root, task)
    diagnosis = diagnose(p["recipe"], p["inspect"], config)
    targets = flagged(diagnosis, NORM_MISMATCH, root)
    if not targets:
        logger.warning("inspect flagged no norm mismatch in %s: the suite does not show the paper's condition",
                       p["recipe"])
    for model, out in targets.values():
        condition(model, diagnosis["base"], "norm", out, config)
    recipe_with(p["recipe"], {name: str(out) for name, (_, out) in targets.items()}, p["distac_recipe"],
                f"{p['slug']}-distac")


def run_job(job: dict[str, Any], config) -> None:
    """Run one job of the demo (see the module docstring for the kinds)."""
    kind = job["kind"]
    if kind == "norm_mismatch_condition":
        norm_mismatch_condition(Path(job["root"]), job["task"], config)
    elif kind == "condition":
        condition(job["model"], job["base"], job["preset"], Path(job["out"]), config)
    elif kind == "merge":
        merge_scenario(Path(job["recipe"]), Path(job["out"]), job["methods"], job["density"], config)
    elif kind == "sweep_merge":
        sweep_merge(Path(job["recipe"]), Path(job["out"]), config)
    else:
        raise ValueError(f"unknown demo job kind {kind!r}")


def done_path(workdir: Path, index: int) -> Path:
    """The file whose presence says job ``index`` is done (it holds ``{"cpu_s": the step's CPU seconds}``)."""
    return workdir / "done" / str(index)


def step_cpu_seconds(workdir: Path, jobs: list[dict[str, Any]]) -> dict[str, float]:
    """CPU seconds the finished jobs took, summed by kind (a step read back from an earlier run counts its reading)."""
    totals: dict[str, float] = {}
    for i, job in enumerate(jobs):
        try:
            cpu = float(json.loads(done_path(workdir, i).read_text(encoding="utf-8"))["cpu_s"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        totals[job["kind"]] = round(totals.get(job["kind"], 0.0) + cpu, 1)
    return totals


def _claim(workdir: Path, index: int) -> bool:
    (workdir / "claims").mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(workdir / "claims" / str(index), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def run_queue(workdir: Path, jobs: list[dict[str, Any]], config, on_done=None, poll_seconds: float = 0.2) -> None:
    """Take and run the demo's jobs until none is left unclaimed: the first ready one in list order each time.

    A job is ready when every job in its ``after`` list is done. A process with nothing ready waits for the
    jobs other processes are running. ``on_done(index)`` is called after each job this process ran.
    """
    from ..outputs import write_json
    from ..runtime import torch_state

    (workdir / "done").mkdir(parents=True, exist_ok=True)
    while True:  # a job this process claimed has its claim file too: no other bookkeeping needed
        open_jobs = [i for i in range(len(jobs)) if not (workdir / "claims" / str(i)).exists()]
        if not open_jobs:
            return
        ready = [i for i in open_jobs if all(done_path(workdir, d).exists() for d in jobs[i].get("after", ()))]
        if not ready:
            time.sleep(poll_seconds)
            continue
        for i in ready:
            if _claim(workdir, i):
                start = time.process_time()  # one torch thread per step: this process's CPU time is the step's
                with torch_state(threads=1):
                    run_job(jobs[i], config)
                # atomic: other processes poll for the file, step_cpu_seconds reads it
                write_json(done_path(workdir, i), {"cpu_s": round(time.process_time() - start, 2)})
                if on_done is not None:
                    on_done(i)
                break
