"""The demo's steps, as jobs that worker processes share: diagnose, condition, merge.

Every step writes its own output directory and is skipped when that directory already holds its
``report.json`` (unless ``--overwrite``), so the demo resumes after an interruption and assembles its tables by
calling the same functions again, which then only read. A job is a JSON dict (``{"kind": ..., "after": [job
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

import yaml

logger = logging.getLogger(__name__)

JOBS_FILE = "jobs.json"


def write_recipe(recipe_path: Path, replacements: dict[str, str], out: Path, name: str, description: str,
                 keep_normalizer: bool) -> Path:
    """A copy of a recipe with some tasks' models replaced (by absolute paths).

    ``keep_normalizer``: the replaced task keeps its former model as normaliser (a "+ DisTaC" scenario is
    normalised by the models it conditioned); otherwise the new model is its own normaliser (the scenario's
    own source models, as in the paper).
    """
    from ..recipe import load_recipe

    recipe = load_recipe(recipe_path)
    d = recipe.to_dict()
    for t in d["tasks"]:
        if t["name"] in replacements:
            if keep_normalizer:
                t.setdefault("normalizer", t["model"])
            else:
                t.pop("normalizer", None)
            new = Path(replacements[t["name"]])
            t["model"] = str(new.resolve()) if new.exists() else str(new)  # usable from any directory
    d["name"] = name
    d["description"] = description
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(d, sort_keys=False))
    tmp.replace(out)
    return out


def recipe_with(recipe_path: Path, replacements: dict[str, str], out: Path, name: str) -> Path:
    """A recipe's conditioned copy: replaced tasks keep their former model as normaliser."""
    from ..recipe import load_recipe

    desc = f"{load_recipe(recipe_path).description} (conditioned with DisTaC)".strip()
    return write_recipe(recipe_path, replacements, out, name, desc, keep_normalizer=True)


def _reuse_or_run(out: Path, config, run) -> dict:
    """The step's ``report.json`` in ``out`` when it is there (and ``--overwrite`` was not given), else ``run()``."""
    if (out / "report.json").is_file() and not config.overwrite:
        return json.loads((out / "report.json").read_text())
    return run()


def diagnose(recipe: Path, out: Path, config) -> dict:
    """``hfdistac inspect`` of a recipe (its report, read back when it exists)."""
    from ..configs import InspectConfig
    from ..diagnosis import run_inspect

    return _reuse_or_run(out, config, lambda: run_inspect(InspectConfig(
        models=[str(recipe)], output=str(out), overwrite=True, progress=config.progress, limit=256)).to_dict())


def flagged(diagnosis: dict, flag: str, root: Path) -> dict[str, tuple[dict, Path]]:
    """The models ``inspect`` flagged with ``flag``: task name → (its diagnosis entry, where DisTaC writes it)."""
    return {m["name"]: (m, root / "conditioned" / Path(m["reference"]).name)
            for m in diagnosis["models"] if flag in m["flags"]}


def condition(model: dict, base: str, kind: str, out: Path, config) -> None:
    """DisTaC on one flagged model as ``inspect`` recommends (skipped when ``out`` holds its report)."""
    from ..conditioning import ConditionConfig, run_condition

    rec = model["recommendation"]
    _reuse_or_run(out, config, lambda: run_condition(ConditionConfig(
        model=model["reference"], base=base, data=model.get("dataset"), preset=kind,
        target_norm=rec.get("target_norm") if kind == "norm" else None, steps=config.condition_steps,
        batch_size=config.condition_batch_size, lr=config.condition_lr, output=str(out), overwrite=True,
        progress=config.progress, eval_limit=256)))


def conditioned_report(name: str, out: Path, scenario: str) -> dict:
    """The figures of one conditioned model that the demo's summary lists."""
    report = json.loads((out / "report.json").read_text())
    return {"scenario": scenario, "task": name, "output": str(out), **{
        k: report.get(k) for k in ("kappa", "target_norm", "norm_before", "norm_after", "entropy_before",
                                   "entropy_after", "accuracy_before", "accuracy_rescaled_only", "accuracy_after")}}


def merge_scenario(recipe: Path, out: Path, methods: list[str], density: float, config) -> dict:
    """Merge one scenario with every method; its table column (methods + zero-shot + individual)."""
    from ..merge_eval import MergeConfig, run_merge

    report = _reuse_or_run(out, config, lambda: run_merge(MergeConfig(
        recipe=str(recipe), method=",".join(methods), density=density, calibrate=True, output=str(out),
        overwrite=True, progress=config.progress, val_limit=0, test_limit=0)))
    column = {r["method"]: {"mean_accuracy": r["mean_accuracy"],
                            "mean_normalized_accuracy": r["mean_normalized_accuracy"], "alpha": r["alpha"],
                            "mean_ece_before": r.get("mean_ece_before"), "mean_ece_after": r.get("mean_ece_after")}
              for r in report["results"] if r["method"] in methods}
    column["zero-shot"] = {"mean_accuracy": report["zero_shot"]["mean_accuracy"],
                           "mean_normalized_accuracy": report["zero_shot"]["mean_normalized_accuracy"]}
    column["individual"] = {"mean_accuracy": report["individual"]["mean_accuracy"], "mean_normalized_accuracy": 100.0}
    return column


def sweep_merge(recipe: Path, out: Path, config) -> dict:
    """The κ sweep's task-arithmetic merge of one rescaled recipe (its report, read back when it exists)."""
    from ..merge_eval import MergeConfig, run_merge

    return _reuse_or_run(out, config, lambda: run_merge(MergeConfig(
        recipe=str(recipe), method="task_arithmetic", output=str(out), overwrite=True, progress=False,
        val_limit=0, test_limit=0)))


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
    """The file whose presence says job ``index`` is done."""
    return workdir / "done" / str(index)


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
                with torch_state(threads=1):
                    run_job(jobs[i], config)
                done_path(workdir, i).touch()
                if on_done is not None:
                    on_done(i)
                break
