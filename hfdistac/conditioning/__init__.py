"""DisTaC: pre-conditioning one task vector by knowledge distillation before merging.

Algorithm 1 of *DisTaC: Conditioning Task Vectors via Distillation for Robust Model Merging*
(arXiv 2508.01148, https://arxiv.org/abs/2508.01148), as specified in METHOD.md §1::

    θ_init  = θ₀ + κ·τ                     # the student starts here and is anchored here
    teacher = θ₀ + τ                       # the original fine-tuned model, frozen
    L(θ)    = T_tcr·T_stu · mean_batch KL( softmax(z_tcr / T_tcr) ‖ softmax(z_stu / T_stu) )
              + β · ‖θ − θ_init‖²
    τ′      = θ_K − θ₀                     # after K optimiser steps on unlabeled images of the task

* KL is the forward KL (teacher is the target), summed over classes and averaged over the batch.
* The anchor is the squared L2 distance (no ½) to the *rescaled* start θ_init, parameters paired by name.
* κ: norm mismatch → κ = mean_{s≠t}‖τ_s‖ / ‖τ_t‖ (or an explicit target norm, or an explicit κ); low
  confidence → κ = 1. Presets (T_tcr, T_stu): ``norm`` (10, 10), ``confidence`` (1, 10), ``both`` (1, 10).
* Defaults (METHOD.md §1): K = 500, lr 1e-5, AdamW with weight decay 0 (the paper text says "as fine-tuning",
  the released code forces 0), cosine schedule over K with 200 warm-up steps (scaled to 40 % of K when K < 500,
  see :func:`effective_warmup`), global batch 128 (gradient accumulation when it does not fit), β = 0.5,
  gradient clipping at global norm 1.0. Only the vision tower is trained; the zero-shot head is frozen.
* hfdistac extension, off by default (``max_norm_ratio``): after every optimiser step, project θ back onto
  the ball ‖θ − θ₀‖ ≤ R·κ‖τ‖ (scale the current task vector down when it is longer). The paper reports that the
  anchor alone keeps the norm near 1.1× the target; where it does not (the example suite ends at 1.3–1.7×,
  CONDITIONING.md), this keeps the promise of the norm preset explicitly. With R = 1.15 the ball never binds
  in the regime the paper reports. Off, the loop is exactly Algorithm 1.

The package's modules follow the data:

* :mod:`.config` — :class:`ConditionConfig` (flags, help texts, ranges; no torch).
* :mod:`.algorithm` — the pure math: loss, anchor, κ, schedule, batch order, norm and projection.
* :mod:`.inputs` — resolving models, data, head inputs and norms before anything is written.
* :mod:`.images` — preprocessed images by example index, and logits sharded over processes.
* :mod:`.loop` — :func:`run_condition`: the accelerate loop (prepare, accumulate, backward, clip, step).
* :mod:`.checkpointing` — resumable safetensors + JSON checkpoints.
* :mod:`.outputs` — report, output directory and model card.

Implementation notes:

* For a finite, unaugmented dataset the teacher's logits are computed once (each process a strided shard,
  gathered in index order) and looked up by example index afterwards: no teacher forward pass per step.
  Preprocessed images are kept in memory as well when they fit (``cache_images_gb``).
* The training split is read as a map-style (memory-mapped Arrow) dataset, because random access by index
  is what makes the global-batch order, the teacher-logit cache and exact resumption possible. A Hub dataset
  (or any with ``num_images``) is streamed at its pinned commit through a seeded shuffle buffer and its first
  N images are stored once as such a file (:func:`~hfdistac.data.sample_stream`): only the shards those
  images need are fetched. Every process of a run reads the same sample (the first process writes it, under a
  lock; the others reuse it), so the batch order is the same as for a local copy of those images.
* Checkpoints (``checkpoint_every``) are safetensors + JSON only (student weights, AdamW moments by parameter
  name, scheduler counters, per-process torch RNG state, step, history): nothing is pickled anywhere.
"""

import importlib

# Names re-exported lazily (PEP 562), so that importing ``hfdistac.conditioning.config`` (the CLI does, to build
# its parser) does not import torch.
_EXPORTS = {
    "anchor_penalty": "algorithm", "compute_kappa": "algorithm", "cosine_with_warmup": "algorithm",
    "distillation_loss": "algorithm", "effective_warmup": "algorithm", "global_batch_indices": "algorithm",
    "project_to_ball": "algorithm", "task_vector_norm": "algorithm",
    "CHECKPOINT_FORMAT": "checkpointing", "latest_checkpoint": "checkpointing", "load_checkpoint": "checkpointing",
    "save_checkpoint": "checkpointing",
    "MIXED_PRECISION_CHOICES": "config", "PAPER_URL": "config", "PRESET_CHOICES": "config",
    "ConditionConfig": "config",
    "run_condition": "loop",
    "command_line": "outputs",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CHECKPOINT_FORMAT",
    "MIXED_PRECISION_CHOICES",
    "PAPER_URL",
    "PRESET_CHOICES",
    "ConditionConfig",
    "anchor_penalty",
    "command_line",
    "compute_kappa",
    "cosine_with_warmup",
    "distillation_loss",
    "effective_warmup",
    "global_batch_indices",
    "latest_checkpoint",
    "load_checkpoint",
    "project_to_ball",
    "run_condition",
    "save_checkpoint",
    "task_vector_norm",
]
