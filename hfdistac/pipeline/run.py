"""``hfdistac run RECIPE --output DIR``: the product's main job in one command.

1. **diagnose** every task (``inspect``: norms, entropy, verdict) — ``DIR/inspect``;
2. **condition** each flagged task as ``inspect`` recommends (κ to the others' mean norm for a long vector,
   temperatures (10, 10); κ = 1 and (1, 10) for an under-confident one), plus ``--condition`` tasks, the others
   untouched — ``DIR/conditioned/<model>``;
3. write ``DIR/recipe.conditioned.yaml`` (each conditioned task pointing at its output, normalised by the model it
   came from);
4. **merge** the original and the conditioned recipe with every method, α on validation, calibrated —
   ``DIR/merges/original``, ``DIR/merges/distac``;
5. the user's own **Table 1** (each method with and without DisTaC, per task and mean, absolute and normalised,
   beside the diagnostics that triggered each conditioning) — ``DIR/table.md``, ``DIR/run.json``, and the run's
   card ``DIR/README.md``;
6. with ``--push-to NAMESPACE/NAME``, **publish** each merge with DisTaC and each conditioned task vector, one
   commit each, their cards linking each other (and a Hub collection of them where the endpoint has collections).

Every stage is reused when its inputs and settings are unchanged (:mod:`.chain`), so a second run of the same
recipe does no conditioning or merging; ``--overwrite`` redoes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..hub.resolve import resolving_once
from . import chain
from .config import RunConfig

logger = logging.getLogger(__name__)

#: Written at the top of a run's output directory: a directory without it is never written into.
RUN_MARKER = ".hfdistac-run"


def _claim_output(root: Path, inputs: list[str]) -> None:
    """Use ``root`` only when it is new, empty, or an earlier run's output, and holds none of the run's inputs."""
    from ..outputs import check_not_an_input

    check_not_an_input(root, inputs)
    if root.exists() and any(root.iterdir()) and not (root / RUN_MARKER).is_file():
        raise InputError(f"--output {str(root)!r} exists and is not an hfdistac run's output",
                         "choose a new or empty directory (a run only ever writes into its own)")
    root.mkdir(parents=True, exist_ok=True)
    (root / RUN_MARKER).write_text("hfdistac run\n")


class _Stages:
    """Times each stage and notes whether it ran or was reused (its report.json was not rewritten)."""

    def __init__(self):
        self.rows: list[dict[str, Any]] = []

    def __call__(self, label: str, out: Path, fn):
        report = out / "report.json"
        before = report.stat().st_mtime_ns if report.is_file() else None
        start = time.perf_counter()
        result = fn()
        after = report.stat().st_mtime_ns if report.is_file() else None
        self.rows.append({"stage": label, "seconds": round(time.perf_counter() - start, 2),
                          "reused": before is not None and before == after})
        return result


def _to_condition(config: RunConfig, recipe, diagnosis: dict, root: Path) -> dict[str, tuple[dict, Path]]:
    """Task name → (its diagnosis entry with the recommendation to apply, output folder)."""
    from ..diagnosis import LOW_CONFIDENCE, NORM_MISMATCH

    if not config.distac:
        return {}
    chosen = chain.flagged(diagnosis, (NORM_MISMATCH, LOW_CONFIDENCE), root)
    names = [t.name for t in recipe.tasks]
    for name in config.condition or ():
        if name not in names:
            raise InputError(f"--condition {name!r} is not a task of the recipe", f"its tasks: {', '.join(names)}")
        if name not in chosen:  # forced: shrink to the others' mean norm when longer, else sharpen
            m = next(m for m in diagnosis["models"] if m["name"] == name)
            others = [o["norm"] for o in diagnosis["models"] if o["name"] != name]
            mean_others = sum(others) / len(others) if others else None
            longer = mean_others is not None and m["norm"] > mean_others
            rec = {"action": "distac", "preset": "norm" if longer else "confidence",
                   "target_norm": mean_others if longer else None, "reason": "forced (--condition)"}
            chosen[name] = ({**m, "recommendation": rec}, root / "conditioned" / Path(m["reference"]).name)
    return chosen


def _condition_settings(config: RunConfig, rec: dict) -> dict[str, Any]:
    settings = {"steps": config.condition_steps, "batch_size": config.condition_batch_size, "beta": config.beta,
                "max_norm_ratio": config.max_norm_ratio, "eval_limit": 256}
    lr = config.condition_lr or rec.get("lr")  # the rate the model's card names (inspect reads it), else 1e-5
    return {**settings, **({"lr": lr} if lr else {})}


def _condition_all(config: RunConfig, targets: dict[str, tuple[dict, Path]], base: str, stages: _Stages
                   ) -> dict[str, dict]:
    """Condition every flagged task: one after another, each across all processes; or, with at least as many
    tasks as processes, each process its own tasks alone (:mod:`.spread`, measured faster)."""
    from .. import distributed
    from .spread import condition_spread, spreads

    processes = distributed.world()[1]
    if not spreads(len(targets), processes):
        return {name: stages(f"condition {name}", out, lambda m=m, out=out: chain.condition(
                    m, base, m["recommendation"]["preset"], out, _condition_settings(config, m["recommendation"]),
                    progress=config.progress, overwrite=config.overwrite))
                for name, (m, out) in targets.items()}
    import os
    import time

    jobs, keys = [], {}
    for name, (m, out) in targets.items():
        fields, key = chain.condition_job(m, base, m["recommendation"]["preset"], out,
                                          _condition_settings(config, m["recommendation"]), progress=False)
        jobs.append((name, out, fields, chain.reusable(out, key, config.overwrite)))
        keys[name] = (out, key)
    start = time.perf_counter()
    reports = condition_spread(jobs, lambda fields: json.loads((Path(fields["output"]) / "report.json").read_text()),
                               dict(os.environ), distributed.local_device_index())
    seconds = round(time.perf_counter() - start, 2)
    for name, _, _, reused in jobs:
        if not reused:
            chain.record(*keys[name])
        stages.rows.append({"stage": f"condition {name}", "seconds": 0.0 if reused else seconds, "reused": reused,
                            "spread": True})
    distributed.barrier()
    return reports


@resolving_once()
def run_pipeline(config: RunConfig) -> dict:
    """Diagnose, condition, merge with and without DisTaC, tabulate and publish (``hfdistac run``).

    Args:
        config: A :class:`~.config.RunConfig`.

    Returns:
        The run's report (also ``DIR/run.json``): ``diagnosis`` (per task), ``conditioned`` (per conditioned task:
        why, κ, temperatures, norms and accuracies before/after), ``table`` (per method: mean and per-task
        accuracies, absolute and normalised, with and without DisTaC), ``stages`` (seconds, reused or run),
        ``outputs`` and, with ``--push-to``, ``pushed``.
    """
    from .. import distributed
    from ..evaluation import resolve_device
    from ..outputs import OutputLock
    from ..recipe import load_recipe
    from ..runtime import apply_thread_policy

    apply_thread_policy()
    distributed.start(resolve_device("auto"))  # under accelerate launch: every stage uses every process
    main = distributed.is_main()
    if not main:  # progress bars and the push are the main process's
        config = dataclasses.replace(config, progress=False)
    recipe_path = Path(config.recipe).expanduser().resolve()
    recipe = load_recipe(recipe_path)
    methods = config.methods
    root = Path(config.output).expanduser().resolve()
    inputs = [recipe.base, *[t.model for t in recipe.tasks], *[t.dataset for t in recipe.tasks if t.dataset]]
    stages, start = _Stages(), time.perf_counter()
    with OutputLock(root) if main else contextlib.nullcontext():
        if main:
            _claim_output(root, [str(recipe_path), *inputs])
        distributed.barrier()
        diagnosis = stages("inspect", root / "inspect", lambda: chain.diagnose(
            recipe_path, root / "inspect", progress=config.progress, overwrite=config.overwrite,
            limit=config.inspect_limit))
        targets = _to_condition(config, recipe, diagnosis, root)
        conditioned = _condition_all(config, targets, diagnosis["base"], stages)
        distac_recipe = chain.recipe_with(recipe_path, {n: str(out) for n, (_, out) in targets.items()},
                                          root / "recipe.conditioned.yaml", f"{recipe.name}-distac")
        settings = {"calibrate": config.calibrate}
        merges = {"original": stages("merge original", root / "merges" / "original", lambda: chain.merge(
            recipe_path, root / "merges" / "original", methods, settings, progress=config.progress,
            overwrite=config.overwrite))}
        if targets:
            merges["distac"] = stages("merge + DisTaC", root / "merges" / "distac", lambda: chain.merge(
                distac_recipe, root / "merges" / "distac", methods, settings, progress=config.progress,
                overwrite=config.overwrite))
        report = _report(config, recipe, diagnosis, targets, conditioned, merges, methods, root)
        report["stages"] = stages.rows
        report["total_seconds"] = round(time.perf_counter() - start, 2)
        report["processes"] = distributed.world()[1]
        if main:
            _write(root, report, config)
    if config.push_to and main:
        from .publish import publish_run

        report["pushed"] = publish_run(root, report, config)
        _write(root, report, config)
    distributed.barrier()
    return report


def _report(config: RunConfig, recipe, diagnosis: dict, targets: dict, conditioned: dict, merges: dict,
            methods: list[str], root: Path) -> dict:
    from .tables import run_table

    diag = {m["name"]: {k: m.get(k) for k in ("reference", "norm", "norm_ratio", "entropy", "normalized_entropy",
                                              "accuracy", "flags")} for m in diagnosis["models"]}
    done = {}
    for name, (m, out) in targets.items():
        r = conditioned[name]
        done[name] = {"why": m["recommendation"].get("reason"), "output": str(out), **{
            k: r.get(k) for k in ("preset", "kappa", "teacher_temperature", "student_temperature", "norm_before",
                                  "norm_after", "entropy_before", "entropy_after", "accuracy_before",
                                  "accuracy_after")}}
    table = run_table(merges, methods)
    return {"recipe": str(Path(config.recipe)), "name": recipe.name, "base": recipe.base,
            "base_revision": diagnosis.get("base_revision"), "methods": methods, "diagnosis": diag,
            "conditioned": done, "table": table,
            "outputs": {"inspect": str(root / "inspect"), "recipe_conditioned": str(root / "recipe.conditioned.yaml"),
                        **{f"merge {k}": str(root / "merges" / k) for k in merges}},
            "config": config.to_dict()}


def _write(root: Path, report: dict, config: RunConfig) -> None:
    from ..outputs import write_json
    from .tables import run_card, table_markdown

    write_json(root / "run.json", report)
    write_json(root / "hfdistac_config.json", config.to_dict())
    (root / "table.md").write_text(table_markdown(report) + "\n", encoding="utf-8")
    (root / "README.md").write_text(run_card(report), encoding="utf-8")
