"""Evaluating merges: each task's head and splits, one vision tower set to θ₀ + α·τ, and the paper's rows.

* :func:`load_task_data` — stage 1 (data first, to fail fast on a missing split): per task the frozen
  zero-shot head, the validation split (the recipe's ``val_split``; default the seeded 10 % of train) and the
  test split, preprocessed once and cached in memory (up to a budget) because every α of every method is
  evaluated on them.
* :class:`MergedModel` — one ``CLIPVisionModel`` whose weights are set to θ₀ + α·τ and evaluated on every task.
* :func:`reference_rows` — the zero-shot θ₀ row and the individual (normaliser) models, whose accuracies
  are cached on disk.
* :func:`evaluate_on_test` and :func:`calibrate` — a method's test rows, and one temperature per task
  fitted on validation NLL with ECE before/after (DisTaC §6.2).

Normalised accuracy(t) = accuracy(merged, t) / accuracy(normaliser t, t) on the same split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError
from ..evaluation import CachedSplit, split_accuracy
from .config import PIXEL_CACHE_BYTES, MergeConfig

logger = logging.getLogger(__name__)


@dataclass
class EvalTask:
    """One task of a merge evaluation."""

    name: str
    head: Any
    val: CachedSplit | None
    test: CachedSplit
    normalizer_ref: str


def load_task_data(recipe, base, config: MergeConfig, methods: list[str]) -> tuple[list[EvalTask], dict[str, Any]]:
    """Heads and splits of every task (none with ``--weights-only``); the train splits when a method needs data.

    Returns:
        ``(tasks, train data by task name)``.

    Raises:
        InputError: a task without a dataset.
        DataError, ReferenceNotFoundError: a dataset or split that cannot be read.
    """
    from ..data import load_image_data
    from ..evaluation import head_for_task
    from ..merging import MERGE_METHODS

    tasks: list[EvalTask] = []
    train_data: dict[str, Any] = {}
    if config.weights_only:
        return tasks, train_data
    budget = [PIXEL_CACHE_BYTES]
    needs_train = any(MERGE_METHODS[m].needs_data for m in methods)
    for t in recipe.tasks:
        if not t.dataset:
            raise InputError(f"task {t.name!r} of the recipe has no dataset",
                             "add 'dataset:' to the task, or merge weights only with --weights-only --alpha A")
        spec = t.dataset_spec()
        test = load_image_data(spec, t.test_split)
        val = load_image_data(spec, t.val_split) if config.alpha is None else None
        head = head_for_task(base, test, templates=t.templates)
        if needs_train:
            train_data[t.name] = load_image_data(spec, t.train_split)

        def split(data, limit):
            return CachedSplit(data, base.image_processor, config.batch_size, limit, config.num_workers, budget)

        tasks.append(EvalTask(t.name, head, split(val, config.val_limit) if val else None,
                              split(test, config.test_limit), t.normalizer or t.model))
    return tasks, train_data


class MergedModel:
    """One vision tower, its weights set to θ₀ + α·τ, evaluated with every task's head.

    Args:
        vision_config: The ``CLIPVisionConfig`` of the base.
        theta0: θ₀ in canonical keys.
        tasks: The :class:`EvalTask` s.
        device: Where to evaluate.
        mixed_precision: Autocast of the forward passes (``no``, ``bf16``, ``fp16``).
    """

    def __init__(self, vision_config, theta0: Mapping[str, torch.Tensor], tasks: list[EvalTask], device: torch.device,
                 mixed_precision: str):
        from ..checkpoints import build_vision_model

        self.theta0 = theta0
        self.tasks, self.device, self.mixed_precision = tasks, device, mixed_precision
        self.model = build_vision_model(vision_config, self.theta0).to(device)

    def set_weights(self, tau: Mapping[str, torch.Tensor] | None, alpha: float) -> None:
        """θ = θ₀ + α·τ (θ₀ when ``tau`` is ``None`` or α = 0)."""
        from ..checkpoints import module_key

        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for k, base in self.theta0.items():
                p = params[module_key(k)]
                if tau is None or alpha == 0:
                    p.copy_(base)
                else:
                    p.copy_(base + alpha * tau[k].to(base.dtype))

    def current_weights(self) -> dict[str, torch.Tensor]:
        """The tower's current weights in canonical keys (the parameters themselves, on the CPU; no copy there)."""
        from ..checkpoints import VISION_PREFIX

        return {VISION_PREFIX + k: p.detach().cpu() for k, p in self.model.named_parameters()}

    def accuracy(self, task: EvalTask, split: CachedSplit) -> tuple[float, torch.Tensor, torch.Tensor]:
        """``(accuracy %, logits, labels)`` of the current weights on one task's split."""
        return split_accuracy(self.model, task.head, split, self.device, self.mixed_precision)

    def evaluate_all(self, split_name: str) -> dict[str, dict]:
        """``{"accuracy": {task: %}, "logits": {task: (logits, labels)}}`` on every task's ``validation``/``test``."""
        accs, logits = {}, {}
        for task in self.tasks:
            split = task.val if split_name == "validation" else task.test
            acc, lg, lb = self.accuracy(task, split)
            accs[task.name] = acc
            logits[task.name] = (lg, lb)
        return {"accuracy": accs, "logits": logits}


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not ``None`` (``None`` when there are none)."""
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def normalize(accs: Mapping[str, float], normalizers: Mapping[str, float]) -> dict[str, float | None]:
    """100 · accuracy / normaliser accuracy per task (``None`` where the normaliser is missing or 0)."""
    out = {}
    for k, v in accs.items():
        n = normalizers.get(k)
        out[k] = 100.0 * v / n if n else None
    return out


#: Part of every cached evaluation's key: raise it when the way an accuracy is computed changes, so that numbers
#: an older build cached are never read as this build's.
EVAL_CACHE_FORMAT = 2


def _eval_cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def reference_rows(merged: MergedModel, base, report: dict, *, progress: bool = True) -> dict[str, dict[str, float]]:
    """The zero-shot and individual rows of ``report``; returns the normaliser accuracies per split.

    Individual accuracies are cached on disk (``$HF_HOME/hfdistac/evals``), keyed by everything that determines
    them: the normaliser's revision (a content hash for a local folder), the base, the split, the limit, the
    classes and templates, the precision and device type, and :data:`EVAL_CACHE_FORMAT`.

    Returns:
        ``{"validation": {task: %}, "test": {task: %}}``.
    """
    import time

    from tqdm.auto import tqdm

    from ..distributed import broadcast_values, is_main
    from ..errors import OutputError
    from ..evaluation import default_cache_dir
    from ..hub import resolve_model
    from ..outputs import write_json

    merged.set_weights(None, 0.0)
    start = time.perf_counter()
    zs_test = merged.evaluate_all("test")
    report["zero_shot"] = {"accuracy": zs_test["accuracy"], "mean_accuracy": mean(zs_test["accuracy"].values()),
                           "eval_seconds": time.perf_counter() - start,
                           "eval_images": sum(len(lg) for lg, _ in zs_test["logits"].values())}
    norm_acc: dict[str, dict[str, float]] = {"validation": {}, "test": {}}
    cache_dir = default_cache_dir() / "evals"
    for task in tqdm(merged.tasks, desc="individual models", disable=not progress, unit="task"):
        model = None
        for split_name in (["validation"] if task.val else []) + ["test"]:
            split = task.val if split_name == "validation" else task.test
            key = _eval_cache_key(EVAL_CACHE_FORMAT, resolve_model(task.normalizer_ref).revision,
                                  base.resolved.revision, split.data.spec, split.data.split, split.limit,
                                  task.head.class_names, task.head.templates, merged.mixed_precision,
                                  merged.device.type)
            cached = cache_dir / f"{key}.json"
            # the main process's cache decides for every process: they all evaluate, or none does
            found, value = broadcast_values(_read_cached_accuracy(cached) if is_main() else (0.0, 0.0))
            if found:
                norm_acc[split_name][task.name] = value
                continue
            if model is None:
                model = _normalizer_model(task.normalizer_ref, merged.device)
            acc, _, _ = split_accuracy(model, task.head, split, merged.device, merged.mixed_precision)
            norm_acc[split_name][task.name] = acc
            if not is_main():
                continue
            try:  # atomic: the demo's worker processes read and write this cache side by side
                write_json(cached, {"accuracy": acc})
            except OutputError as e:
                logger.warning("could not cache evaluation at %s: %s", cached, e)
    report["individual"] = {"accuracy": norm_acc["test"], "mean_accuracy": mean(norm_acc["test"].values())}
    report["zero_shot"]["normalized_accuracy"] = normalize(zs_test["accuracy"], norm_acc["test"])
    report["zero_shot"]["mean_normalized_accuracy"] = mean(report["zero_shot"]["normalized_accuracy"].values())
    return norm_acc


def _read_cached_accuracy(path) -> tuple[float, float]:
    """``(1, accuracy)`` from a cached evaluation, ``(0, 0)`` when there is none or it is unreadable (a cache
    hfdistac wrote is rebuilt, with a warning, never fatal)."""
    if not path.is_file():
        return 0.0, 0.0
    try:
        acc = json.loads(path.read_text(encoding="utf-8"))["accuracy"]
        if isinstance(acc, (int, float)) and not isinstance(acc, bool) and math.isfinite(acc) and 0 <= acc <= 100:
            return 1.0, float(acc)
        raise ValueError(f"accuracy {acc!r} is not a percentage")
    except (OSError, ValueError, KeyError, TypeError) as e:
        logger.warning("ignoring unreadable cached evaluation %s (%s); evaluating again", path, e)
        return 0.0, 0.0


def _normalizer_model(reference: str, device: torch.device):
    from ..checkpoints import build_vision_model, load_finetuned

    ft = load_finetuned(reference)
    return build_vision_model(ft.config, ft.weights).to(device)


def evaluate_on_test(merged: MergedModel, normalizers: Mapping[str, float]) -> tuple[dict[str, Any], dict]:
    """The current weights' test rows (accuracy, normalised accuracy, ECE, entropy per task) and test logits.

    Returns:
        ``(result fields {tasks, mean_accuracy, mean_normalized_accuracy}, test logits by task)``.
    """
    from ..metrics import classification_metrics

    test = merged.evaluate_all("test")
    rows = []
    for task in merged.tasks:
        lg, lb = test["logits"][task.name]
        m = classification_metrics(lg, lb)
        rows.append({"name": task.name, "accuracy": m["accuracy"],
                     "normalized_accuracy": normalize({task.name: m["accuracy"]}, normalizers)[task.name],
                     "ece": m["ece"], "entropy": m["entropy"]})
    return {"tasks": rows, "mean_accuracy": mean(r["accuracy"] for r in rows),
            "mean_normalized_accuracy": mean(r["normalized_accuracy"] for r in rows)}, test["logits"]


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimising NLL(softmax(logits / T)) (LBFGS on log T, clamped to [0.01, 100])."""
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    logits, labels = logits.float(), labels.long()

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return min(max(t, 0.01), 100.0) if math.isfinite(t) else 1.0


def calibrate(merged: MergedModel, result: dict[str, Any], test_logits: Mapping[str, tuple]) -> None:
    """Fit one temperature per task on the current weights' validation NLL; add ECE before/after to ``result``.

    Raises:
        InputError: without validation data (``--alpha`` given).
    """
    from ..metrics import classification_metrics

    if not merged.tasks or merged.tasks[0].val is None:
        raise InputError("--calibrate needs validation data (it cannot be used with --alpha)",
                         "drop --alpha so a validation split is loaded, or drop --calibrate")
    val_logits = merged.evaluate_all("validation")["logits"]
    temps = {}
    for row in result["tasks"]:
        vl, vlb = val_logits[row["name"]]
        temp = fit_temperature(vl, vlb)
        temps[row["name"]] = temp
        lg, lb = test_logits[row["name"]]
        row.update({"temperature": temp, "ece_before": row["ece"],
                    "ece_after": classification_metrics(lg / temp, lb)["ece"]})
    result["temperatures"] = temps
    result["mean_ece_before"] = mean(r["ece_before"] for r in result["tasks"])
    result["mean_ece_after"] = mean(r["ece_after"] for r in result["tasks"])
