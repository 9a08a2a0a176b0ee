"""Everything a conditioning run resolves before it trains: models, data, norms, κ and temperatures.

:func:`resolve_inputs` turns a :class:`~hfdistac.conditioning.config.ConditionConfig` into :class:`Inputs`
(the fine-tuned source, the base, the training and evaluation splits, θ₀, τ and the reference norms), with
every reference made absolute and every bad input refused before a file is written. :func:`choose_preset`
then fixes κ and the temperatures (METHOD.md §1), once the teacher's entropy is known.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError, InputError
from .algorithm import compute_kappa
from .checkpointing import latest_checkpoint
from .config import ConditionConfig

logger = logging.getLogger(__name__)


@dataclass
class Inputs:
    """Everything resolved before training (no file written yet)."""

    config: ConditionConfig
    source: Any
    base: Any
    train: Any
    eval: Any | None
    theta0: dict[str, torch.Tensor]
    tau: Any
    norm: float
    reference_norms: list[float] | None
    templates: list[str] | None
    output: Path
    checkpoint_dir: Path
    tau_layer_norms: dict | None = None  # per-layer norms of τ, kept when τ itself is freed
    head_data: Any = None  # the split naming the head's classes (``train``, or ``--eval-data`` for unlabeled data)


def from_recipe(config: ConditionConfig) -> tuple[ConditionConfig, list[str] | None]:
    """Fill model/base/data/... from ``--recipe/--task``; explicit flags win. Returns the templates too."""
    from ..recipe import load_recipe

    recipe = load_recipe(config.recipe)
    names = [t.name for t in recipe.tasks]
    if config.task not in names:
        raise InputError(f"recipe {config.recipe!r} has no task {config.task!r}", f"its tasks: {', '.join(names)}")
    task = recipe.tasks[names.index(config.task)]
    reference = config.reference
    if reference is None and config.kappa is None and config.target_norm is None:
        reference = [t.model for t in recipe.tasks if t.name != task.name] or None
    filled = replace(config, model=task.model, recipe=None, task=None, base=config.base or recipe.base,
                     data=config.data or task.dataset, dataset_config=config.dataset_config or task.dataset_config,
                     image_column=config.image_column or task.image_column,
                     label_column=config.label_column or task.label_column,
                     reference=reference,
                     train_split=config.train_split if config.train_split != "train" else task.train_split,
                     eval_split=config.eval_split if config.eval_split != "test" else task.test_split)
    return filled, task.templates


def check_card_classes(source, data) -> None:
    """A dataset for another number of classes than the model's own (per its card) is an error."""
    from ..data import DatasetSpec, load_image_data
    from ..hub import card_datasets, is_local_reference

    for ref in card_datasets(source.card):
        if ref == data.spec.reference or not is_local_reference(ref) or not Path(ref).exists():
            continue
        try:
            own = load_image_data(DatasetSpec(ref), data.split).class_names
        except Exception as e:  # provenance check only: an unreadable card dataset is not fatal
            logger.debug("could not read the card dataset %s: %s", ref, e)
            continue
        if own is not None and data.class_names is not None and len(own) != len(data.class_names):
            raise DataError(f"dataset {data.spec.reference!r} has {len(data.class_names)} classes but the model "
                            f"was fine-tuned on {ref!r} with {len(own)}",
                            "pass the dataset of the model's own task with --data")
        return


def _absolute(ref: str) -> str:
    """Local paths become absolute (the resolved config must work from any folder); Hub ids pass through."""
    from ..hub import is_local_reference

    return str(Path(ref).expanduser().resolve()) if is_local_reference(ref) else ref


def _resolve_references(config: ConditionConfig, source) -> tuple[ConditionConfig, Path, Path]:
    """Base, data, output and checkpoint folder of the run; refuses an existing output or stale checkpoints."""
    from ..hub import card_datasets, infer_base, local_paths_note
    from ..outputs import check_destination, check_not_an_input
    from .checkpointing import check_checkpoint_dir

    name = Path(str(config.model).split("@")[0].rstrip("/")).name
    output = Path(config.output or f"{name}-distac").expanduser()
    check_destination(output, config.overwrite)
    checkpoint_dir = Path(config.checkpoint_dir).expanduser() if config.checkpoint_dir else \
        output.with_name(output.name + ".checkpoints")
    if not config.resume and latest_checkpoint(checkpoint_dir) is not None and not config.overwrite:
        raise InputError(f"checkpoints of an earlier run are in {str(checkpoint_dir)!r}",
                         "pass --resume to continue that run, or --overwrite to start afresh")
    base_ref = infer_base(source.card, config.model, config.base)
    data_ref = config.data or next(iter(card_datasets(source.card)), None)
    if data_ref is None:
        raise InputError(f"no --data given and the card of {config.model!r} names no dataset"
                         + local_paths_note(source.card, "datasets"),
                         "pass --data with a Hub dataset id or a local dataset path")
    config = replace(config, model=_absolute(config.model), base=_absolute(base_ref), data=_absolute(data_ref),
                     output=str(output), reference=[_absolute(r) for r in config.reference] if config.reference
                     else config.reference, templates=_absolute(config.templates) if config.templates else None,
                     eval_data=_absolute(config.eval_data) if config.eval_data else None,
                     class_names=_absolute(config.class_names) if config.class_names else None)
    inputs = [config.model, config.base, config.data, config.eval_data, config.recipe, *(config.reference or [])]
    check_not_an_input(output, inputs)  # an output replaced with --overwrite never takes an input with it
    if config.checkpoint_every:
        check_not_an_input(checkpoint_dir, [*inputs, str(output)], "--checkpoint-dir")
        check_checkpoint_dir(checkpoint_dir)
    return config, output, checkpoint_dir


def _read_class_names(path: str) -> tuple[str, ...]:
    """``--class-names FILE``: one name per line (blank lines skipped)."""
    from ..yaml_files import read_user_text

    text = read_user_text(Path(path).expanduser(), "--class-names file")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) < 2:
        raise InputError(f"--class-names {path!r} holds {len(names)} name(s)", "give one class name per line, at least 2")
    return names


def _load_splits(config: ConditionConfig, source) -> tuple[Any, Any | None, Any]:
    """The training split (``--train-limit`` applied; a sample of a stream for Hub data or ``--num-images``),
    the evaluation split (or ``None``), and the split whose classes and name define the head."""
    from ..data import DatasetSpec, load_image_data, sample_stream
    from ..evaluation import default_cache_dir

    names = _read_class_names(config.class_names) if config.class_names else None
    spec = DatasetSpec(config.data, config.dataset_config, config.image_column, config.label_column, names)
    streams = config.num_images is not None or not spec.is_local
    if streams:
        n = config.num_images or config.steps * config.batch_size
        train = sample_stream(spec, config.train_split, n, default_cache_dir() / "streams", seed=config.seed,
                              buffer_size=config.shuffle_buffer, progress=config.progress)
    else:
        train = load_image_data(spec, config.train_split, streaming=False)
    if config.train_limit is not None and config.train_limit < len(train.dataset):
        train = replace(train, dataset=train.dataset.select(range(config.train_limit)))
    n = len(train.dataset)
    if config.batch_size > n:
        raise InputError(f"--batch-size {config.batch_size} is larger than the data ({n} images in "
                         f"{config.data!r} split {config.train_split!r})", f"use --batch-size {n} or less, or more data")
    check_card_classes(source, train)
    eval_data = None
    if config.eval_split.lower() != "none":
        eval_spec = spec if not config.eval_data else DatasetSpec(config.eval_data, config.dataset_config,
                                                                   class_names=names)
        stream_eval = config.eval_limit and (config.num_images is not None or not eval_spec.is_local)
        eval_data = sample_stream(eval_spec, config.eval_split, config.eval_limit, default_cache_dir() / "streams",
                                  shuffle=False, progress=config.progress) if stream_eval \
            else load_image_data(eval_spec, config.eval_split, streaming=False)
        if (train.class_names is not None and eval_data.class_names is not None
                and len(train.class_names) != len(eval_data.class_names)):
            raise DataError(f"{eval_spec.reference!r} split {config.eval_split!r} has {len(eval_data.class_names)} "
                            f"classes but {config.data!r} split {config.train_split!r} has {len(train.class_names)}",
                            "evaluate on a labeled dataset of the same task (--eval-data)")
    head_data = train
    if train.class_names is None and eval_data is not None and eval_data.class_names is not None:
        head_data = eval_data  # the head (its classes, its templates) is the labeled dataset's
        train = replace(train, class_names=eval_data.class_names)
    if train.class_names is None:
        raise InputError(f"the classes of the task are unknown: {config.data!r} has no labels"
                         + ("" if config.eval_split.lower() == "none" or config.eval_data
                            else " and no --eval-data was given"),
                         "pass --eval-data (a labeled dataset of the same task) or --class-names FILE (one name "
                         "per line, in label order)")
    if eval_data is not None and eval_data.label_column is None:
        logger.warning("%s split %s has no labels: accuracy and ECE are not measured (entropy is)",
                       eval_data.spec.reference, eval_data.split)
    return train, eval_data, head_data


def resolve_inputs(config: ConditionConfig) -> Inputs:
    """Resolve and load everything the run needs; raises before anything is written.

    Raises:
        InputError, DataError, CheckpointError, HubError: bad input.
    """
    from ..checkpoints import LazyVisionWeights, check_against_base, load_base, load_finetuned
    from ..heads import load_templates_file
    from ..task_vectors import TaskVectorView, global_norm

    templates = None
    if config.recipe:
        config, templates = from_recipe(config)
    if config.templates:
        templates = load_templates_file(config.templates)
    source = load_finetuned(config.model)
    config, output, checkpoint_dir = _resolve_references(config, source)
    train, eval_data, head_data = _load_splits(config, source)

    base = load_base(config.base)
    check_against_base(base, source)
    # θ₀ stays on disk (read tensor by tensor when needed) and τ is computed on access: at ViT-B/32 that is two
    # copies of the tower (700 MB) not held through training. Keys in the tower's own order, so norms (and κ)
    # are summed exactly as before.
    order = list(base.parameter_shapes)
    theta0 = LazyVisionWeights(base.resolved.local_dir)
    tau = TaskVectorView(theta0, source.weights, order)
    reference_norms = None
    if config.reference:
        reference_norms = []
        for ref in config.reference:
            other = load_finetuned(ref, lazy=True)
            check_against_base(base, other)
            reference_norms.append(global_norm(TaskVectorView(theta0, other.weights, order)))
            del other
    return Inputs(config, source, base, train, eval_data, theta0, tau, global_norm(tau), reference_norms,
                  templates, output, checkpoint_dir, head_data=head_data)


def choose_preset(config: ConditionConfig, norm: float, reference_norms: list[float] | None,
                  teacher_metrics: dict | None, num_classes: int) -> tuple[str, float, float, float, dict | None]:
    """``(preset, κ, T_teacher, T_student, diagnosis)`` from the preset rules (METHOD.md §1)."""
    from ..diagnosis import PRESETS

    has_rule = any(v is not None for v in (config.kappa, config.target_norm, reference_norms))
    diagnosis = None
    preset = config.preset or ("norm" if has_rule else "confidence")
    if preset == "auto":
        preset, kappa, diagnosis = _auto_preset(config, norm, reference_norms, teacher_metrics, num_classes)
    elif preset == "confidence":
        if config.kappa is not None or config.target_norm is not None:
            raise InputError("--preset confidence keeps κ = 1; --kappa/--target-norm need --preset norm or both",
                             "use --preset both to rescale and sharpen")
        kappa = 1.0
    else:
        if not has_rule:
            raise InputError(f"--preset {preset} needs a target: --kappa, --target-norm or --reference",
                             "e.g. --reference the other fine-tuned models of the merge (κ = their mean norm / ‖τ‖)")
        kappa, _ = compute_kappa(norm, kappa=config.kappa, target_norm=config.target_norm,
                                 reference_norms=reference_norms)
        if kappa > 1:
            logger.warning("κ = %.3g > 1 stretches the task vector; the paper only shrinks long ones", kappa)
    t_tcr, t_stu = PRESETS[preset]
    t_tcr = config.teacher_temperature if config.teacher_temperature is not None else t_tcr
    t_stu = config.student_temperature if config.student_temperature is not None else t_stu
    return preset, float(kappa), float(t_tcr), float(t_stu), diagnosis


def _auto_preset(config: ConditionConfig, norm: float, reference_norms: list[float] | None,
                 teacher_metrics: dict | None, num_classes: int) -> tuple[str, float, dict]:
    """``--preset auto``: diagnose like ``hfdistac inspect`` and take its recommendation."""
    from ..diagnosis import classify

    ratio = mean_others = None
    if reference_norms:
        ratio, mean_others = norm / statistics.median(reference_norms), statistics.fmean(reference_norms)
    elif config.target_norm is not None:
        ratio, mean_others = norm / config.target_norm, config.target_norm
    h = teacher_metrics["entropy"] / math.log(num_classes) if teacher_metrics and num_classes > 1 else None
    flags, rec = classify(norm, ratio, mean_others, h)
    diagnosis = {"flags": flags, "norm_ratio": ratio, "normalized_entropy": h, **rec}
    if rec["action"] != "distac":
        raise InputError(f"--preset auto: the diagnosis found nothing to condition (norm ratio "
                         f"{'n/a' if ratio is None else f'{ratio:.2f}'}, normalised entropy "
                         f"{'n/a' if h is None else f'{h:.3f}'})",
                         "the model is ready to merge; choose --preset norm or confidence to condition anyway")
    return rec["preset"], rec["kappa"], diagnosis
