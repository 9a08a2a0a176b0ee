"""Diagnosing task vectors before a merge: which ones will hurt it, and what DisTaC should do about it.

Two failure modes from the DisTaC paper (arXiv 2508.01148):

* **norm mismatch** — a task vector much longer than the others dominates every merge. Flagged when
  ``‖τ_t‖ / median_{s≠t} ‖τ_s‖ > norm_threshold`` (default 2.0; the paper's harmful vectors were 5–7× longer).
  Fix: shrink it, κ_t = mean_{s≠t}‖τ_s‖ / ‖τ_t‖, then distil at temperatures (10, 10).
* **low confidence** — an under-confident source model (label smoothing, mixup, focal loss) passes its
  indecision on to the merge. Flagged when the mean prediction entropy, normalised by its maximum
  ``log C``, exceeds ``entropy_threshold`` (default 0.1, i.e. 10 % of a uniform prediction's entropy;
  cross-entropy fine-tuned models sit far below it, label smoothing 0.1 lands above it). Fix: κ = 1,
  temperatures (T_teacher, T_student) = (1, 10).

Both at once: κ as for norm mismatch with temperatures (1, 10).
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from .errors import InputError
from .hub.resolve import resolving_once

logger = logging.getLogger(__name__)

NORM_MISMATCH = "norm_mismatch"
LOW_CONFIDENCE = "low_confidence"
DEFAULT_NORM_THRESHOLD = 2.0
DEFAULT_ENTROPY_THRESHOLD = 0.1

PRESETS: dict[str, tuple[float, float]] = {
    # name: (teacher temperature, student temperature), METHOD.md §1
    "norm": (10.0, 10.0),
    "confidence": (1.0, 10.0),
    "both": (1.0, 10.0),
}


@dataclass
class ModelDiagnosis:
    """Diagnostics of one model's task vector (JSON-ready)."""

    name: str
    reference: str
    revision: str
    norm: float
    norm_ratio: float | None = None
    target_norm: float | None = None
    per_layer_norms: dict = field(default_factory=dict)
    dataset: str | None = None
    split: str | None = None
    num_classes: int | None = None
    entropy: float | None = None
    normalized_entropy: float | None = None
    max_prob: float | None = None
    accuracy: float | None = None
    ece: float | None = None
    reliability: dict | None = None
    flags: list[str] = field(default_factory=list)
    recommendation: dict = field(default_factory=dict)


@dataclass
class Diagnosis:
    """The result of ``hfdistac inspect``."""

    base: str
    base_revision: str
    norm_threshold: float
    entropy_threshold: float
    models: list[ModelDiagnosis]

    def to_dict(self) -> dict:
        return {"base": self.base, "base_revision": self.base_revision,
                "thresholds": {"norm_ratio": self.norm_threshold, "normalized_entropy": self.entropy_threshold},
                "models": [asdict(m) for m in self.models]}


def norm_statistics(norms: Sequence[float]) -> list[tuple[float | None, float | None]]:
    """For each vector: (ratio to the median norm of the others, mean norm of the others)."""
    out: list[tuple[float | None, float | None]] = []
    for i, n in enumerate(norms):
        others = [m for j, m in enumerate(norms) if j != i]
        if not others:
            out.append((None, None))
            continue
        med = statistics.median(others)
        out.append((n / med if med > 0 else math.inf, sum(others) / len(others)))
    return out


def classify(norm: float, norm_ratio: float | None, mean_others: float | None, normalized_entropy: float | None,
             *, norm_threshold: float = DEFAULT_NORM_THRESHOLD, entropy_threshold: float = DEFAULT_ENTROPY_THRESHOLD
             ) -> tuple[list[str], dict]:
    """Flags and the DisTaC recommendation for one task vector.

    Returns:
        ``(flags, recommendation)``; the recommendation has ``action`` (``none`` or ``distac``) and, for
        ``distac``: ``preset``, ``kappa``, ``target_norm``, ``teacher_temperature``, ``student_temperature``.
    """
    if norm_threshold <= 1:
        raise InputError(f"norm threshold must be > 1, got {norm_threshold}")
    if not 0 < entropy_threshold < 1:
        raise InputError(f"entropy threshold is a fraction of log(C) in (0, 1), got {entropy_threshold}")
    flags = []
    if norm_ratio is not None and norm_ratio > norm_threshold:
        flags.append(NORM_MISMATCH)
    if normalized_entropy is not None and normalized_entropy > entropy_threshold:
        flags.append(LOW_CONFIDENCE)
    if not flags:
        return flags, {"action": "none", "reason": "ready to merge"}
    if flags == [NORM_MISMATCH]:
        preset = "norm"
    elif flags == [LOW_CONFIDENCE]:
        preset = "confidence"
    else:
        preset = "both"
    t_tcr, t_stu = PRESETS[preset]
    kappa, target = 1.0, None
    if NORM_MISMATCH in flags and mean_others:
        kappa, target = mean_others / norm, mean_others
    reasons = []
    if NORM_MISMATCH in flags:
        reasons.append(f"task vector is {norm_ratio:.1f}x the median norm of the others (threshold "
                       f"{norm_threshold:g}x)")
    if LOW_CONFIDENCE in flags:
        reasons.append(f"mean prediction entropy is {normalized_entropy:.1%} of the maximum (threshold "
                       f"{entropy_threshold:.1%})")
    reason = "; ".join(reasons)
    return flags, {"action": "distac", "preset": preset, "kappa": kappa, "target_norm": target,
                   "teacher_temperature": t_tcr, "student_temperature": t_stu, "reason": reason}


def condition_command(reference: str, base: str, rec: dict, dataset: str | None = None) -> str | None:
    """The ``hfdistac condition`` command line that applies a recommendation (with ``--lr`` when the
    recommendation carries the rate the model's card names, :func:`card_distac_lr`)."""
    if rec.get("action") != "distac":
        return None
    parts = ["hfdistac condition", reference, "--base", base, "--preset", rec["preset"]]
    if rec.get("target_norm"):
        parts += ["--target-norm", f"{rec['target_norm']:.6g}"]
    if rec.get("lr"):
        parts += ["--lr", f"{rec['lr']:g}"]
    if dataset:
        parts += ["--data", dataset]
    return " ".join(parts)


def card_distac_lr(card: dict) -> float | None:
    """The learning rate a model card recommends for DisTaC (``hfdistac: {distac_lr: ...}``), if any.

    The paper distils at the *standard* fine-tuning rate of the task (1e-5 for ViT-B/32), which is not
    ``condition``'s default for every model: the example suite's cards name 1e-5, a tenth of its fine-tuning rate.
    """
    value = (card.get("hfdistac") or {}).get("distac_lr") if isinstance(card, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def inspect_models(
    models: Sequence[str],
    *,
    base: str | None = None,
    datasets: Sequence[str | None] | None = None,
    names: Sequence[str] | None = None,
    split: str = "test",
    limit: int | None = 512,
    batch_size: int = 64,
    num_workers: int = 0,
    templates: Sequence[Sequence[str] | None] | None = None,
    dataset_configs: Sequence[str | None] | None = None,
    columns: Sequence[tuple[str | None, str | None] | None] | None = None,
    norm_threshold: float = DEFAULT_NORM_THRESHOLD,
    entropy_threshold: float = DEFAULT_ENTROPY_THRESHOLD,
    device: str = "cpu",
    progress: bool = False,
) -> Diagnosis:
    """Diagnose task vectors against their base (the library form of ``hfdistac inspect``).

    Args:
        models: Fine-tuned model references (Hub ``repo[@rev]`` or local paths).
        base: The pretrained CLIP; default: inferred from the first model's card ``base_model``.
        datasets: One dataset per model (or ``None`` entries); default: each model card's first dataset.
        names: Display names (default: the last path component of each reference).
        split: Split to measure entropy/accuracy on.
        limit: At most this many images per model (``None``: all).
        batch_size: Evaluation batch size.
        num_workers: DataLoader workers for preprocessing.
        templates: Per-model prompt templates overriding the task defaults.
        dataset_configs: Per-model dataset configuration names.
        columns: Per-model ``(image column, label column[, class names])`` overrides (``None``: detected).
        norm_threshold: Norm-ratio threshold for the norm-mismatch flag.
        entropy_threshold: Normalised-entropy threshold for the low-confidence flag.
        device: Torch device for evaluation.
        progress: Show progress bars.

    Returns:
        A :class:`Diagnosis`.
    """
    from tqdm.auto import tqdm

    from .checkpoints import load_base, load_finetuned
    from .hub import infer_base

    if not models:
        raise InputError("no models to inspect", "pass one or more fine-tuned model references")
    n = len(models)
    for label, seq in (("datasets", datasets), ("names", names), ("templates", templates),
                       ("dataset_configs", dataset_configs), ("columns", columns)):
        if seq is not None and len(seq) != n:
            raise InputError(f"got {len(seq)} {label} for {n} models", f"give one {label[:-1]} per model, or none")
    classify(1.0, None, None, None, norm_threshold=norm_threshold, entropy_threshold=entropy_threshold)

    first = load_finetuned(models[0])
    base = infer_base(first.card, models[0], base)
    base_model = load_base(base)
    theta0 = base_model.weights
    results: list[ModelDiagnosis] = []
    card_lrs: list[float | None] = []
    eval_options = {"split": split, "limit": limit, "batch_size": batch_size, "num_workers": num_workers,
                    "device": device, "progress": progress}
    for i, ref in enumerate(tqdm(models, desc="inspecting", disable=not progress, unit="model")):
        ft = first if i == 0 else load_finetuned(ref)
        name = names[i] if names else ref.rstrip("/").split("/")[-1]
        ds_ref = datasets[i] if datasets else None
        if ds_ref is None and datasets is None:
            from .hub import card_datasets

            found = card_datasets(ft.card)
            ds_ref = found[0] if found else None
        spec = None
        if ds_ref is not None:
            from .data import DatasetSpec

            image_column, label_column, *given_names = (columns[i] if columns and columns[i] else (None, None))
            spec = DatasetSpec(ds_ref, dataset_configs[i] if dataset_configs else None, image_column, label_column,
                               tuple(given_names[0]) if given_names and given_names[0] else None)
        results.append(_diagnose_one(name, ref, ft, base_model, theta0, spec,
                                     list(templates[i]) if templates and templates[i] else None, eval_options))
        card_lrs.append(card_distac_lr(ft.card))
        del ft
    for diag, lr, (ratio, mean_others) in zip(results, card_lrs, norm_statistics([d.norm for d in results]),
                                              strict=True):
        diag.norm_ratio = ratio
        diag.flags, diag.recommendation = classify(diag.norm, ratio, mean_others, diag.normalized_entropy,
                                                   norm_threshold=norm_threshold,
                                                   entropy_threshold=entropy_threshold)
        if lr and diag.recommendation.get("action") == "distac":
            diag.recommendation["lr"] = lr
        diag.target_norm = diag.recommendation.get("target_norm")
        cmd = condition_command(diag.reference, base, diag.recommendation, diag.dataset)
        if cmd:
            diag.recommendation["command"] = cmd
    return Diagnosis(base=base, base_revision=base_model.resolved.revision, norm_threshold=norm_threshold,
                     entropy_threshold=entropy_threshold, models=results)


def _diagnose_one(name: str, ref: str, ft, base_model, theta0, spec, templates: list[str] | None,
                  options: dict) -> ModelDiagnosis:
    """Norms of one model's task vector and, with a dataset, its entropy, accuracy, ECE and reliability."""
    from .checkpoints import build_vision_model, check_against_base
    from .data import load_image_data
    from .evaluation import evaluate_model, head_for_task
    from .metrics import reliability_bins
    from .task_vectors import compute_task_vector, per_layer_norms

    check_against_base(base_model, ft)
    tv = compute_task_vector(theta0, ft.weights)
    diag = ModelDiagnosis(name=name, reference=ref, revision=ft.resolved.revision, norm=tv.norm(),
                          per_layer_norms=per_layer_norms(tv))
    del tv
    if spec is None:
        logger.info("no dataset for %s: norm diagnostics only", ref)
        return diag
    data = load_image_data(spec, options["split"])
    head = head_for_task(base_model, data, templates=templates)
    model = build_vision_model(ft.config, ft.weights)
    m = evaluate_model(model, head, data, base_model.image_processor, batch_size=options["batch_size"],
                       limit=options["limit"], num_workers=options["num_workers"], device=options["device"],
                       progress=options["progress"], return_logits=True)
    if m["labels"] is not None:
        diag.reliability = reliability_bins(m["logits"], m["labels"])
    diag.dataset, diag.split, diag.num_classes = spec.reference, options["split"], head.num_classes
    diag.entropy, diag.max_prob = m["entropy"], m["max_prob"]
    diag.normalized_entropy = m["entropy"] / math.log(head.num_classes) if head.num_classes > 1 else 0.0
    diag.accuracy, diag.ece = m.get("accuracy"), m.get("ece")
    return diag


def diagnosis_summary(diagnosis: Diagnosis) -> str:
    """The ``inspect`` summary: a Markdown table of every model plus one recommendation per flagged model
    (what the CLI prints and the README of ``inspect --output`` shows)."""
    from .tables import table

    rows = []
    for m in diagnosis.models:
        rows.append([m.name, m.norm, m.norm_ratio, m.entropy, m.normalized_entropy, m.max_prob, m.accuracy, m.ece,
                     ", ".join(m.flags) or "ok"])
    out = [table(["model", "norm", "ratio", "entropy", "H/logC", "max p", "acc %", "ECE", "verdict"], rows,
                 align="lrrrrrrrl")]
    recs = [(m.name, m.recommendation) for m in diagnosis.models if m.recommendation.get("action") == "distac"]
    if recs:
        out.append("")
        for name, r in recs:
            kappa = f"kappa={r['kappa']:.3g}, " if r.get("target_norm") else ""
            out.append(f"{name}: {r['reason']} -> DisTaC preset '{r['preset']}' ({kappa}T_teacher="
                       f"{r['teacher_temperature']:g}, T_student={r['student_temperature']:g})")
            if r.get("command"):
                out.append(f"    {r['command']}")
    else:
        out.append("\nNo harmful task vectors found: ready to merge.")
    return "\n".join(out)


def inspect_card(diagnosis: Diagnosis, plots: list) -> str:
    """README of an ``inspect --output`` directory: the summary, the thresholds and the plots (pushable as is)."""
    from pathlib import Path

    from .cards import public_command

    header = "---\ntags:\n- hfdistac\n- task-vectors\n- merge-diagnostics\n---\n"
    images = "\n".join(f"![{Path(p).stem}]({Path(p).name})" for p in plots)
    # the suggested commands as every card shows them: local models and datasets by their folder name
    summary = "\n".join(public_command(line) if line.lstrip().startswith("hfdistac ") else line
                        for line in diagnosis_summary(diagnosis).splitlines())
    return (f"{header}\n# Task-vector diagnosis (hfdistac inspect)\n\n{summary}\n\n"
            f"Thresholds: norm ratio > {diagnosis.norm_threshold:g} flags `norm_mismatch`, normalised entropy > "
            f"{diagnosis.entropy_threshold:g} flags `low_confidence`. Every figure is in `report.json`; the options "
            f"of this run are in `hfdistac_config.json`.\n\n{images}\n")


def write_inspect_plots(diagnosis: Diagnosis, directory) -> list:
    """Write the per-layer norm, global norm and entropy PNGs of a diagnosis into ``directory``."""
    from pathlib import Path

    from .plots import bar_plot, per_layer_norms_plot

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = [per_layer_norms_plot({m.name: m.per_layer_norms["by_block"] for m in diagnosis.models},
                                d / "per_layer_norms.png")]
    out.append(bar_plot({m.name: m.norm_ratio for m in diagnosis.models}, d / "norm_ratio.png",
                        ylabel="norm / median of others", title="Task-vector norm ratio",
                        threshold=diagnosis.norm_threshold,
                        highlight=[m.name for m in diagnosis.models if NORM_MISMATCH in m.flags]))
    if any(m.normalized_entropy is not None for m in diagnosis.models):
        out.append(bar_plot({m.name: m.normalized_entropy for m in diagnosis.models}, d / "entropy.png",
                            ylabel="entropy / log C", title="Mean prediction entropy (normalised)",
                            threshold=diagnosis.entropy_threshold,
                            highlight=[m.name for m in diagnosis.models if LOW_CONFIDENCE in m.flags]))
    return out


@resolving_once()
def run_inspect(config) -> Diagnosis:
    """``hfdistac inspect`` as one library call: models or a recipe in, a :class:`Diagnosis` out.

    Writes ``config.output`` (``report.json``, the resolved config as ``hfdistac_config.json``, PNG plots and a
    README that ``hfdistac push`` accepts; atomically) and ``config.json`` when set.

    Args:
        config: An :class:`~hfdistac.configs.InspectConfig`.
    """
    from .runtime import apply_thread_policy

    apply_thread_policy()  # the command line's thread default, once per process
    from .evaluation import resolve_device
    from .heads import load_templates_file
    from .outputs import atomic_output_dir, check_destination, check_writable, write_json
    from .recipe import load_recipe

    if config.output:
        check_destination(config.output, config.overwrite)
    if config.json:
        check_writable(config.json, "--json file")
    models, names, datasets, base = list(config.models), None, None, config.base
    templates = configs = None
    columns = [(config.image_column, config.label_column)] * len(models)
    if len(models) == 1 and models[0].endswith((".yaml", ".yml")):
        recipe = load_recipe(models[0])
        models = [t.model for t in recipe.tasks]
        names = [t.name for t in recipe.tasks]
        datasets = [t.dataset for t in recipe.tasks]
        templates = [t.templates for t in recipe.tasks]
        configs = [t.dataset_config for t in recipe.tasks]
        columns = [(config.image_column or t.image_column, config.label_column or t.label_column, t.class_names)
                   for t in recipe.tasks]
        base = base or recipe.base
    if config.data is not None:
        if len(config.data) != len(models):
            raise InputError(f"got {len(config.data)} --data values for {len(models)} models",
                             "give one dataset per model (use 'none' to skip one)")
        datasets = [None if d.lower() == "none" else d for d in config.data]
    if config.templates:
        shared = load_templates_file(config.templates)
        templates = [shared] * len(models)
    diagnosis = inspect_models(models, base=base, datasets=datasets, names=names, split=config.split,
                               limit=config.limit, batch_size=config.batch_size, num_workers=config.num_workers,
                               templates=templates, dataset_configs=configs, columns=columns,
                               norm_threshold=config.norm_threshold,
                               entropy_threshold=config.entropy_threshold,
                               device=str(resolve_device(config.device)), progress=config.progress)
    report = diagnosis.to_dict()
    if config.json:
        write_json(config.json, report)
    if config.output:
        with atomic_output_dir(config.output, config.overwrite) as tmp:
            write_json(tmp / "report.json", report)
            write_json(tmp / "hfdistac_config.json", {"command": "inspect", **config.to_dict()})
            plots = write_inspect_plots(diagnosis, tmp)
            (tmp / "README.md").write_text(inspect_card(diagnosis, plots))
    return diagnosis
