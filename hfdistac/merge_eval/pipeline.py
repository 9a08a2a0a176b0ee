"""``hfdistac merge`` as one library call: :func:`run_merge`, the stages of a merge called in order.

1. load the recipe and resolve its sources; every task's head and splits (data first: fail fast)
   — :func:`~.scoring.load_task_data`;
2. build the task vectors, lazily on disk — :func:`~.sources.build_task_vectors`;
   (then the zero-shot and individual rows — :func:`~.scoring.reference_rows`)
3. merge per method — :func:`~.methods.merge_with`;
4. select α on validation — :func:`~.selection.select_alpha`;
5. evaluate on test — :func:`~.scoring.evaluate_on_test`;
6. calibrate (``--calibrate``) — :func:`~.scoring.calibrate`;
7. write each method's output and card as soon as it is evaluated — :class:`~.outputs.OutputWriter`; push them
   (``--push-to``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..hub.resolve import resolving_once
from .config import MergeConfig

logger = logging.getLogger(__name__)


def _new_report(recipe, base, sources) -> dict[str, Any]:
    from ..distributed import world

    return {"recipe": recipe.to_dict(), "recipe_path": recipe.path, "base": recipe.base,
            "base_revision": base.resolved.revision, "task_names": [t.name for t in recipe.tasks],
            "sources": [asdict(s) for s in sources], "processes": world()[1], "results": []}


@resolving_once()
def run_merge(config: MergeConfig) -> dict:
    """Merge a recipe with one or all methods, evaluate, write and publish (the library form of ``hfdistac merge``).

    Args:
        config: A :class:`MergeConfig`.

    Returns:
        The report: ``{"recipe", "base", "zero_shot", "individual", "results": [per-method report], ...}``; a
        per-method report has at least ``method, alpha, alpha_grid, tasks[{name, accuracy,
        normalized_accuracy, ece?}], mean_accuracy, mean_normalized_accuracy``. With ``--push-to``,
        ``pushed`` holds the commit (or pull request) made.
    """
    from ..runtime import apply_thread_policy

    apply_thread_policy()  # the command line's thread default, once per process
    from .. import distributed
    from ..checkpoints import load_base
    from ..evaluation import resolve_device
    from ..outputs import OutputLock, check_destination, check_not_an_input, scratch_dir
    from ..recipe import load_recipe

    recipe = load_recipe(config.recipe)
    if config.output:
        check_not_an_input(config.output, [recipe.path, recipe.base, *(t.model for t in recipe.tasks),
                                           *(t.normalizer for t in recipe.tasks), *(t.dataset for t in recipe.tasks)])
        check_destination(config.output, config.overwrite)
    device = distributed.start(resolve_device(config.device))
    main = distributed.is_main()
    if not main:  # one process writes, pushes and shows progress; the others evaluate their share
        config = dataclasses.replace(config, output=None, push_to=None, private=False, revision=None,
                                     create_pr=False, commit_message=None, progress=False)
    base = load_base(recipe.base)
    if len(recipe.tasks) < 2 and main:
        logger.warning("recipe %s has a single task: merging reduces to scaling its task vector", recipe.path)
    with OutputLock(config.output) if config.output else contextlib.nullcontext():
        if config.output:  # another run may have written it meanwhile
            check_destination(config.output, config.overwrite)
        with scratch_dir(config.output, "hfdistac-merge") as scratch:
            report = _merge_and_evaluate(config, recipe, base, device, scratch)
    distributed.barrier()  # the output is in place before any process returns
    if config.push_to:
        from ..hub import push_folder

        report["pushed"] = push_folder(config.output, config.push_to, private=config.private,
                                       revision=config.revision, create_pr=config.create_pr,
                                       commit_message=config.commit_message or f"hfdistac merge ({config.method})")
    return report


def _merge_and_evaluate(config: MergeConfig, recipe, base, device, scratch: Path) -> dict[str, Any]:
    """Stages 1–7 (the push aside) inside the run's scratch folder; returns the report.

    Memory: θ₀ is held once (the base's text tower is dropped once the heads exist), the task vectors stay on
    disk, and each method's merged task vector is written out and freed before the next method runs.
    """
    from ..merging import MERGE_METHODS
    from .methods import merge_with
    from .outputs import OutputWriter, results_table
    from .plan import announce, estimate
    from .scoring import MergedModel, calibrate, evaluate_on_test, load_task_data, reference_rows
    from .selection import select_alpha
    from .sources import build_task_vectors

    methods = config.methods
    theta0 = base.weights
    tasks, train_data = load_task_data(recipe, base, config, methods)  # 1
    base.release_text_tower()  # the heads are built: only θ₀, the processor and the config are needed now
    total = announce(config, methods, tasks) if not config.weights_only else None
    tvs, sources = build_task_vectors(recipe, base, theta0, scratch, progress=config.progress)  # 2
    merged = MergedModel(base.vision_config, theta0, tasks, device, config.mixed_precision)
    report = _new_report(recipe, base, sources)
    normalizers = {"validation": {}, "test": {}}
    if not config.weights_only:
        normalizers = reference_rows(merged, base, report, progress=config.progress)
        estimate(total, report["zero_shot"]["eval_images"], report["zero_shot"]["eval_seconds"])
    with OutputWriter(config, recipe, base, tasks, sources) as writer:
        for name in methods:
            tau, res, learned = merge_with(name, tvs, config, merged, base, train_data, scratch)  # 3
            res.update(select_alpha(tau, uses_alpha=MERGE_METHODS[name].uses_alpha, fixed=config.alpha,  # 4
                                    grid=config.alpha_grid, merged=merged, normalizers=normalizers["validation"],
                                    label=f"{name}: alpha search", progress=config.progress,
                                    search=config.alpha_search))
            merged.set_weights(tau, res["alpha"])
            del tau  # the tower holds θ₀ + α·τ now: no second copy while it is evaluated and written
            if not config.weights_only:
                scores, test_logits = evaluate_on_test(merged, normalizers["test"])  # 5
                res.update(scores)
                if config.calibrate:
                    calibrate(merged, res, test_logits)  # 6
            report["results"].append(res)
            writer.method(report, res, merged.current_weights(), learned)  # 7
            del learned
        report["table_markdown"] = results_table(report) if not config.weights_only else ""
        writer.finish(report)
    return report
