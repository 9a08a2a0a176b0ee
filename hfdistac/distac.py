r"""DisTaC: pre-conditioning one task vector by knowledge distillation before merging.

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

Implementation (one accelerate loop, :func:`run_condition`):

* Every optimiser step reads one *global* batch of example indices from a seeded stream of per-epoch
  permutations (:func:`global_batch_indices`); process ``r`` of ``W`` reads its own contiguous ``1/W`` slice
  of it, in micro-batches. So one process and ``W`` processes see exactly the same global batch at the same
  global batch size (results agree up to float summation order), and the data position after a resume is
  simply the step number.
* For a finite, unaugmented dataset the teacher's logits are computed once (each process a strided shard,
  gathered in index order) and looked up by example index afterwards: no teacher forward pass per step.
  Preprocessed images are kept in memory as well when they fit (``cache_images_gb``).
* The training split is read as a map-style (memory-mapped Arrow) dataset — Hub datasets are downloaded
  once rather than streamed — because random access by index is what makes the global-batch order, the
  teacher-logit cache and exact resumption possible.
* Checkpoints (``checkpoint_every``) are safetensors + JSON only (student weights, AdamW moments by parameter
  name, scheduler counters, per-process torch RNG state, step, history): nothing is pickled anywhere.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import shutil
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .configs import help_field as _h
from .errors import DataError, InputError, TrainingError
from .metrics import entropy as prediction_entropy

logger = logging.getLogger(__name__)

PAPER_URL = "https://arxiv.org/abs/2508.01148"
PRESET_CHOICES = ("norm", "confidence", "both", "auto")
MIXED_PRECISION_CHOICES = ("no", "bf16", "fp16")
DEFAULT_WARMUP = 200
WARMUP_FRACTION = 0.4  # 200 of the paper's 500 steps
CHECKPOINT_FORMAT = "hfdistac.distac_checkpoint.v1"
_TRAINING_KEYS = ("kappa", "teacher_temperature", "student_temperature", "beta", "max_norm_ratio", "steps", "lr",
                  "weight_decay", "warmup_steps", "batch_size", "max_grad_norm", "seed", "train_split", "train_limit")


# ------------------------------------------------------------------------------------------------ config
@dataclass
class ConditionConfig:
    """``hfdistac condition``: pre-condition one task vector with DisTaC (Algorithm 1, arXiv 2508.01148)."""

    model: str | None = field(default=None, metadata=_h(
        "fine-tuned CLIP vision tower to condition (Hub repo[@revision] or local directory); or use --recipe/--task",
        positional=True, metavar="MODEL", nargs="?"))
    base: str | None = field(default=None, metadata=_h(
        "pretrained CLIP (Hub id or path); default: the model card's base_model (or the recipe's base)"))
    data: str | None = field(default=None, metadata=_h(
        "unlabeled images of the model's task (Hub dataset id or local path); default: the model card's dataset"))
    dataset_config: str | None = field(default=None, metadata=_h("dataset configuration name (e.g. cropped_digits)"))
    recipe: str | None = field(default=None, metadata=_h(
        "recipe YAML: with --task it gives model, base and dataset, and --reference defaults to the other tasks",
        metavar="FILE"))
    task: str | None = field(default=None, metadata=_h("name of the recipe task to condition (with --recipe)"))
    kappa: float | None = field(default=None, metadata=_h(
        "scale κ of the starting point θ₀ + κτ (exclusive with --target-norm and --reference)"))
    target_norm: float | None = field(default=None, metadata=_h("rescale τ to this global L2 norm: κ = target / ‖τ‖"))
    reference: list[str] | None = field(default=None, metadata=_h(
        "other fine-tuned models of the merge: κ = mean of their task-vector norms / ‖τ‖ (the paper's rule)",
        metavar="MODEL"))
    preset: str | None = field(default=None, metadata=_h(
        "norm: temperatures (10, 10), κ from --kappa/--target-norm/--reference; confidence: (1, 10) with κ = 1; "
        "both: (1, 10) with κ; auto: diagnose like `hfdistac inspect` and pick one. Default: norm when a κ "
        "rule is given, else confidence", choices=PRESET_CHOICES))
    teacher_temperature: float | None = field(default=None, metadata=_h("T_teacher (default: from --preset)"))
    student_temperature: float | None = field(default=None, metadata=_h("T_student (default: from --preset)"))
    beta: float = field(default=0.5, metadata=_h("weight β of the anchor term β·‖θ − θ_init‖²"))
    max_norm_ratio: float | None = field(default=None, metadata=_h(
        "hfdistac extension, not in the paper: after every step, scale the task vector back to at most R x the "
        "target norm (projection onto a ball around θ₀), e.g. 1.15. Default (or 0): off, Algorithm 1 exactly",
        metavar="R"))
    steps: int = field(default=500, metadata=_h("optimiser steps K"))
    lr: float = field(default=1e-5, metadata=_h("peak AdamW learning rate"))
    weight_decay: float = field(default=0.0, metadata=_h(
        "AdamW weight decay (released code: 0; the paper's text implies the fine-tuning value 0.1)"))
    warmup_steps: int | None = field(default=None, metadata=_h(
        "linear warm-up steps of the cosine schedule (default: 200, or 40%% of --steps when that is smaller)"))
    batch_size: int = field(default=128, metadata=_h("global batch size (images per optimiser step, all processes)"))
    micro_batch_size: int | None = field(default=None, metadata=_h(
        "images per forward pass and process; gradient accumulation = batch size / (micro batch x processes) "
        "(default: no accumulation)"))
    max_grad_norm: float = field(default=1.0, metadata=_h("clip gradients to this global L2 norm (0 = no clipping)"))
    seed: int = field(default=0, metadata=_h("seed of the batch order (and any dropout)"))
    mixed_precision: str = field(default="no", metadata=_h(
        "autocast precision of the forward passes: no, bf16, fp16 (fp16 needs a GPU)",
        choices=MIXED_PRECISION_CHOICES))
    cache_teacher_logits: bool | None = field(default=None, metadata=_h(
        "compute the teacher's logits once per image and reuse them instead of a teacher forward pass per step "
        "(the training data is a finite set, never augmented); default: on when the run reads at least as many "
        "images as the set holds (steps x batch size >= images)"))
    cache_images_gb: float = field(default=2.0, metadata=_h(
        "keep preprocessed training images in memory (per process) when they fit in this many GiB (0 = never)"))
    train_split: str = field(default="train", metadata=_h("split of --data to distil on (labels are never used)"))
    train_limit: int | None = field(default=None, metadata=_h("distil on at most the first N images of the split"))
    eval_split: str = field(default="test", metadata=_h(
        "split for the before/after accuracy, entropy and ECE ('none' to skip evaluation)"))
    eval_limit: int | None = field(default=512, metadata=_h("evaluate on at most this many images (0 = all)"))
    eval_batch_size: int = field(default=64, metadata=_h("images per evaluation (and teacher-caching) batch"))
    templates: str | None = field(default=None, metadata=_h(
        "prompt-template file (one template per line containing {c}) overriding the task's standard ones",
        metavar="FILE"))
    num_workers: int = field(default=0, metadata=_h(
        "DataLoader worker processes decoding images for evaluation and teacher caching (training images are "
        "then read from memory)"))
    device: str = field(default="auto", metadata=_h("auto (cuda if available), cpu or cuda"))
    log_every: int = field(default=10, metadata=_h("record training metrics every N steps"))
    report_to: str = field(default="none", metadata=_h(
        "accelerate trackers to log to: none, all, tensorboard, wandb, ... (comma-separated)"))
    checkpoint_every: int = field(default=0, metadata=_h(
        "save a resumable checkpoint every N steps into --checkpoint-dir (0 = never)"))
    checkpoint_dir: str | None = field(default=None, metadata=_h(
        "where checkpoints go (default: OUTPUT.checkpoints beside the output; removed after success)", metavar="DIR"))
    resume: bool = field(default=False, metadata=_h("continue from the latest checkpoint in --checkpoint-dir"))
    output: str | None = field(default=None, metadata=_h(
        "output directory, written atomically (default: ./<model name>-distac)", metavar="DIR"))
    overwrite: bool = field(default=False, metadata=_h("replace an existing --output directory"))
    push_to: str | None = field(default=None, metadata=_h("also publish the output to this Hub model repo",
                                                          metavar="REPO_ID"))
    private: bool = field(default=False, metadata=_h("with --push-to: create the repo private"))
    revision: str | None = field(default=None, metadata=_h("with --push-to: branch to commit to"))
    create_pr: bool = field(default=False, metadata=_h("with --push-to: open a pull request instead of committing"))
    commit_message: str | None = field(default=None, metadata=_h("with --push-to: commit title"))
    progress: bool = field(default=True, metadata=_h("show a progress bar (main process only)"))

    def __post_init__(self) -> None:
        if self.reference is not None and isinstance(self.reference, str):
            self.reference = [self.reference]
        if self.recipe and self.model:
            raise InputError("give either MODEL or --recipe/--task, not both",
                             "with --recipe, choose the model with --task NAME")
        if bool(self.recipe) != bool(self.task):
            raise InputError("--recipe and --task go together", "e.g. --recipe suite/recipes/norm-mismatch.yaml --task colour")
        if not self.model and not self.recipe:
            raise InputError("no model given", "pass a fine-tuned model (Hub id or directory), or --recipe and --task")
        rules = [n for n, v in (("--kappa", self.kappa), ("--target-norm", self.target_norm),
                                ("--reference", self.reference)) if v is not None]
        if len(rules) > 1:
            raise InputError(f"{' and '.join(rules)} are mutually exclusive", "choose one way to set κ")
        if self.kappa is not None and not (math.isfinite(self.kappa) and self.kappa > 0):
            raise InputError(f"--kappa must be > 0, got {self.kappa}", "κ scales the task vector: 0 < κ (κ < 1 shrinks)")
        if self.target_norm is not None and not (math.isfinite(self.target_norm) and self.target_norm > 0):
            raise InputError(f"--target-norm must be > 0, got {self.target_norm}")
        if self.reference is not None and not self.reference:
            raise InputError("--reference needs at least one model")
        if self.preset is not None and self.preset not in PRESET_CHOICES:
            raise InputError(f"unknown --preset {self.preset!r}", f"choose one of {', '.join(PRESET_CHOICES)}")
        if self.preset in ("norm", "both") and not rules and not self.recipe:
            raise InputError(f"--preset {self.preset} needs a target: --kappa, --target-norm or --reference",
                             "e.g. --reference the other fine-tuned models of the merge (κ = their mean norm / ‖τ‖)")
        if self.preset == "confidence" and (self.kappa is not None or self.target_norm is not None):
            raise InputError("--preset confidence keeps κ = 1; --kappa/--target-norm need --preset norm or both",
                             "use --preset both to rescale and sharpen")
        if self.preset == "auto" and self.kappa is not None:
            raise InputError("--preset auto chooses κ itself; --kappa cannot be combined with it",
                             "give --target-norm or --reference (the other tasks' norms), or choose a preset")
        for name, t in (("--teacher-temperature", self.teacher_temperature),
                        ("--student-temperature", self.student_temperature)):
            if t is not None and not (math.isfinite(t) and t > 0):
                raise InputError(f"{name} must be > 0, got {t}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise InputError(f"--beta must be >= 0, got {self.beta}")
        if self.max_norm_ratio == 0:
            self.max_norm_ratio = None
        if self.max_norm_ratio is not None and not (math.isfinite(self.max_norm_ratio) and self.max_norm_ratio >= 1):
            raise InputError(f"--max-norm-ratio must be >= 1 (or 0 for off), got {self.max_norm_ratio}",
                             "R bounds ‖τ′‖ by R x the target norm, and the student starts at the target: "
                             "e.g. --max-norm-ratio 1.15")
        if self.steps < 1:
            raise InputError(f"--steps must be >= 1, got {self.steps}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"--lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise InputError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.warmup_steps is not None and not 0 <= self.warmup_steps <= self.steps:
            raise InputError(f"--warmup-steps must be in [0, --steps={self.steps}], got {self.warmup_steps}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.micro_batch_size is not None:
            if not 1 <= self.micro_batch_size <= self.batch_size:
                raise InputError(f"--micro-batch-size must be in [1, --batch-size={self.batch_size}], "
                                 f"got {self.micro_batch_size}")
            if self.batch_size % self.micro_batch_size:
                raise InputError(f"--batch-size {self.batch_size} is not a multiple of --micro-batch-size "
                                 f"{self.micro_batch_size}", "the global batch is split into equal micro-batches")
        if self.max_grad_norm < 0:
            raise InputError(f"--max-grad-norm must be >= 0 (0 = no clipping), got {self.max_grad_norm}")
        if self.mixed_precision not in MIXED_PRECISION_CHOICES:
            raise InputError(f"unknown --mixed-precision {self.mixed_precision!r}",
                             f"choose one of {', '.join(MIXED_PRECISION_CHOICES)}")
        if self.cache_images_gb < 0:
            raise InputError(f"--cache-images-gb must be >= 0, got {self.cache_images_gb}")
        if self.train_limit is not None and self.train_limit < 1:
            raise InputError(f"--train-limit must be >= 1, got {self.train_limit}")
        if self.eval_limit is not None and self.eval_limit < 0:
            raise InputError(f"--eval-limit must be >= 0 (0 = all), got {self.eval_limit}")
        if self.eval_limit == 0:
            self.eval_limit = None
        if self.eval_batch_size < 1:
            raise InputError(f"--eval-batch-size must be >= 1, got {self.eval_batch_size}")
        if self.num_workers < 0:
            raise InputError(f"--num-workers must be >= 0, got {self.num_workers}")
        if self.log_every < 1:
            raise InputError(f"--log-every must be >= 1, got {self.log_every}")
        if self.checkpoint_every < 0:
            raise InputError(f"--checkpoint-every must be >= 0 (0 = never), got {self.checkpoint_every}")
        if self.preset == "auto" and self.eval_split.lower() == "none":
            raise InputError("--preset auto measures the teacher's entropy on --eval-split, which is 'none'",
                             "give an evaluation split or choose a preset")
        if (self.private or self.revision or self.create_pr or self.commit_message) and not self.push_to:
            raise InputError("--private/--revision/--create-pr/--commit-message only apply with --push-to")

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------ pure math
def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t_teacher: float,
                      t_student: float) -> torch.Tensor:
    """T_tcr·T_stu · mean over the batch of KL(softmax(z_tcr/T_tcr) ‖ softmax(z_stu/T_stu)).

    Forward KL: the teacher's tempered distribution is the target; summed over classes, averaged over the
    batch; computed in float32 whatever the input dtype.

    Args:
        student_logits: ``[B, C]``.
        teacher_logits: ``[B, C]`` (no gradient needed).
        t_teacher: Teacher temperature T_tcr.
        t_student: Student temperature T_stu.

    Returns:
        A scalar tensor.
    """
    log_q = F.log_softmax(student_logits.float() / t_student, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / t_teacher, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    return t_teacher * t_student * kl.mean()


def anchor_penalty(params_by_name: Mapping[str, torch.Tensor], anchor_by_name: Mapping[str, torch.Tensor]
                   ) -> torch.Tensor:
    """‖θ − θ_init‖²: squared L2 distance (no ½) between parameters and their anchors, paired by name.

    Args:
        params_by_name: The trainable parameters θ.
        anchor_by_name: The anchor θ_init, same names and shapes.

    Raises:
        ValueError: when the names differ (a programming error: never paired by position).
    """
    if set(params_by_name) != set(anchor_by_name):
        only_p = sorted(set(params_by_name) - set(anchor_by_name))[:3]
        only_a = sorted(set(anchor_by_name) - set(params_by_name))[:3]
        raise ValueError(f"parameters and anchor differ: only in parameters {only_p}, only in anchor {only_a}")
    total = None
    for name, p in params_by_name.items():
        term = (p - anchor_by_name[name].to(p.dtype)).pow(2).sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


@torch.no_grad()
def project_to_ball(params_by_name: Mapping[str, torch.Tensor], center_by_name: Mapping[str, torch.Tensor],
                    radius: float) -> float | None:
    """Scale θ − θ₀ in place so that ‖θ − θ₀‖ ≤ ``radius`` (the ``max_norm_ratio`` extension).

    Args:
        params_by_name: The student's parameters θ (modified in place).
        center_by_name: θ₀, same names and shapes.
        radius: The largest allowed global L2 norm of θ − θ₀.

    Returns:
        The norm before projection when it exceeded ``radius`` (θ was scaled back), else ``None``.
    """
    norm = task_vector_norm(params_by_name, center_by_name)
    if norm <= radius:
        return None
    factor = radius / norm
    for n, p in params_by_name.items():
        c = center_by_name[n].to(p.dtype)
        p.copy_(c + (p - c) * factor)
    return norm


def compute_kappa(norm: float, *, kappa: float | None = None, target_norm: float | None = None,
                  reference_norms: Sequence[float] | None = None) -> tuple[float, float]:
    """The scale κ of the starting point θ₀ + κτ and the norm it gives (METHOD.md §1).

    At most one rule may be given: an explicit κ; a target norm (κ = target / ‖τ‖); or the norms of the other
    tasks' vectors (κ = mean_{s≠t}‖τ_s‖ / ‖τ_t‖, the paper's rule). None of them: κ = 1 (low confidence).

    Args:
        norm: ‖τ‖, the global L2 norm of the task vector.
        kappa: Explicit κ.
        target_norm: Explicit target norm.
        reference_norms: Norms of the other task vectors.

    Returns:
        ``(κ, κ·‖τ‖)``.

    Raises:
        InputError: for several rules, κ or target ≤ 0, an empty reference list, or a zero task vector.
    """
    given = [n for n, v in (("kappa", kappa), ("target_norm", target_norm), ("reference_norms", reference_norms))
             if v is not None]
    if len(given) > 1:
        raise InputError(f"{' and '.join(given)} are mutually exclusive", "choose one way to set κ")
    if not (math.isfinite(norm) and norm > 0):
        raise InputError(f"the task vector's norm is {norm}: the model equals its base (or is not finite)",
                         "check that MODEL is fine-tuned from --base")
    if kappa is not None:
        if not (math.isfinite(kappa) and kappa > 0):
            raise InputError(f"κ must be > 0, got {kappa}")
        return float(kappa), float(kappa) * norm
    if target_norm is not None:
        if not (math.isfinite(target_norm) and target_norm > 0):
            raise InputError(f"target norm must be > 0, got {target_norm}")
        return target_norm / norm, float(target_norm)
    if reference_norms is not None:
        if len(reference_norms) == 0:
            raise InputError("no reference task vectors to take the mean norm of")
        target = float(statistics.fmean(reference_norms))
        return target / norm, target
    return 1.0, norm


def effective_warmup(steps: int, warmup_steps: int | None = None) -> int:
    """Warm-up steps of the cosine schedule.

    An explicit value is used as given. The default is the paper's 200 warm-up steps of 500; for shorter runs
    it is scaled to the same 40 % of ``steps`` (200 warm-up steps of a 50-step run would never reach the peak
    learning rate).
    """
    if warmup_steps is not None:
        return int(warmup_steps)
    return min(DEFAULT_WARMUP, int(WARMUP_FRACTION * steps))


def cosine_with_warmup(step: int, *, total: int, warmup: int) -> float:
    """Learning-rate multiplier of optimiser step ``step`` (0-based): linear warm-up, then cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> tuple[int, ...]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(num_examples, generator=g).tolist())


def global_batch_indices(num_examples: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Example indices of optimiser step ``step`` (0-based), for all processes together.

    The index stream is the concatenation of seeded per-epoch permutations of ``range(num_examples)``; step
    ``k`` takes its items ``[k·B, (k+1)·B)``. It depends on neither the number of processes nor the
    micro-batch size, so runs with different layouts see the same data, and a resumed run finds its place
    from the step number alone.
    """
    out: list[int] = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos + len(out), num_examples)
        perm = _epoch_permutation(num_examples, seed, epoch)
        out.extend(perm[offset:offset + batch_size - len(out)])
    return out


def task_vector_norm(params_by_name: Mapping[str, torch.Tensor], base_by_name: Mapping[str, torch.Tensor]) -> float:
    """‖θ − θ₀‖ over parameters paired by name (float64, on the parameters' device, one host sync)."""
    squares = [(p.detach().double() - base_by_name[name].to(p.device, torch.float64)).pow(2).sum()
               for name, p in params_by_name.items()]
    return math.sqrt(float(torch.stack(squares).sum())) if squares else 0.0


# ------------------------------------------------------------------------------------------------ data
class _ImageStore:
    """Preprocessed images of a map-style dataset by example index, kept in memory after first use if they fit.

    Args:
        dataset: A ``datasets.Dataset``.
        processor: The base model's image processor.
        image_column: The image column.
        budget_bytes: Keep every preprocessed image when all of them fit in this many bytes.
    """

    def __init__(self, dataset, processor, image_column: str, budget_bytes: float):
        self.images = dataset.select_columns([image_column])
        self.image_column = image_column
        self.processor = processor
        self.budget_bytes = budget_bytes
        self.num_examples = len(dataset)
        self._cache: torch.Tensor | None = None
        self._have: torch.Tensor | None = None
        self._decided = False

    def process(self, indices: Sequence[int]) -> torch.Tensor:
        """Decode and preprocess (no cache): ``pixel_values [len(indices), 3, H, W]``."""
        images = self.images[list(indices)][self.image_column]
        images = [im.convert("RGB") if hasattr(im, "convert") else im for im in images]
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def put(self, indices: Sequence[int], pixels: torch.Tensor) -> None:
        """Remember preprocessed images (the first call decides whether the whole set fits the budget)."""
        if not self._decided:
            self._decided = True
            need = pixels[0].numel() * pixels.element_size() * self.num_examples
            if need <= self.budget_bytes:
                self._cache = torch.empty((self.num_examples, *pixels.shape[1:]), dtype=pixels.dtype)
                self._have = torch.zeros(self.num_examples, dtype=torch.bool)
            else:
                logger.info("preprocessed images need %.2f GiB > budget: preprocessing every batch", need / 2**30)
        if self._cache is not None:
            idx = torch.as_tensor(list(indices), dtype=torch.long)
            self._cache[idx] = pixels
            self._have[idx] = True

    def __call__(self, indices: Sequence[int]) -> torch.Tensor:
        """``pixel_values`` for the given example indices, from memory where possible."""
        if self._cache is None:
            pixels = self.process(indices)
            self.put(indices, pixels)
            return pixels
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        missing = idx[~self._have[idx]].unique().tolist()
        if missing:
            self.put(missing, self.process(missing))
        return self._cache[idx]


class _Preprocess(torch.utils.data.Dataset):
    """Chunks of example indices → preprocessed pixels, so DataLoader workers can do the decoding."""

    def __init__(self, store: _ImageStore, chunks: list[list[int]]):
        self.store, self.chunks = store, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.store.process(self.chunks[i])


@torch.no_grad()
def _sharded_logits(classifier, store: _ImageStore, indices: Sequence[int], batch_size: int, accelerator,
                    num_classes: int, num_workers: int = 0) -> torch.Tensor:
    """Logits ``[len(indices), C]`` (float32, CPU), every process computing every W-th example, gathered in order."""
    world, rank = accelerator.num_processes, accelerator.process_index
    mine = list(indices)[rank::world]
    chunks = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    if num_workers > 0 and chunks:
        loader = torch.utils.data.DataLoader(_Preprocess(store, chunks), batch_size=None, num_workers=num_workers)
    else:
        loader = (store(c) for c in chunks)
    was_training = classifier.training
    classifier.eval()
    outs = []
    for chunk, pixels in zip(chunks, loader, strict=True):
        store.put(chunk, pixels)
        with accelerator.autocast():
            outs.append(classifier(pixels.to(accelerator.device)).float())
    classifier.train(was_training)
    local = torch.cat(outs) if outs else torch.zeros((0, num_classes), device=accelerator.device)
    if world == 1:
        return local.cpu()
    per_rank = -(-len(indices) // world)
    padded = torch.zeros((per_rank, num_classes), device=local.device)
    padded[:len(local)] = local
    gathered = accelerator.gather(padded).view(world, per_rank, num_classes)
    # rank r's j-th row is indices[j·W + r]: interleave the ranks back into index order
    return gathered.transpose(0, 1).reshape(world * per_rank, num_classes)[:len(indices)].cpu()


# ------------------------------------------------------------------------------------------------ checkpoints
def _checkpoint_fingerprint(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint (``step-NNNNNN`` with its ``state.json``) in ``directory``."""
    if not directory.is_dir():
        return None
    done = sorted(p for p in directory.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
                  and (p / "state.json").is_file())
    return done[-1] if done else None


def _save_checkpoint(directory: Path, step: int, accelerator, names: list[str], params: list[torch.nn.Parameter],
                     optimizer, scheduler, history: list[dict], fingerprint: str, projected_steps: int = 0) -> Path:
    """Write ``directory/step-NNNNNN`` atomically (safetensors + JSON), keep only the newest one."""
    from safetensors.torch import save_file

    final = directory / f"step-{step:06d}"
    tmp = directory / f"step-{step:06d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(tmp / f"rng-rank{accelerator.process_index}.safetensors"))
    if accelerator.is_main_process:
        save_file({n: p.detach().float().cpu().contiguous() for n, p in zip(names, params, strict=True)},
                  str(tmp / "student.safetensors"))
        opt_state = optimizer.state_dict()
        tensors = {}
        for i, name in enumerate(names):
            for key, value in opt_state["state"].get(i, {}).items():
                tensors[f"{name}::{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        groups = [{k: v for k, v in g.items() if k != "params"} for g in opt_state["param_groups"]]
        sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        state = {"format": CHECKPOINT_FORMAT, "step": step, "fingerprint": fingerprint,
                 "param_groups": groups, "scheduler": sched, "history": history, "projected_steps": projected_steps,
                 "world_size": accelerator.num_processes}
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        tmp.rename(final)
        for old in directory.glob("step-*"):
            if old != final and not old.name.endswith(".tmp"):
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _load_checkpoint(path: Path, accelerator, names: list[str], params: list[torch.nn.Parameter], optimizer,
                     scheduler, fingerprint: str) -> tuple[int, list[dict], int]:
    """Restore student, optimizer, scheduler and RNG from a checkpoint; returns ``(step, history, projected)``."""
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    if state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{str(path)!r} is not an hfdistac DisTaC checkpoint")
    if state["fingerprint"] != fingerprint:
        raise InputError(f"the checkpoint in {str(path.parent)!r} was written by a run with other settings",
                         "resume with the same model, data and training options, or delete the checkpoint folder")
    weights = load_file(str(path / "student.safetensors"))
    with torch.no_grad():
        for name, p in zip(names, params, strict=True):
            p.copy_(weights[name].to(p.device, p.dtype))
    moments = load_file(str(path / "optimizer.safetensors"))
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in moments.items():
        name, _, slot = key.rpartition("::")
        per_param.setdefault(names.index(name), {})[slot] = value
    groups = state["param_groups"]
    groups[0]["params"] = list(range(len(names)))
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None]})
    rng_file = path / f"rng-rank{accelerator.process_index}.safetensors"
    if rng_file.is_file():
        rng = load_file(str(rng_file))
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return int(state["step"]), list(state["history"]), int(state.get("projected_steps", 0))


# ------------------------------------------------------------------------------------------------ setup
@dataclass
class _Inputs:
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


def _from_recipe(config: ConditionConfig) -> tuple[ConditionConfig, list[str] | None]:
    """Fill model/base/data/... from ``--recipe/--task``; explicit flags win. Returns the templates too."""
    from .recipe import load_recipe

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
                     reference=reference,
                     train_split=config.train_split if config.train_split != "train" else task.train_split,
                     eval_split=config.eval_split if config.eval_split != "test" else task.test_split)
    return filled, task.templates


def _check_card_classes(source, data) -> None:
    """A dataset for another number of classes than the model's own (per its card) is an error."""
    from .data import DatasetSpec, load_image_data
    from .hub import card_datasets, is_local_reference

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
    from .hub import is_local_reference

    return str(Path(ref).expanduser().resolve()) if is_local_reference(ref) else ref


def _resolve_inputs(config: ConditionConfig) -> _Inputs:
    from .checkpoints import check_against_base, load_base, load_finetuned
    from .data import DatasetSpec, load_image_data
    from .heads import load_templates_file
    from .hub import card_datasets, infer_base
    from .outputs import check_destination
    from .task_vectors import compute_task_vector

    templates = None
    if config.recipe:
        config, templates = _from_recipe(config)
    if config.templates:
        templates = load_templates_file(config.templates)
    source = load_finetuned(config.model)
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
        raise InputError(f"no --data given and the card of {config.model!r} names no dataset",
                         "pass --data with a Hub dataset id or a local dataset path")
    config = replace(config, model=_absolute(config.model), base=_absolute(base_ref), data=_absolute(data_ref),
                     output=str(output), reference=[_absolute(r) for r in config.reference] if config.reference
                     else config.reference, templates=_absolute(config.templates) if config.templates else None)

    train = load_image_data(DatasetSpec(data_ref, config.dataset_config), config.train_split, streaming=False)
    if config.train_limit is not None and config.train_limit < len(train.dataset):
        train = replace(train, dataset=train.dataset.select(range(config.train_limit)))
    n = len(train.dataset)
    if config.batch_size > n:
        raise InputError(f"--batch-size {config.batch_size} is larger than the data ({n} images in "
                         f"{data_ref!r} split {config.train_split!r})", f"use --batch-size {n} or less, or more data")
    _check_card_classes(source, train)
    eval_data = None
    if config.eval_split.lower() != "none":
        eval_data = load_image_data(DatasetSpec(data_ref, config.dataset_config), config.eval_split, streaming=False)
        if (train.class_names is not None and eval_data.class_names is not None
                and len(train.class_names) != len(eval_data.class_names)):
            raise DataError(f"split {config.eval_split!r} has {len(eval_data.class_names)} classes but "
                            f"{config.train_split!r} has {len(train.class_names)}")

    base = load_base(base_ref)
    check_against_base(base, source)
    theta0 = base.weights
    tau = compute_task_vector(theta0, source.weights)
    reference_norms = None
    if config.reference:
        reference_norms = []
        for ref in config.reference:
            other = load_finetuned(ref)
            check_against_base(base, other)
            reference_norms.append(compute_task_vector(theta0, other.weights).norm())
            del other
    return _Inputs(config, source, base, train, eval_data, theta0, tau, tau.norm(), reference_norms,
                   templates, output, checkpoint_dir)


def _choose_preset(config: ConditionConfig, norm: float, reference_norms: list[float] | None,
                   teacher_metrics: dict | None, num_classes: int) -> tuple[str, float, float, float, dict | None]:
    """``(preset, κ, T_teacher, T_student, diagnosis)`` from the preset rules (METHOD.md §1)."""
    from .diagnosis import PRESETS, classify

    has_rule = any(v is not None for v in (config.kappa, config.target_norm, reference_norms))
    diagnosis = None
    preset = config.preset or ("norm" if has_rule else "confidence")
    if preset == "auto":
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
        preset = rec["preset"]
        kappa = rec["kappa"]
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


def _make_accelerator(config: ConditionConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from .evaluation import resolve_device

    device = resolve_device(config.device)
    if config.mixed_precision == "fp16" and device.type != "cuda":
        raise InputError("--mixed-precision fp16 needs a GPU", "use bf16 on CPU, or no")
    # A library call may run several times in one Python process with different settings: start from a
    # fresh accelerate state (the distributed process group, if any, is kept).
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    log_with = None if config.report_to in ("", "none") else [t.strip() for t in config.report_to.split(",")]
    project_dir = str(Path(config.output).with_name(Path(config.output).name + ".runs")) if log_with else None
    # step_scheduler_with_optimizer=False: we call scheduler.step() exactly once per optimiser step; the
    # default would step it once per process, which assumes a per-process batch and shortens the schedule.
    return Accelerator(cpu=device.type == "cpu", mixed_precision=config.mixed_precision, log_with=log_with,
                       project_dir=project_dir, step_scheduler_with_optimizer=False)


def _metrics_of(logits: torch.Tensor, labels: torch.Tensor | None) -> dict:
    from .metrics import classification_metrics, reliability_bins

    out = classification_metrics(logits, labels)
    if labels is not None:
        out["reliability"] = reliability_bins(logits, labels)
    return out


# ------------------------------------------------------------------------------------------------ the run
def run_condition(config: ConditionConfig) -> dict:
    """Condition one task vector with DisTaC and write the output directory (``hfdistac condition``).

    Works unchanged in one process and under ``accelerate launch`` / ``torchrun`` with several: every process
    trains on its own slice of each global batch; the main process writes the output.

    Args:
        config: A :class:`ConditionConfig`.

    Returns:
        The report (also written to ``OUTPUT/report.json``): κ, target and actual norms, temperatures, β,
        steps, entropy/accuracy/ECE of the teacher (``*_before``), of the naive rescaling θ₀ + κτ
        (``*_rescaled_only``) and of the result (``*_after``), ``history``, ``ranks``, ``output`` and, with
        ``--push-to``, ``pushed``.

    Raises:
        InputError, DataError, CheckpointError: bad input (nothing is written).
        TrainingError: a non-finite loss (nothing is written).
    """
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from .checkpoints import build_vision_model
    from .evaluation import head_for_task
    from .heads import ZeroShotClassifier
    from .task_vectors import apply_task_vector

    inputs = _resolve_inputs(config)
    cfg = inputs.config
    accelerator = _make_accelerator(cfg)
    world, rank = accelerator.num_processes, accelerator.process_index
    micro = cfg.micro_batch_size or cfg.batch_size // world
    if cfg.batch_size % (micro * world):
        raise InputError(f"--batch-size {cfg.batch_size} is not a multiple of micro batch {micro} x {world} "
                         "processes", "choose --batch-size and --micro-batch-size so that it divides evenly")
    accumulation = cfg.batch_size // (micro * world)
    set_seed(cfg.seed)

    with accelerator.main_process_first():  # one process builds and caches the head, the others read it
        head = head_for_task(inputs.base, inputs.train, templates=inputs.templates)
    if inputs.eval is not None:
        from .evaluation import check_head_matches

        check_head_matches(head, inputs.eval)
    num_classes = head.num_classes
    budget = cfg.cache_images_gb * 2**30
    train_store = _ImageStore(inputs.train.dataset, inputs.base.image_processor, inputs.train.image_column, budget)
    n_train = train_store.num_examples
    eval_store = eval_indices = eval_labels = None
    if inputs.eval is not None:
        ds = inputs.eval.dataset
        n_eval = len(ds) if cfg.eval_limit is None else min(len(ds), cfg.eval_limit)
        ds = ds.select(range(n_eval))
        eval_store = _ImageStore(ds, inputs.base.image_processor, inputs.eval.image_column, budget)
        eval_indices = list(range(n_eval))
        if inputs.eval.label_column is not None:
            eval_labels = torch.tensor([int(v) for v in ds[inputs.eval.label_column]])

    def evaluate(classifier) -> dict | None:
        if eval_store is None:
            return None
        logits = _sharded_logits(classifier, eval_store, eval_indices, cfg.eval_batch_size, accelerator, num_classes,
                                 cfg.num_workers)
        return _metrics_of(logits, eval_labels)

    # Teacher θ₀ + τ: frozen, in eval mode, never in the optimiser.
    vcfg = inputs.base.vision_config
    teacher = ZeroShotClassifier(build_vision_model(vcfg, inputs.source.weights), head).to(accelerator.device)
    teacher.requires_grad_(False).eval()
    teacher_metrics = evaluate(teacher)
    preset, kappa, t_tcr, t_stu, diagnosis = _choose_preset(cfg, inputs.norm, inputs.reference_norms,
                                                            teacher_metrics, num_classes)
    target_norm = kappa * inputs.norm
    warmup = effective_warmup(cfg.steps, cfg.warmup_steps)
    resolved = replace(cfg, preset=preset, teacher_temperature=t_tcr, student_temperature=t_stu,
                       warmup_steps=warmup, micro_batch_size=micro)
    logger.info("DisTaC: preset %s, κ=%.4g (‖τ‖ %.4g → %.4g), T=(%g, %g), %d processes x %d micro x %d accumulation",
                preset, kappa, inputs.norm, target_norm, t_tcr, t_stu, world, micro, accumulation)

    # Student θ_init = θ₀ + κτ; the anchor is the same point, paired by parameter name.
    theta_init = apply_task_vector(inputs.theta0, inputs.tau, kappa)
    student_tower = build_vision_model(vcfg, theta_init)
    student = ZeroShotClassifier(student_tower, head)
    rescaled_metrics = evaluate(student.to(accelerator.device))
    names = [f"vision_model.{k}" for k, _ in student_tower.named_parameters()]
    anchor = {n: theta_init[n].to(accelerator.device) for n in names}
    theta0_cpu = {n: inputs.theta0[n] for n in names}
    radius = None if cfg.max_norm_ratio is None else cfg.max_norm_ratio * target_norm
    theta0_dev = None if radius is None else {n: inputs.theta0[n].to(accelerator.device) for n in names}

    # Caching pays when the run reads at least as many images as the set holds (several epochs, the usual
    # case: 500 x 128 = 64,000 reads); on a set larger than that it would do more teacher work, not less.
    use_cache = cfg.cache_teacher_logits if cfg.cache_teacher_logits is not None else \
        n_train <= cfg.steps * cfg.batch_size
    teacher_logits = None
    t_start, cpu_start = time.perf_counter(), time.process_time()
    if use_cache:
        teacher_logits = _sharded_logits(teacher, train_store, range(n_train), cfg.eval_batch_size, accelerator,
                                         num_classes, cfg.num_workers).to(accelerator.device)
        del teacher  # its logits are all we need from now on
        teacher = None
    t_cache = time.perf_counter() - t_start

    optimizer = torch.optim.AdamW(student_tower.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(cosine_with_warmup, total=cfg.steps, warmup=warmup))
    student, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)
    tower = accelerator.unwrap_model(student).vision_model
    params = [p for _, p in tower.named_parameters()]
    params_by_name = dict(zip(names, params, strict=True))

    fingerprint = _checkpoint_fingerprint({**{k: getattr(resolved, k) for k in _TRAINING_KEYS},
                                           "kappa": kappa, "source": inputs.source.resolved.revision,
                                           "base": inputs.base.resolved.revision, "data": cfg.data,
                                           "n_train": n_train, "cache": use_cache})
    start_step, history, projected_steps = 0, [], 0
    if cfg.resume:
        found = latest_checkpoint(inputs.checkpoint_dir)
        if found is None:
            logger.warning("--resume: no checkpoint in %s, starting from step 0", inputs.checkpoint_dir)
        else:
            start_step, history, projected_steps = _load_checkpoint(found, accelerator, names, params, optimizer,
                                                                    scheduler, fingerprint)
            logger.info("resumed from %s (step %d)", found, start_step)
    elif accelerator.is_main_process and inputs.checkpoint_dir.exists() and cfg.checkpoint_every:
        shutil.rmtree(inputs.checkpoint_dir, ignore_errors=True)  # stale (only reachable with --overwrite)

    if accelerator.log_with:
        accelerator.init_trackers("hfdistac-condition", config={k: v for k, v in asdict(resolved).items()
                                                               if isinstance(v, (int, float, str, bool))})
    per_rank = cfg.batch_size // world
    student.train()
    bar = tqdm(total=cfg.steps, initial=start_step, desc="DisTaC", unit="step", dynamic_ncols=True,
               disable=not (cfg.progress and accelerator.is_main_process))
    for step in range(start_step, cfg.steps):
        # This process's slice of the global batch, in `accumulation` micro-batches.
        indices = global_batch_indices(n_train, cfg.batch_size, step, cfg.seed)[rank * per_rank:(rank + 1) * per_rank]
        kd_sum = entropy_sum = torch.zeros((), device=accelerator.device)
        for m in range(accumulation):
            idx = indices[m * micro:(m + 1) * micro]
            pixels = train_store(idx).to(accelerator.device)
            if teacher_logits is not None:
                z_tcr = teacher_logits[torch.as_tensor(idx, device=teacher_logits.device)]
            else:
                with torch.no_grad(), accelerator.autocast():
                    z_tcr = teacher(pixels).float()
            last = m == accumulation - 1
            # Gradients are averaged over processes only once, on the last micro-batch.
            with accelerator.no_sync(student) if not last else contextlib.nullcontext():
                z_stu = student(pixels)
                kd = distillation_loss(z_stu, z_tcr, t_tcr, t_stu)
                loss = kd / accumulation
                if last:  # the anchor depends on θ only: add it once per optimiser step
                    anchor_term = anchor_penalty(params_by_name, anchor)
                    loss = loss + cfg.beta * anchor_term
                accelerator.backward(loss)
            kd_sum = kd_sum + kd.detach() / accumulation
            entropy_sum = entropy_sum + prediction_entropy(z_stu.detach()).mean() / accumulation
        kd_mean = accelerator.reduce(kd_sum, "mean")
        total = kd_mean + cfg.beta * anchor_term.detach()
        if not torch.isfinite(total):
            bar.close()
            raise TrainingError(f"non-finite loss at step {step + 1} (KD {float(kd_mean):.4g}, anchor "
                                f"{float(anchor_term.detach()):.4g}); nothing was written",
                                "lower --lr, check the temperatures, or use --mixed-precision no")
        grad_norm = accelerator.clip_grad_norm_(student.parameters(), cfg.max_grad_norm) \
            if cfg.max_grad_norm > 0 else None
        optimizer.step()
        # Every process holds the same θ after the step, so every process projects identically.
        projected = radius is not None and project_to_ball(params_by_name, theta0_dev, radius) is not None
        projected_steps += int(projected)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps or done == 1:
            norm_now = task_vector_norm(params_by_name, theta0_dev or theta0_cpu)  # θ₀ on device when bounded
            record = {"step": done, "kd_loss": float(kd_mean), "anchor": float(anchor_term.detach()),
                      "loss": float(total), "norm": norm_now, "norm_ratio": norm_now / target_norm,
                      "entropy": float(accelerator.reduce(entropy_sum, "mean")),
                      "lr": float(scheduler.get_last_lr()[0]),
                      "grad_norm": None if grad_norm is None else float(grad_norm),
                      "projected_steps": projected_steps}
            history.append(record)
            bar.set_postfix(kd=f"{record['kd_loss']:.4f}", norm=f"{record['norm_ratio']:.3f}")
            if accelerator.log_with:
                accelerator.log({k: v for k, v in record.items() if v is not None and k != "step"}, step=done)
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            _save_checkpoint(inputs.checkpoint_dir, done, accelerator, names, params, optimizer, scheduler,
                             history, fingerprint, projected_steps)
    bar.close()
    t_train = time.perf_counter() - t_start - t_cache
    if accelerator.log_with:
        accelerator.end_training()
    steps_run = cfg.steps - start_step
    timing = {"teacher_cache_s": t_cache, "train_s": t_train, "cpu_s": time.process_time() - cpu_start,
              "steps_run": steps_run,
              "steps_per_s": steps_run / (t_cache + t_train) if steps_run else None,
              "images_per_s": steps_run * cfg.batch_size / (t_cache + t_train) if steps_run else None}

    student.eval()
    final_metrics = evaluate(accelerator.unwrap_model(student))
    ranks = accelerator.gather(torch.tensor([rank], device=accelerator.device)).cpu().tolist()
    theta = {n: p.detach().float().cpu().clone() for n, p in params_by_name.items()}
    report = _report(inputs, resolved, kappa, target_norm, theta, teacher_metrics, rescaled_metrics, final_metrics,
                     history, diagnosis, ranks, accumulation, use_cache,
                     projected_steps if radius is not None else None)
    ratio = report["norm_after_over_target"]
    if radius is None and preset in ("norm", "both") and abs(ratio - 1) > 0.15 and accelerator.is_main_process:
        logger.warning("the conditioned task vector ends at %.2fx the target norm (the paper reports ~1.1x); "
                       "to keep it closer, raise --beta or bound it with --max-norm-ratio 1.15 (hfdistac extension)",
                       ratio)
    report["timing"] = timing
    report["history"] = report.pop("history")  # keep the long list last
    if accelerator.is_main_process:
        _write_output(inputs, resolved, report, theta, teacher_metrics, rescaled_metrics, final_metrics)
        if cfg.checkpoint_every:
            shutil.rmtree(inputs.checkpoint_dir, ignore_errors=True)
    accelerator.wait_for_everyone()
    if cfg.push_to and accelerator.is_main_process:
        from .hub import push_folder

        report["pushed"] = push_folder(inputs.output, cfg.push_to, private=cfg.private, revision=cfg.revision,
                                       create_pr=cfg.create_pr, commit_message=cfg.commit_message)
    return report


# ------------------------------------------------------------------------------------------------ outputs
def _report(inputs: _Inputs, resolved: ConditionConfig, kappa: float, target_norm: float,
            theta: dict[str, torch.Tensor], teacher: dict | None, rescaled: dict | None, final: dict | None,
            history: list[dict], diagnosis: dict | None, ranks: list[int], accumulation: int, cached: bool,
            projected_steps: int | None) -> dict:
    norm_after = task_vector_norm(theta, inputs.theta0)
    report: dict[str, Any] = {
        "method": "distac", "paper": PAPER_URL,
        "model": resolved.model, "model_revision": inputs.source.resolved.revision,
        "base": resolved.base, "base_revision": inputs.base.resolved.revision,
        "dataset": resolved.data, "dataset_config": resolved.dataset_config, "train_split": resolved.train_split,
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
    for suffix, m in (("before", teacher), ("rescaled_only", rescaled), ("after", final)):
        if m is None:
            continue
        report[f"entropy_{suffix}"] = m["entropy"]
        report[f"max_prob_{suffix}"] = m["max_prob"]
        if "accuracy" in m:
            report[f"accuracy_{suffix}"] = m["accuracy"]
            report[f"ece_{suffix}"] = m["ece"]
            report[f"nll_{suffix}"] = m["nll"]
    if teacher is not None:
        report["num_eval_examples"] = teacher["n"]
    if diagnosis is not None:
        report["diagnosis"] = diagnosis
    report["history"] = history
    return report


def command_line(config: ConditionConfig) -> str:
    """The ``hfdistac condition`` command line that reproduces a resolved configuration."""
    defaults = ConditionConfig(model="x")
    parts = ["hfdistac condition", str(config.model)]
    for f in ("base", "data", "dataset_config", "kappa", "target_norm", "preset", "teacher_temperature",
              "student_temperature", "beta", "max_norm_ratio", "steps", "lr", "weight_decay", "warmup_steps", "batch_size",
              "micro_batch_size", "max_grad_norm", "seed", "mixed_precision", "train_split", "train_limit"):
        value = getattr(config, f)
        if value is not None and value != getattr(defaults, f):
            parts.append(f"--{f.replace('_', '-')} {value}")
    if config.reference:
        parts.append("--reference " + " ".join(config.reference))
    return " ".join(parts)


def _write_output(inputs: _Inputs, resolved: ConditionConfig, report: dict, theta: dict[str, torch.Tensor],
                  teacher: dict | None, rescaled: dict | None, final: dict | None) -> None:
    from .checkpoints import save_vision_checkpoint
    from .outputs import atomic_output_dir, write_json
    from .plots import curves_plot, per_layer_norms_plot, reliability_plot
    from .task_vectors import TaskVector, per_layer_norms, save_task_vector

    kappa = report["kappa"]
    provenance = {
        "method": "distac", "paper": PAPER_URL,
        "base": resolved.base, "base_revision": inputs.base.resolved.revision,
        "source": resolved.model, "source_revision": inputs.source.resolved.revision,
        "dataset": resolved.data, "kappa": repr(kappa), "target_norm": repr(report["target_norm"]),
        "teacher_temperature": repr(resolved.teacher_temperature),
        "student_temperature": repr(resolved.student_temperature), "beta": repr(resolved.beta),
        "max_norm_ratio": repr(resolved.max_norm_ratio),
        "steps": str(resolved.steps), "lr": repr(resolved.lr), "preset": str(resolved.preset),
    }
    tau_prime = TaskVector({k: theta[k] - inputs.theta0[k] for k in theta}, provenance)
    rescaled_tau = {k: kappa * v for k, v in inputs.tau.items()}
    with atomic_output_dir(inputs.output, resolved.overwrite) as tmp:
        save_vision_checkpoint(tmp, inputs.base.vision_config, theta, provenance)
        save_task_vector(tau_prime, tmp / "task_vector.safetensors")
        write_json(tmp / "report.json", report)
        write_json(tmp / "hfdistac_config.json", {"command": "condition", **resolved.to_dict()})
        plots = [per_layer_norms_plot({"τ (teacher)": per_layer_norms(inputs.tau)["by_block"],
                                       f"κτ (κ={kappa:.3g})": per_layer_norms(rescaled_tau)["by_block"],
                                       "τ′ (DisTaC)": per_layer_norms(tau_prime)["by_block"]},
                                      tmp / "per_layer_norms.png", title="Task-vector norm per layer")]
        if report["history"]:
            plots.append(curves_plot(report["history"], ["kd_loss", "anchor", "norm_ratio", "entropy", "lr"],
                                     tmp / "training_curves.png", title="DisTaC training"))
        if teacher is not None and "reliability" in teacher:
            plots.append(reliability_plot({"teacher": teacher["reliability"],
                                           "rescaled θ₀+κτ": rescaled["reliability"],
                                           "DisTaC": final["reliability"]}, tmp / "reliability.png",
                                          title="Reliability before / after DisTaC"))
        (tmp / "README.md").write_text(_card(inputs, resolved, report, [p.name for p in plots]), encoding="utf-8")


def _card(inputs: _Inputs, resolved: ConditionConfig, report: dict, plots: list[str]) -> str:
    from .cards import render_card
    from .hub import is_local_reference

    source = inputs.source.resolved
    data_is_hub = not is_local_reference(resolved.data)
    card_data = {
        "base_model": source.repo_id if not source.is_local else None,
        "base_model_relation": "finetune" if not source.is_local else None,
        "library_name": "transformers",
        "tags": ["hfdistac", "distac", "task-vector", "clip"],
        "datasets": [resolved.data.split("@")[0]] if data_is_hub else None,
        "hfdistac": {"method": "distac", "base": resolved.base, "base_revision": inputs.base.resolved.revision,
                     "source": resolved.model, "source_revision": source.revision},
    }
    rows = []
    for label, suffix in (("teacher θ₀ + τ", "before"), (f"naive rescaling θ₀ + {report['kappa']:.3g}τ",
                                                         "rescaled_only"), ("DisTaC θ₀ + τ′", "after")):
        norm = {"before": report["norm_before"], "rescaled_only": report["norm_rescaled"],
                "after": report["norm_after"]}[suffix]
        rows.append({"label": label, "norm": norm, "accuracy": report.get(f"accuracy_{suffix}"),
                     "entropy": report.get(f"entropy_{suffix}"), "ece": report.get(f"ece_{suffix}")})
    import yaml

    config_yaml = yaml.safe_dump({k: v for k, v in resolved.to_dict().items() if v is not None}, sort_keys=False)
    context = {
        "card_data": card_data, "source": resolved.model, "source_revision": source.revision,
        "source_is_local": source.is_local, "base": resolved.base, "base_revision": inputs.base.resolved.revision,
        "dataset": resolved.data, "report": report, "rows": rows, "plots": plots, "paper_url": PAPER_URL,
        "command": command_line(resolved), "config_yaml": config_yaml.strip(),
    }
    return render_card("condition_card.md.j2", context)
