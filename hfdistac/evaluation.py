"""Evaluating a vision tower with a frozen zero-shot head: logits, accuracy, entropy, ECE.

The one place for evaluation helpers shared by the commands: heads (:func:`head_for_task`), devices
(:func:`resolve_device`), logits (:func:`predict`), metrics (:func:`evaluate_model`,
:func:`metrics_with_reliability`) and splits preprocessed once and evaluated many times
(:class:`CachedSplit`, :func:`split_accuracy`). ``hfdistac evaluate``, ``inspect``, ``condition`` and ``merge``
all go through them, so every number in every report is computed the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path

import torch

from .data import ImageData
from .errors import DataError
from .heads import Head, build_head, load_head, save_head
from .hub.resolve import resolving_once
from .metrics import classification_metrics
from .templates_data import fix_class_names, templates_for

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """hfdistac's cache folder inside the standard HF home (honours ``HF_HOME``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hfdistac"


def head_for_task(base, data: ImageData, *, templates: list[str] | None = None, cache_dir: Path | None = None,
                  use_cache: bool = True) -> Head:
    """The frozen zero-shot head of a task, cached on disk by base revision, dataset, classes and templates.

    Args:
        base: The :class:`~hfdistac.checkpoints.BaseModel`.
        data: The task's data (class names come from its ``ClassLabel``).
        templates: Prompt templates; default: the task's standard ones (METHOD.md §0) or the generic one.
        cache_dir: Where heads are cached (default ``$HF_HOME/hfdistac``).
        use_cache: Read/write the cache.

    Raises:
        DataError: when the dataset has no ``ClassLabel`` column to name the classes.
    """
    if data.class_names is None:
        raise DataError(f"dataset {data.spec.reference!r} has no ClassLabel column, so class names are unknown",
                        "zero-shot heads need class names: use a dataset with a ClassLabel label column "
                        "(or pass --label-column)")
    names = fix_class_names(data.spec.reference, data.class_names)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"dataset {data.spec.reference!r} names several classes alike ({', '.join(map(repr, repeated[:5]))}): "
                        "a zero-shot head cannot tell them apart", "give each class a distinct name (recipe "
                        "class_names, --class-names FILE, or the dataset's ClassLabel)")
    templates = list(templates) if templates else templates_for(data.spec.reference)
    payload = json.dumps([base.resolved.revision, data.spec.reference, data.spec.config, names, templates])
    key = hashlib.sha256(payload.encode()).hexdigest()[:24]
    path = (cache_dir or default_cache_dir()) / "heads" / f"{key}.safetensors"
    if use_cache and path.is_file():
        try:
            return load_head(path)
        except Exception as e:  # a corrupt cache entry is rebuilt, never fatal
            logger.warning("ignoring unreadable cached head %s: %s", path, e)
    head = build_head(base.clip, base.tokenizer, names, templates)
    if use_cache:
        try:
            save_head(head, path)
        except OSError as e:
            logger.warning("could not cache head at %s: %s", path, e)
    return head


def check_head_matches(head: Head, data: ImageData) -> None:
    """A label column whose class count does not match the head is an error, not silent garbage."""
    if data.class_names is not None and len(data.class_names) != head.num_classes:
        raise DataError(
            f"dataset {data.spec.reference!r} has {len(data.class_names)} classes but the head has "
            f"{head.num_classes}", "use the dataset the model was fine-tuned on")


def autocast_context(device: torch.device, mixed_precision: str | None):
    """bf16/fp16 autocast on the given device, or a no-op."""
    if mixed_precision in (None, "no", "fp32"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def predict(vision_model, head: Head, loader, *, device: torch.device | str = "cpu",
            mixed_precision: str | None = None, progress: bool = False, desc: str = "evaluating",
            allow_empty: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (and labels, when present) of a vision tower + head over a DataLoader of batches.

    Args:
        allow_empty: No batches give ``[0, C]`` logits and ``[0]`` labels (one process's empty share of a small
            split) instead of an error.

    Returns:
        ``(logits [N, C] float32 on CPU, labels [N] or None)``.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    was_training = vision_model.training
    vision_model.eval().to(device)
    head = head.to(device)
    all_logits, all_labels = [], []
    seen = 0
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, unit="batch"):
        if "labels" in batch and len(batch["labels"]):
            labels = batch["labels"]
            bad = ((labels < 0) | (labels >= head.num_classes)).nonzero()
            if len(bad):
                i = int(bad[0])
                raise DataError(f"the label column has label {int(labels[i])} (row {seen + i}) but the head has "
                                f"{head.num_classes} classes (0..{head.num_classes - 1})",
                                "use the dataset the head was built for, or fix its label column (--label-column)")
        seen += len(batch["pixel_values"])
        with autocast_context(device, mixed_precision):
            pooled = vision_model(pixel_values=batch["pixel_values"].to(device)).pooler_output
        all_logits.append(head.logits(pooled.float()).float().cpu())
        if "labels" in batch:
            all_labels.append(batch["labels"])
    vision_model.train(was_training)
    if not all_logits:
        if allow_empty:
            return torch.zeros((0, head.num_classes)), torch.zeros((0,), dtype=torch.long)
        raise DataError("no examples to evaluate", "check the dataset split and --limit")
    labels = torch.cat(all_labels) if all_labels else None
    return torch.cat(all_logits), labels


def evaluate_model(vision_model, head: Head, data: ImageData, processor, *, batch_size: int = 64,
                   limit: int | None = None, num_workers: int = 0, device: torch.device | str = "cpu",
                   mixed_precision: str | None = None, progress: bool = False, return_logits: bool = False
                   ) -> dict:
    """Accuracy (when labeled), mean entropy, mean max probability and ECE of a model on a split.

    Returns:
        :func:`hfdistac.metrics.classification_metrics` output; with ``return_logits`` also ``"logits"`` and
        ``"labels"`` tensors.
    """
    check_head_matches(head, data)
    loader = data.loader(processor, batch_size, limit=limit, num_workers=num_workers)
    logits, labels = predict(vision_model, head, loader, device=device, mixed_precision=mixed_precision,
                             progress=progress, desc=f"eval {data.spec.name}/{data.split}")
    out = classification_metrics(logits, labels)
    if return_logits:
        out["logits"], out["labels"] = logits, labels
    return out


def metrics_with_reliability(logits: torch.Tensor, labels: torch.Tensor | None) -> dict:
    """:func:`~hfdistac.metrics.classification_metrics`, plus the reliability-diagram bins when labeled."""
    from .metrics import reliability_bins

    out = classification_metrics(logits, labels)
    if labels is not None:
        out["reliability"] = reliability_bins(logits, labels)
    return out


class CachedSplit:
    """A split's preprocessed batches, kept in memory after the first pass when they fit a shared budget.

    ``merge`` evaluates every α of every method on the same validation and test images: preprocessing them
    once saves most of the time. The budget (bytes) is a one-element list shared by every split of a run, so
    the splits together stay under it; a split that does not fit is preprocessed again on every pass. Images
    are cached as exact ``uint8`` crops (:class:`~hfdistac.data.PixelCodec`).

    In several processes (:mod:`hfdistac.distributed`) each process holds and evaluates only its share of the
    batches (every n-th); :func:`split_accuracy` gathers the logits back into row order.

    Args:
        data: The :class:`~hfdistac.data.ImageData` split.
        processor: The base model's image processor.
        batch_size: Images per batch.
        limit: At most this many images (``None``: all).
        num_workers: DataLoader workers preprocessing the images.
        budget: ``[bytes left]``, shared and decremented by every split that caches.
    """

    def __init__(self, data: ImageData, processor, batch_size: int, limit: int | None, num_workers: int,
                 budget: list[int]):
        self.data, self.processor = data, processor
        from .distributed import world

        self.batch_size, self.limit, self.num_workers = batch_size, limit, num_workers
        self._cache: list[dict] | None = None
        self._budget = budget
        self.part = world()

    def batches(self):
        """The batches ``{"pixel_values", "labels"?}`` of the split (an iterable; one decoded batch at a time).

        Cached batches are kept as exact ``uint8`` crops (:class:`~hfdistac.data.PixelCodec`, a quarter of the
        memory of float pixels) and decoded as they are read.
        """
        from .data import PixelCodec

        codec = PixelCodec(self.processor)
        if self._cache is not None:
            return ({**b, "pixel_values": codec.decode(b["pixel_values"])} for b in self._cache)
        return self._fill(codec)

    def _fill(self, codec):
        loader = self.data.loader(self.processor, self.batch_size, limit=self.limit, num_workers=self.num_workers,
                                  compact=codec.compact, part=self.part, with_rows=True)
        out, size, keep = [], 0, True
        for b in loader:
            size += b["pixel_values"].numel() * b["pixel_values"].element_size()
            keep = keep and size <= self._budget[0]
            if keep:
                out.append(b)
            yield {**b, "pixel_values": codec.decode(b["pixel_values"])}
        if keep:
            self._budget[0] -= size
            self._cache = out


def split_accuracy(model, head: Head, split: CachedSplit, device, mixed_precision: str | None
                   ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """``(accuracy %, logits, labels)`` of a vision tower + head on a cached split, in the split's row order.

    In several processes each runs its own batches and the logits are gathered, so every process returns the
    whole split's numbers (:func:`~hfdistac.distributed.gather_rows`).

    Raises:
        InputError: when the split has no labels.
    """
    from .distributed import gather_rows
    from .errors import InputError
    from .metrics import top1_accuracy

    rows: list[torch.Tensor] = []

    def batches():
        for b in split.batches():
            rows.append(b["rows"])
            yield b

    logits, labels = predict(model, head, batches(), device=device, mixed_precision=mixed_precision,
                             allow_empty=split.part[1] > 1)
    if labels is not None:
        logits, labels = gather_rows([logits, labels], torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long))
        if not len(labels):
            raise DataError("no examples to evaluate", "check the dataset split and --limit")
    if labels is None:
        raise InputError(f"dataset {split.data.spec.reference!r} has no labels; accuracy needs a labeled split")
    return top1_accuracy(logits, labels), logits, labels


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; anything else as given (validated)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        from .errors import InputError

        raise InputError(f"unknown device {device!r}", "use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        from .errors import InputError

        raise InputError(f"device {device!r} requested but CUDA is not available", "use --device cpu")
    return dev


@resolving_once()
def run_evaluate(config) -> dict:
    """Evaluate a model with its task head (library form of ``hfdistac evaluate``).

    Args:
        config: An :class:`~hfdistac.configs.EvaluateConfig`.

    Returns:
        ``{"model", "revision", "base", "dataset", "split", "accuracy"?, "entropy", "max_prob", "ece"?, "n"}``,
        also written to ``config.json`` when set.
    """
    from .runtime import apply_thread_policy

    apply_thread_policy()  # the command line's thread default, once per process
    from .checkpoints import build_vision_model, check_against_base, load_base, load_finetuned
    from .data import DatasetSpec, load_image_data, sample_stream
    from .errors import InputError
    from .heads import load_templates_file
    from .hub import card_datasets, infer_base, local_paths_note
    from .outputs import check_writable

    if config.json:
        check_writable(config.json, "--json file")
    ft = load_finetuned(config.model)
    base_ref = infer_base(ft.card, config.model, config.base)
    data_ref = config.data or next(iter(card_datasets(ft.card)), None)
    if data_ref is None:
        raise InputError(f"no --data given and the card of {config.model!r} names no dataset"
                         + local_paths_note(ft.card, "datasets"),
                         "pass --data with a Hub dataset id or a local dataset path")
    base = load_base(base_ref)
    check_against_base(base, ft)
    spec = DatasetSpec(data_ref, config.dataset_config, config.image_column, config.label_column)
    if not spec.is_local and config.limit:
        # the rows a Hub dataset's stream gives for evaluation are stored once (first --limit rows, at the pinned
        # commit) and read from there on: the same command then works offline (HF_HUB_OFFLINE=1)
        data = sample_stream(spec, config.split, config.limit, default_cache_dir() / "streams", shuffle=False,
                             progress=config.progress)
    else:
        data = load_image_data(spec, config.split)
    templates = load_templates_file(config.templates) if config.templates else None
    head = head_for_task(base, data, templates=templates)
    model = build_vision_model(ft.config, ft.weights)
    m = evaluate_model(model, head, data, base.image_processor, batch_size=config.batch_size, limit=config.limit,
                       num_workers=config.num_workers, device=resolve_device(config.device),
                       progress=config.progress)
    result = {"model": config.model, "revision": ft.resolved.revision, "base": base_ref,
              "base_revision": base.resolved.revision, "dataset": data_ref, "split": config.split, **m}
    if config.json:
        from .outputs import write_json

        write_json(config.json, result)
    return result
