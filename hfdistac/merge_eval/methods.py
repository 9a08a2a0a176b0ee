"""Stage 3 of a merge: one method applied to the task vectors, with the parameters the config gives it.

The merge functions themselves are pure (:mod:`hfdistac.merging`); what this stage adds is what they need
from the run: TIES's density, Consensus TA's per-task λ chosen on validation (TALL masks), SAMerging's
unlabeled batches and hyper-parameters. :func:`merge_with` returns τ_merged and the report fields of the
method (name, paper, parameters, and for SAMerging its learned coefficients).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from .config import MergeConfig
from .scoring import MergedModel

logger = logging.getLogger(__name__)

DEFAULT_TALL_LAMBDAS = (0.2, 0.3, 0.4, 0.5, 0.6)


def samerging_params(config: MergeConfig) -> dict[str, Any]:
    """The SAMerging hyper-parameters given by a :class:`MergeConfig` (unset ones keep the method's defaults)."""
    params: dict[str, Any] = {"objective": config.objective, "remerge_sam": not config.released_sam,
                              "temperature": config.temperature, "lr": config.lr,
                              "batches_per_task": config.batches_per_task, "batch_size": config.sam_batch_size}
    for name in ("steps", "sam_rho", "init"):
        if getattr(config, name) is not None:
            params[name] = getattr(config, name)
    return params


def unlabeled_batches(config: MergeConfig, base, tasks, train_data: Mapping[str, Any], *, images: int,
                      batch_size: int, method: str) -> list[list[torch.Tensor]]:
    """Per task, ``images`` *unlabeled* images (labels are not even read) in batches of ``batch_size``, from a
    seeded shuffle of the task's ``train_split``, preprocessed once and kept in memory as exact ``uint8`` crops
    (decode with ``PixelCodec(base.image_processor).decode``).

    In several processes (:mod:`hfdistac.distributed`) the batches are the same as in one process and every
    process keeps its own contiguous slice of each (:func:`~hfdistac.distributed.batch_slices`), so sums and
    means over the processes equal one process's; a batch with fewer images than processes is left out."""
    from ..distributed import world

    rank, count = world()
    out, size = [], 0
    for task in tasks:
        data = train_data[task.name]
        shuffled = dataclasses.replace(data, dataset=data.dataset.shuffle(seed=0))
        batches = _own_slices(config, base, shuffled, images, batch_size, rank, count)
        if not batches:
            raise InputError(f"task {task.name!r}: the split {data.split!r} of {data.spec.reference!r} has no images "
                             f"for {method}" + (f" (at least {count}, one per process)" if count > 1 else ""),
                             "set the task's train_split to a split with unlabeled images")
        size += sum(b.numel() * b.element_size() for b in batches)
        out.append(batches)
    logger.info("%s: cached %d tasks x <= %d images (%.1f MB)", method, len(out), images, size / 2**20)
    return out


def _own_slices(config: MergeConfig, base, data, images: int, batch_size: int, rank: int, count: int
                ) -> list[torch.Tensor]:
    """This process's slice of each of the first ``images`` rows' batches (all of them in one process)."""
    from ..distributed import batch_slices

    def load(d, limit, size):
        return [b["pixel_values"] for b in d.loader(base.image_processor, size, limit=limit,
                                                    num_workers=config.num_workers, with_labels=False, compact=True)]

    if count == 1:
        return load(data, images, batch_size)
    if data.num_examples is None:  # a stream: every process reads the batches and keeps its slices
        batches = [b for b in load(data, images, batch_size) if len(b) >= count]
        return [b[lo:hi] for b, (lo, hi) in zip(batches, batch_slices([len(b) for b in batches], rank, count),
                                                strict=True)]
    total = min(images, data.num_examples)
    sizes = [s for s in [batch_size] * (total // batch_size) + [total % batch_size] if s >= count]
    slices = batch_slices(sizes, rank, count)
    rows = [b * batch_size + i for b, (lo, hi) in enumerate(slices) for i in range(lo, hi)]
    if not rows:
        return []
    flat = torch.cat(load(dataclasses.replace(data, dataset=data.dataset.select(rows)), None, batch_size))
    return list(flat.split([hi - lo for lo, hi in slices]))


#: Images per forward pass of SAMerging on the CPU when ``--sam-tasks-per-pass`` is not given: at ViT-B/32,
#: 16 images of one task hold ~0.6 GB of activations for the backward pass, all 8 tasks' 128 images ~4.7 GB.
SAM_CPU_IMAGES_PER_PASS = 16


def sam_tasks_per_pass(config: MergeConfig, device: torch.device) -> int | None:
    """``--sam-tasks-per-pass``, or its default: every task in one pass on a GPU (``None``), on the CPU as many
    tasks as fit :data:`SAM_CPU_IMAGES_PER_PASS` images (at least one). The gradient is the same either way."""
    if config.sam_tasks_per_pass is not None or device.type != "cpu":
        return config.sam_tasks_per_pass
    return max(1, SAM_CPU_IMAGES_PER_PASS // config.sam_batch_size)


def samerging_data(config: MergeConfig, base, theta0: Mapping[str, torch.Tensor], tasks, train_data: Mapping[str, Any],
                   device: torch.device, module=None):
    """Build the :class:`~hfdistac.merging.samerging.SAMergingData` of a recipe: per task
    ``batches_per_task`` cached batches of ``sam_batch_size`` unlabeled images (:func:`unlabeled_batches`);
    ``module`` is lent to it to run the merged weights through (the evaluation model)."""
    from ..distributed import world
    from ..merging.samerging import SAMergingData, SAMergingTask

    count = world()[1]
    if config.sam_batch_size % count:
        raise InputError(f"--sam-batch-size {config.sam_batch_size} does not split evenly over {count} processes, so "
                         "the averaged gradient would weight the processes' images unequally",
                         f"choose a --sam-batch-size divisible by {count}")
    batches = unlabeled_batches(config, base, tasks, train_data, images=config.batches_per_task * config.sam_batch_size,
                                batch_size=config.sam_batch_size, method="SAMerging")
    sam_tasks = [SAMergingTask(task.name, task.head, b) for task, b in zip(tasks, batches, strict=True)]
    from ..data import PixelCodec

    return SAMergingData(base=theta0, vision_config=base.vision_config, tasks=sam_tasks, device=device,
                         mixed_precision=config.mixed_precision, progress=config.progress,
                         decode=PixelCodec(base.image_processor).decode,
                         tasks_per_pass=sam_tasks_per_pass(config, torch.device(device)), module=module)


#: Images per batch when the unlabeled images of RegMean's Gram step go through a tower (FusionBench's 32).
REGMEAN_BATCH = 32


def regmean_data(config: MergeConfig, base, merged: MergedModel, train_data: Mapping[str, Any]):
    """The :class:`~hfdistac.merging.regmean.RegMeanData` of a recipe (``regmean_examples`` images per task)."""
    from ..merging.regmean import RegMeanData

    batches = unlabeled_batches(config, base, merged.tasks, train_data, images=config.regmean_examples,
                                batch_size=REGMEAN_BATCH, method="RegMean")
    from ..data import PixelCodec

    return RegMeanData(base=merged.theta0, vision_config=base.vision_config, batches=batches, device=merged.device,
                       progress=config.progress, decode=PixelCodec(base.image_processor).decode,
                       module=merged.model)  # lent: evaluation reloads its weights afterwards


def _learned_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """Report fields of a method that learned coefficients (resolved params, loss history, timing, stats)."""
    coef = result["coefficients"]
    out = {"params": dict(result["params"]), "loss_history": list(result["loss_history"]),
           "time_s": result["time_s"], "teacher_time_s": result["teacher_time_s"],
           "optimize_time_s": result["optimize_time_s"],
           "coefficient_stats": {name: {"mean": float(coef[t].mean()), "min": float(coef[t].min()),
                                        "max": float(coef[t].max())}
                                 for t, name in enumerate(result["task_names"])}}
    if "peak_memory_bytes" in result:
        out["peak_memory_bytes"] = result["peak_memory_bytes"]
    return out


def _consensus_params(config: MergeConfig, tvs, merged: MergedModel | None) -> tuple[dict[str, Any], list | None]:
    """Consensus TA's k and per-task λ: chosen per task on validation when there is validation data."""
    from ..merging.consensus import select_tall_lambdas

    params: dict[str, Any] = {"k": min(config.consensus_k, len(tvs))}
    chosen = None
    if merged is not None and merged.tasks and merged.tasks[0].val is not None:

        def evaluate_task(t_index: int, tv: Mapping[str, torch.Tensor]) -> float:
            merged.set_weights(tv, 1.0)
            task = merged.tasks[t_index]
            return merged.accuracy(task, task.val)[0]

        chosen = select_tall_lambdas(tvs, evaluate_task, candidates=config.tall_lambdas or DEFAULT_TALL_LAMBDAS)
        params["tall_lambdas"] = tuple(chosen)
    elif config.tall_lambdas:
        params["tall_lambdas"] = tuple(config.tall_lambdas[:1]) * len(tvs)
    return params, chosen


def _data_free_params(method_name: str, config: MergeConfig) -> dict[str, Any]:
    """The parameters of Iso-CTS and WUDI given by the config (none for the other methods)."""
    from .config import WUDI_VARIANTS

    if method_name == "iso_cts":
        return {"common_space_fraction": config.common_space_fraction}
    if method_name == "wudi":
        return {"iterations": config.wudi_iterations, "lr": config.wudi_lr, **WUDI_VARIANTS[config.wudi_variant]}
    return {}


def merge_with(method_name: str, tvs, config: MergeConfig, merged: MergedModel | None, base,
               train_data: Mapping[str, Any], scratch: Path | None = None
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict | None]:
    """Merge the task vectors with one registered method.

    Args:
        method_name: A key of :data:`~hfdistac.merging.MERGE_METHODS`.
        tvs: The task vectors, in recipe order.
        config: The run's :class:`MergeConfig`.
        merged: The evaluation model (``None`` with ``--weights-only``), for Consensus TA's λ selection.
        base: The recipe's base model (SAMerging's θ₀ and processor).
        train_data: Train splits by task name (SAMerging's and RegMean's unlabeled images).
        scratch: The run's scratch folder (RegMean keeps its Gram matrices there).

    Returns:
        ``(τ_merged, report fields, learned result or None)``; the learned result (SAMerging) holds the
        coefficients written by :func:`~hfdistac.merge_eval.outputs.write_coefficients`.
    """
    from ..merging import MERGE_METHODS

    method = MERGE_METHODS[method_name]
    params: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    chosen_lambdas = None
    if method_name == "ties":
        params["density"] = config.density
    if method_name == "consensus":
        params, chosen_lambdas = _consensus_params(config, tvs, None if config.weights_only else merged)
    if method_name == "samerging":
        params.update(samerging_params(config))
        extra = {"data": samerging_data(config, base, merged.theta0, merged.tasks, train_data, merged.device,
                                        module=merged.model),
                 "result": {}}
    params.update(_data_free_params(method_name, config))
    if method_name in ("regmean", "regmean_plusplus"):
        params.update(reduce_non_diagonal_ratio=config.reduce_non_diagonal_ratio,
                      num_examples=config.regmean_examples)
        data = regmean_data(config, base, merged, train_data)
        if method_name == "regmean":
            from ..merging.regmean import compute_grams

            extra = {"grams": compute_grams(tvs, data, scratch)}  # the separate Gram step
            del data  # its cached images are not needed for the merge itself
        else:
            extra = {"data": data}
    if method.uses_device:
        extra["device"] = str(merged.device)
    if method_name == "wudi":
        extra["progress"] = config.progress
    from ..distributed import world

    processes = world()[1]
    call = dict(params)
    if method_name == "samerging" and processes > 1:  # each process holds its slice of every batch
        call["batch_size"] = params["batch_size"] // processes
    tau = method(tvs, **call, **extra)
    res: dict[str, Any] = {"method": method_name, "pretty_name": method.pretty_name, "paper_url": method.paper_url,
                           "params": {k: v for k, v in params.items() if not callable(v)}}
    learned = None
    if "result" in extra:
        learned = extra["result"]
        res.update(_learned_summary(learned))
        if processes > 1:
            res["params"].update(batch_size=params["batch_size"], batch_size_per_process=call["batch_size"])
    if chosen_lambdas is not None:
        res["tall_lambdas"] = chosen_lambdas
    return tau, res, learned
