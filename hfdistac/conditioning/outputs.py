"""What a conditioning run leaves behind: ``report.json``, the output directory and its model card.

The directory (written atomically) holds the conditioned vision tower (``config.json`` + ``model.safetensors``,
and the base's ``preprocessor_config.json``), the conditioned task vector τ′ (``task_vector.safetensors``),
``report.json``, the resolved configuration (``hfdistac_config.json``), per-layer-norm / training-curve /
reliability plots and a README model card.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from .algorithm import task_vector_norm
from .config import PAPER_URL, ConditionConfig
from .inputs import Inputs


def build_report(inputs: Inputs, resolved: ConditionConfig, kappa: float, target_norm: float,
                 theta: dict[str, torch.Tensor], metrics: Mapping[str, dict | None], history: list[dict],
                 diagnosis: dict | None, ranks: list[int], accumulation: int, cached: bool,
                 projected_steps: int | None) -> dict:
    """The run's ``report.json``: settings, norms, and the metrics of teacher, naive rescaling and result.

    Args:
        metrics: ``{"before": teacher, "rescaled_only": θ₀ + κτ, "after": DisTaC}`` metrics (``None`` each
            without an evaluation split).
    """
    norm_after = task_vector_norm(theta, inputs.theta0)
    report: dict[str, Any] = {
        "method": "distac", "paper": PAPER_URL,
        "model": resolved.model, "model_revision": inputs.source.resolved.revision,
        "base": resolved.base, "base_revision": inputs.base.resolved.revision,
        "base_vision_identity": inputs.base.vision_identity,
        "dataset": resolved.data, "dataset_revision": inputs.train.revision,
        "dataset_config": resolved.dataset_config, "train_split": resolved.train_split,
        "num_train_examples": len(inputs.train.dataset), "eval_split": None if inputs.eval is None else
        resolved.eval_split, "num_classes": len(inputs.train.class_names or []) or None,
        "preset": resolved.preset, "kappa": kappa, "target_norm": target_norm,
        "norm_before": inputs.norm, "norm_rescaled": kappa * inputs.norm, "norm_after": norm_after,
        "norm_after_over_target": norm_after / target_norm, "reference_norms": inputs.reference_norms,
        "teacher_temperature": resolved.teacher_temperature, "student_temperature": resolved.student_temperature,
        "beta": resolved.beta, "max_norm_ratio": resolved.max_norm_ratio, "projected_steps": projected_steps,
        "steps": resolved.steps, "lr": resolved.lr, "weight_decay": resolved.weight_decay,
        "warmup_steps": resolved.warmup_steps, "batch_size": resolved.batch_size,
        "micro_batch_size": resolved.micro_batch_size, "gradient_accumulation": accumulation,
        "num_processes": len(ranks), "ranks": ranks, "teacher_logits_cached": cached,
        "mixed_precision": resolved.mixed_precision, "output": str(inputs.output),
    }
    for suffix, m in metrics.items():
        if m is None:
            continue
        report[f"entropy_{suffix}"] = m["entropy"]
        report[f"max_prob_{suffix}"] = m["max_prob"]
        if "accuracy" in m:
            report[f"accuracy_{suffix}"] = m["accuracy"]
            report[f"ece_{suffix}"] = m["ece"]
            report[f"nll_{suffix}"] = m["nll"]
    if metrics.get("before") is not None:
        report["num_eval_examples"] = metrics["before"]["n"]
    if diagnosis is not None:
        report["diagnosis"] = diagnosis
    report["history"] = history
    return report


def command_line(config: ConditionConfig) -> str:
    """The ``hfdistac condition`` command line that reproduces a resolved configuration."""
    defaults = ConditionConfig(model="x")
    parts = ["hfdistac condition", str(config.model)]
    for f in ("base", "data", "eval_data", "class_names", "dataset_config", "kappa", "target_norm", "preset",
              "teacher_temperature", "student_temperature", "beta", "max_norm_ratio", "steps", "lr", "weight_decay",
              "warmup_steps", "batch_size", "micro_batch_size", "max_grad_norm", "seed", "mixed_precision",
              "train_split", "train_limit", "num_images", "shuffle_buffer", "eval_split", "eval_limit"):
        value = getattr(config, f)
        if value is not None and value != getattr(defaults, f):
            parts.append(f"--{f.replace('_', '-')} {value}")
    if config.reference:
        parts.append("--reference " + " ".join(config.reference))
    return " ".join(parts)


def write_output(inputs: Inputs, resolved: ConditionConfig, report: dict, theta: dict[str, torch.Tensor],
                 metrics: Mapping[str, dict | None]) -> None:
    """Write the output directory atomically: weights, τ′, report, resolved config, plots and the card."""
    from ..checkpoints import save_full_clip, save_vision_checkpoint
    from ..outputs import atomic_output_dir, write_json
    from ..plots import curves_plot, per_layer_norms_plot, reliability_plot
    from ..task_vectors import TaskVector, per_layer_norms, save_task_vector

    kappa = report["kappa"]
    provenance = {
        "method": "distac", "paper": PAPER_URL,
        "base": resolved.base, "base_revision": inputs.base.resolved.revision,
        "base_vision_identity": inputs.base.vision_identity,
        "source": resolved.model, "source_revision": inputs.source.resolved.revision,
        "dataset": resolved.data, "kappa": repr(kappa), "target_norm": repr(report["target_norm"]),
        "teacher_temperature": repr(resolved.teacher_temperature),
        "student_temperature": repr(resolved.student_temperature), "beta": repr(resolved.beta),
        "max_norm_ratio": repr(resolved.max_norm_ratio),
        "steps": str(resolved.steps), "lr": repr(resolved.lr), "preset": str(resolved.preset),
    }
    tau_prime = TaskVector({k: theta[k] - inputs.theta0[k] for k in theta}, provenance)
    tau_norms = inputs.tau_layer_norms["by_block"]
    with atomic_output_dir(inputs.output, resolved.overwrite) as tmp:
        if resolved.full_clip:
            save_full_clip(tmp, inputs.base.resolved.local_dir, theta, provenance)
        else:
            save_vision_checkpoint(tmp, inputs.base.vision_config, theta, provenance, inputs.base.image_processor)
        save_task_vector(tau_prime, tmp / "task_vector.safetensors")
        write_json(tmp / "report.json", report)
        write_json(tmp / "hfdistac_config.json", {"command": "condition", **resolved.to_dict()})
        plots = [per_layer_norms_plot({"τ (teacher)": tau_norms,
                                       f"κτ (κ={kappa:.3g})": {k: kappa * v for k, v in tau_norms.items()},
                                       "τ′ (DisTaC)": per_layer_norms(tau_prime)["by_block"]},
                                      tmp / "per_layer_norms.png", title="Task-vector norm per layer")]
        if report["history"]:
            plots.append(curves_plot(report["history"], ["kd_loss", "anchor", "norm_ratio", "entropy", "lr"],
                                     tmp / "training_curves.png", title="DisTaC training"))
        teacher = metrics.get("before")
        if teacher is not None and "reliability" in teacher:
            plots.append(reliability_plot({"teacher": teacher["reliability"],
                                           "rescaled θ₀+κτ": metrics["rescaled_only"]["reliability"],
                                           "DisTaC": metrics["after"]["reliability"]}, tmp / "reliability.png",
                                          title="Reliability before / after DisTaC"))
        (tmp / "README.md").write_text(_card(inputs, resolved, report, [p.name for p in plots]), encoding="utf-8")


#: Settings that name a model, dataset or file: a card shows them by public name (:func:`~hfdistac.cards.public_name`).
_REFERENCE_FIELDS = ("model", "base", "data", "eval_data", "class_names", "templates", "output", "checkpoint_dir")


def _public_config(resolved: ConditionConfig) -> ConditionConfig:
    """The resolved settings as a card shows them: local paths reduced to folder names."""
    from ..cards import public_name

    changes = {f: public_name(getattr(resolved, f)) for f in _REFERENCE_FIELDS if getattr(resolved, f)}
    if resolved.reference:
        changes["reference"] = [public_name(r) for r in resolved.reference]
    return replace(resolved, **changes)


def _card_metadata(inputs: Inputs, resolved: ConditionConfig, report: dict) -> dict:
    """The card's YAML metadata: Hub ids only, the source's license, and ``model-index`` accuracies."""
    from pathlib import Path

    from ..cards import accuracy_result, inherited_license, is_hub_id, public_name

    source = inputs.source.resolved
    from ..cards import lineage
    from ..hub import card_base_model

    # Lineage: Hub ids wherever one is known, a local copy's own included (its Hub-cache path, config.json's
    # _name_or_path; for the base also the base_model the source's card names); folder names for display.
    base = lineage(resolved.base, inputs.base.resolved.local_dir, hint=card_base_model(inputs.source.card or {}))
    src = lineage(resolved.model, source.local_dir)
    if src["id"] == base["id"]:  # a fine-tune saved from the base keeps the base's _name_or_path: not its own id
        src = {"id": None, "name": public_name(resolved.model)}
    parent = src["id"] or base["id"]
    eval_ref = resolved.eval_data or resolved.data
    evals = [accuracy_result(eval_ref, public_name(eval_ref), report["eval_split"], report[f"accuracy_{suffix}"], label)
             for suffix, label in (("before", "teacher"), ("rescaled_only", "naive rescaling"), ("after", "DisTaC"))
             if report.get(f"accuracy_{suffix}") is not None]
    hub_data = list(dict.fromkeys(r.split("@")[0] for r in (resolved.data, resolved.eval_data) if is_hub_id(r)))
    hub_meta = {"method": "distac", "base": base["id"], "base_name": None if base["id"] else base["name"],
                "base_revision": inputs.base.resolved.revision, "base_vision_identity": inputs.base.vision_identity,
                "source": src["id"], "source_name": None if src["id"] else src["name"],
                "source_revision": source.revision}
    return {
        "base_model": parent, "base_model_relation": "finetune" if parent else None,
        "license": inherited_license([inputs.source.card]), "library_name": "transformers",
        "pipeline_tag": "zero-shot-image-classification" if resolved.full_clip else "image-feature-extraction", "tags": ["hfdistac", "distac", "task-vector", "clip"],
        "datasets": hub_data or None, "model_name": Path(str(resolved.output)).name,
        "eval_results": evals or None, "hfdistac": {k: v for k, v in hub_meta.items() if v is not None},
    }


def _card(inputs: Inputs, resolved: ConditionConfig, report: dict, plots: list[str]) -> str:
    from pathlib import Path

    import yaml

    from ..cards import public_name, render_card

    source = inputs.source.resolved
    rows = []
    for label, suffix in (("teacher θ₀ + τ", "before"), (f"naive rescaling θ₀ + {report['kappa']:.3g}τ",
                                                         "rescaled_only"), ("DisTaC θ₀ + τ′", "after")):
        norm = {"before": report["norm_before"], "rescaled_only": report["norm_rescaled"],
                "after": report["norm_after"]}[suffix]
        rows.append({"label": label, "norm": norm, "accuracy": report.get(f"accuracy_{suffix}"),
                     "entropy": report.get(f"entropy_{suffix}"), "ece": report.get(f"ece_{suffix}")})
    shown = _public_config(resolved)
    config_yaml = yaml.safe_dump({k: v for k, v in shown.to_dict().items() if v is not None}, sort_keys=False)
    context = {
        "card_data": _card_metadata(inputs, resolved, report), "source": shown.model,
        "source_revision": source.revision, "source_is_local": source.is_local, "base": shown.base,
        "base_is_local": inputs.base.resolved.is_local, "base_revision": inputs.base.resolved.revision,
        "dataset": shown.data, "dataset_is_local": not report.get("dataset_revision") and shown.data != resolved.data,
        "dataset_revision": report.get("dataset_revision"), "eval_dataset": public_name(resolved.eval_data)
        if resolved.eval_data else None, "report": report, "rows": rows, "plots": plots, "paper_url": PAPER_URL,
        "accuracy_measured": any(r["accuracy"] is not None for r in rows),
        "repo": resolved.push_to or Path(str(resolved.output)).name, "full_clip": resolved.full_clip,
        "command": command_line(shown), "config_yaml": config_yaml.strip(),
    }
    return render_card("condition_card.md.j2", context)
