"""The configuration of ``hfdistac condition`` (one field, one flag, one help text, one allowed range).

No torch import here: the CLI builds its parser from this dataclass, and ``hfdistac --help`` must stay fast.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from ..configs import check_fields
from ..configs import help_field as _h
from ..errors import InputError

PAPER_URL = "https://arxiv.org/abs/2508.01148"
PRESET_CHOICES = ("norm", "confidence", "both", "auto")
MIXED_PRECISION_CHOICES = ("no", "bf16", "fp16")
DEFAULT_BATCH_SIZE = 128  # the paper's
DEFAULT_SHUFFLE_BUFFER = 1000

logger = logging.getLogger(__name__)


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
    eval_data: str | None = field(default=None, metadata=_h(
        "labeled images of the same task (Hub dataset id or local path) for the before/after accuracy and, when "
        "--data has no labels, the head's class names; default: --data itself"))
    class_names: str | None = field(default=None, metadata=_h(
        "text file with one class name per line, in label order: the head's classes when neither --data nor "
        "--eval-data names them (e.g. a plain folder of images)", metavar="FILE"))
    dataset_config: str | None = field(default=None, metadata=_h("dataset configuration name (e.g. cropped_digits)"))
    image_column: str | None = field(default=None, metadata=_h(
        "the dataset's image column (default: its first Image feature)", metavar="NAME"))
    label_column: str | None = field(default=None, metadata=_h(
        "the dataset's label column (default: its first ClassLabel feature)", metavar="NAME"))
    recipe: str | None = field(default=None, metadata=_h(
        "recipe YAML: with --task it gives model, base and dataset, and --reference defaults to the other tasks",
        metavar="FILE"))
    task: str | None = field(default=None, metadata=_h("name of the recipe task to condition (with --recipe)"))
    kappa: float | None = field(default=None, metadata=_h(
        "scale κ of the starting point θ₀ + κτ (exclusive with --target-norm and --reference)", gt=0,
        hint="κ scales the task vector: 0 < κ (κ < 1 shrinks)"))
    target_norm: float | None = field(default=None, metadata=_h(
        "rescale τ to this global L2 norm: κ = target / ‖τ‖", gt=0))
    reference: list[str] | None = field(default=None, metadata=_h(
        "other fine-tuned models of the merge: κ = mean of their task-vector norms / ‖τ‖ (the paper's rule)",
        metavar="MODEL"))
    preset: str | None = field(default=None, metadata=_h(
        "norm: temperatures (10, 10), κ from --kappa/--target-norm/--reference; confidence: (1, 10) with κ = 1; "
        "both: (1, 10) with κ; auto: diagnose like `hfdistac inspect` and pick one. Default: norm when a κ "
        "rule is given, else confidence", choices=PRESET_CHOICES))
    teacher_temperature: float | None = field(default=None, metadata=_h("T_teacher (default: from --preset)", gt=0))
    student_temperature: float | None = field(default=None, metadata=_h("T_student (default: from --preset)", gt=0))
    beta: float = field(default=0.5, metadata=_h("weight β of the anchor term β·‖θ − θ_init‖²", ge=0))
    max_norm_ratio: float | None = field(default=None, metadata=_h(
        "hfdistac extension, not in the paper: after every step, scale the task vector back to at most R x the "
        "target norm (projection onto a ball around θ₀), e.g. 1.15. Default (or 0): off, Algorithm 1 exactly",
        metavar="R", ge=1, zero_means_none=True, note="or 0 for off",
        hint="R bounds ‖τ′‖ by R x the target norm, and the student starts at the target: e.g. --max-norm-ratio 1.15"))
    steps: int = field(default=500, metadata=_h("optimiser steps K", ge=1))
    lr: float = field(default=1e-5, metadata=_h("peak AdamW learning rate", gt=0, le=1))
    weight_decay: float = field(default=0.0, metadata=_h(
        "AdamW weight decay (released code: 0; the paper's text implies the fine-tuning value 0.1)", ge=0, le=1))
    warmup_steps: int | None = field(default=None, metadata=_h(
        "linear warm-up steps of the cosine schedule (default: 200, or 40%% of --steps when that is smaller)", ge=0))
    batch_size: int | None = field(default=None, metadata=_h(
        "global batch size (images per optimiser step, all processes); default: the paper's 128, or --num-images "
        "when that is smaller", ge=1))
    micro_batch_size: int | None = field(default=None, metadata=_h(
        "images per forward pass and process; gradient accumulation = batch size / (micro batch x processes) "
        "(default: no accumulation)", ge=1))
    max_grad_norm: float = field(default=1.0, metadata=_h(
        "clip gradients to this global L2 norm (0 = no clipping)", ge=0, note="0 = no clipping"))
    seed: int = field(default=0, metadata=_h("seed of the batch order (and any dropout)", ge=0))
    mixed_precision: str = field(default="no", metadata=_h(
        "autocast precision of the forward passes: no, bf16, fp16 (fp16 needs a GPU)",
        choices=MIXED_PRECISION_CHOICES))
    cache_teacher_logits: bool | None = field(default=None, metadata=_h(
        "compute the teacher's logits once per image and reuse them instead of a teacher forward pass per step "
        "(the training data is a finite set, never augmented); default: on when the run reads at least as many "
        "images as the set holds (steps x batch size >= images)"))
    cache_images_gb: float = field(default=2.0, metadata=_h(
        "keep preprocessed training images in memory (per process) when they fit in this many GiB (0 = never)",
        ge=0))
    train_split: str = field(default="train", metadata=_h("split of --data to distil on (labels are never used)"))
    train_limit: int | None = field(default=None, metadata=_h(
        "distil on at most the first N images of the split", ge=1))
    num_images: int | None = field(default=None, metadata=_h(
        "read the split as a stream and distil on the first N images of a seeded shuffle (--shuffle-buffer; "
        "only the shards needed are fetched); default for a Hub dataset: what the run reads, steps x "
        "batch size (at most the split); for local data: the whole split, memory-mapped", ge=1))
    shuffle_buffer: int | None = field(default=None, metadata=_h(
        "with a streamed split: rows in the seeded shuffle buffer (the stream is read until the buffer is full "
        "before the first image is drawn, so it sets how many rows, and shards, are fetched at least); default: "
        "1000, or --num-images when that is smaller", ge=1))
    eval_split: str = field(default="test", metadata=_h(
        "split for the before/after accuracy, entropy and ECE ('none' to skip evaluation)"))
    eval_limit: int | None = field(default=512, metadata=_h(
        "evaluate on at most this many images (0 = all)", ge=0, zero_means_none=True, note="0 = all"))
    eval_batch_size: int = field(default=64, metadata=_h("images per evaluation (and teacher-caching) batch", ge=1))
    templates: str | None = field(default=None, metadata=_h(
        "prompt-template file (one template per line containing {c}) overriding the task's standard ones",
        metavar="FILE"))
    num_workers: int = field(default=0, metadata=_h(
        "DataLoader worker processes decoding images for evaluation and teacher caching (training images are "
        "then read from memory)", ge=0))
    device: str = field(default="auto", metadata=_h("auto (cuda if available), cpu or cuda"))
    log_every: int = field(default=10, metadata=_h("record training metrics every N steps", ge=1))
    report_to: str = field(default="none", metadata=_h(
        "accelerate trackers to log to: none, all, tensorboard, wandb, ... (comma-separated)"))
    checkpoint_every: int = field(default=0, metadata=_h(
        "save a resumable checkpoint every N steps into --checkpoint-dir (0 = never)", ge=0, note="0 = never"))
    checkpoint_dir: str | None = field(default=None, metadata=_h(
        "where checkpoints go (default: OUTPUT.checkpoints beside the output; removed after success)", metavar="DIR"))
    resume: bool = field(default=False, metadata=_h("continue from the latest checkpoint in --checkpoint-dir"))
    output: str | None = field(default=None, metadata=_h(
        "output directory, written atomically (default: ./<model name>-distac)", metavar="DIR"))
    overwrite: bool = field(default=False, metadata=_h("replace an existing --output directory"))
    full_clip: bool = field(default=False, metadata=_h(
        "write a full CLIPModel (the new vision tower + the base's text tower, projections, tokenizer and "
        "processor) instead of the vision tower alone, so transformers' zero-shot-image-classification "
        "pipeline runs on the output"))
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
        check_fields(self)
        self._fit_defaults_to_the_request()
        self._check_sources()
        self._check_kappa_rules()
        self._check_batches()
        if self.preset == "auto" and self.eval_split.lower() == "none":
            raise InputError("--preset auto measures the teacher's entropy on --eval-split, which is 'none'",
                             "give an evaluation split or choose a preset")
        if (self.private or self.revision or self.create_pr or self.commit_message) and not self.push_to:
            raise InputError("--private/--revision/--create-pr/--commit-message only apply with --push-to")

    def _check_sources(self) -> None:
        if self.recipe and self.model:
            raise InputError("give either MODEL or --recipe/--task, not both",
                             "with --recipe, choose the model with --task NAME")
        if bool(self.recipe) != bool(self.task):
            raise InputError("--recipe and --task go together", "e.g. --recipe suite/recipes/norm-mismatch.yaml --task digits")
        if not self.model and not self.recipe:
            raise InputError("no model given", "pass a fine-tuned model (Hub id or directory), or --recipe and --task")

    def _check_kappa_rules(self) -> None:
        rules = [n for n, v in (("--kappa", self.kappa), ("--target-norm", self.target_norm),
                                ("--reference", self.reference)) if v is not None]
        if len(rules) > 1:
            raise InputError(f"{' and '.join(rules)} are mutually exclusive", "choose one way to set κ")
        if self.reference is not None and not self.reference:
            raise InputError("--reference needs at least one model")
        if self.preset in ("norm", "both") and not rules and not self.recipe:
            raise InputError(f"--preset {self.preset} needs a target: --kappa, --target-norm or --reference",
                             "e.g. --reference the other fine-tuned models of the merge (κ = their mean norm / ‖τ‖)")
        if self.preset == "confidence" and (self.kappa is not None or self.target_norm is not None):
            raise InputError("--preset confidence keeps κ = 1; --kappa/--target-norm need --preset norm or both",
                             "use --preset both to rescale and sharpen")
        if self.preset == "auto" and self.kappa is not None:
            raise InputError("--preset auto chooses κ itself; --kappa cannot be combined with it",
                             "give --target-norm or --reference (the other tasks' norms), or choose a preset")

    def _fit_defaults_to_the_request(self) -> None:
        """Defaults that fit ``--num-images``: a batch and a shuffle buffer no larger than the sample (64 images
        with the paper's batch of 128 would fail; a 1,000-row buffer would fetch every shard for 64 images)."""
        wanted = self.num_images
        if self.batch_size is None:
            self.batch_size = DEFAULT_BATCH_SIZE if wanted is None else min(DEFAULT_BATCH_SIZE, wanted)
            if self.batch_size < DEFAULT_BATCH_SIZE:
                logger.info("batch size %d: --num-images %d is smaller than the default batch of %d",
                            self.batch_size, wanted, DEFAULT_BATCH_SIZE)
        if self.shuffle_buffer is None:
            self.shuffle_buffer = DEFAULT_SHUFFLE_BUFFER if wanted is None else min(DEFAULT_SHUFFLE_BUFFER, wanted)

    def _check_batches(self) -> None:
        if self.warmup_steps is not None and not self.warmup_steps <= self.steps:
            raise InputError(f"--warmup-steps must be in [0, --steps={self.steps}], got {self.warmup_steps}")
        if self.micro_batch_size is not None:
            if not self.micro_batch_size <= self.batch_size:
                raise InputError(f"--micro-batch-size must be in [1, --batch-size={self.batch_size}], "
                                 f"got {self.micro_batch_size}")
            if self.batch_size % self.micro_batch_size:
                raise InputError(f"--batch-size {self.batch_size} is not a multiple of --micro-batch-size "
                                 f"{self.micro_batch_size}", "the global batch is split into equal micro-batches")

    def to_dict(self) -> dict:
        return asdict(self)
