"""What ``hfdistac example-suite`` builds: the user's settings (:class:`SuiteConfig`) and the fixed plan.

No torch import: the CLI builds its parser from :class:`SuiteConfig`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from ..errors import InputError
from .domains import TASK_NAMES

MIN_TASKS = 2
PUSH_PREFIX = "hfdistac-suite"  # the suite's repos on a Hub: NAMESPACE/hfdistac-suite-base, ...


@dataclass
class SuiteConfig:
    """What ``hfdistac example-suite`` builds (the CLI flags are generated from these fields)."""

    num_tasks: int = field(default=8, metadata={
        "help": f"number of synthetic tasks ({MIN_TASKS}-{len(TASK_NAMES)}), taken in order from: "
                + ", ".join(TASK_NAMES), "flag": "--tasks"})
    seed: int = field(default=0, metadata={"help": "seed of every random draw; same seed, same files on one machine (other processors round "
                "differently, and training amplifies it)"})
    mismatch_task: str | None = field(default=None, metadata={
        "help": "task whose model norm-mismatch.yaml replaces by its high-learning-rate variant "
                "(default: the first task)"})

    def validate(self) -> None:
        """Raise :class:`InputError` on values out of range."""
        if not isinstance(self.num_tasks, int) or not MIN_TASKS <= self.num_tasks <= len(TASK_NAMES):
            raise InputError(f"--tasks must be between {MIN_TASKS} and {len(TASK_NAMES)}, got {self.num_tasks!r}",
                             f"the suite has {len(TASK_NAMES)} tasks: {', '.join(TASK_NAMES)}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"--seed must be a non-negative integer, got {self.seed!r}")
        names = TASK_NAMES[:self.num_tasks]
        if self.mismatch_task is not None and self.mismatch_task not in names:
            raise InputError(f"--mismatch-task {self.mismatch_task!r} is not one of the suite's tasks",
                             f"choose one of: {', '.join(names)}")

    @property
    def task_names(self) -> list[str]:
        return list(TASK_NAMES[:self.num_tasks])

    @property
    def resolved_mismatch_task(self) -> str:
        return self.mismatch_task or self.task_names[0]


def check_namespace(namespace: str) -> str:
    """A Hub user or organisation name (``--push-to``), or an :class:`InputError` saying what is allowed."""
    if not isinstance(namespace, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}", namespace) \
            or ".." in namespace:
        raise InputError(f"--push-to {namespace!r} is not a Hub user or organisation name",
                         "give the namespace only (e.g. --push-to my-user): the suite's repos are named "
                         f"NAMESPACE/{PUSH_PREFIX}-base, NAMESPACE/{PUSH_PREFIX}-<task>, ...")
    return namespace


@dataclass
class ExampleSuiteConfig(SuiteConfig):
    """``hfdistac example-suite DIR``: the suite's settings plus where to write it."""

    directory: str = field(default="example-suite", metadata={
        "help": "directory to write the suite into (reused when complete, rebuilt when partial)",
        "positional": True, "nargs": "?", "metavar": "DIR"})
    workers: int | None = field(default=None, metadata={
        "help": "processes that fine-tune the models in parallel (default: the CPU cores, at most 4); the files "
                "do not depend on it"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    push_to: str | None = field(default=None, metadata={
        "help": "also upload the suite to this Hub user or organisation: base, datasets and models as repos "
                "(NAMESPACE/hfdistac-suite-...) whose cards name each other by Hub id, and write "
                "DIR/recipes/hub-NAMESPACE/*.yaml naming them", "metavar": "NAMESPACE"})
    private: bool = field(default=False, metadata={"help": "with --push-to: create the repos private"})

    def __post_init__(self) -> None:
        self.validate()
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--workers must be at least 1, got {self.workers}", "omit it to use every CPU core")
        if self.push_to is not None:
            check_namespace(self.push_to)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SuitePlan:
    """Sizes and training hyper-parameters of the suite (fixed; recorded in ``suite.json``)."""

    image_size: int = 32
    hidden_size: int = 96
    num_layers: int = 3
    num_heads: int = 3
    patch_size: int = 8
    n_train: int = 1000
    n_test: int = 200
    val_fraction: float = 0.2
    pretrain_per_task: int = 600
    pretrain_shift: float = 0.5
    sibling_caption_probability: float = 0.9
    pretrain_steps: int = 1500
    pretrain_batch: int = 128
    pretrain_lr: float = 3e-3
    pretrain_logit_scale: float = 100.0  # CLIP's temperature while pretraining (fixed: OpenAI CLIP's final value)
    logit_scale: float = 38.0  # the base's, set after pretraining: the scale of every head, zero-shot and fine-tuned
    finetune_steps: int = 500
    finetune_batch: int = 64
    finetune_lr: float = 1e-4
    highlr_factor: float = 60.0
    label_smoothing: float = 0.1
    distac_lr: float = 1e-5  # what the model cards recommend for DisTaC: a tenth of the fine-tuning rate
    alpha_grid: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))
    # thresholds of the checks (a)-(f)
    min_gain_points: float = 10.0
    min_norm_ratio: float = 3.0
    min_entropy_ratio: float = 10.0
    ls_cost_alpha: float = 0.3
    max_ls_cost_points: float = 2.0
