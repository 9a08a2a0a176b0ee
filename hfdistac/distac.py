"""DisTaC conditioning: the stable import path of :mod:`hfdistac.conditioning` (``hfdistac.distac.run_condition``).

The implementation lives in the :mod:`hfdistac.conditioning` package, one module per stage (config, math,
inputs, images, loop, checkpoints, outputs); this module re-exports its public names so that existing imports
and the documentation keep working.
"""

from .conditioning.algorithm import (
    anchor_penalty,
    compute_kappa,
    cosine_with_warmup,
    distillation_loss,
    effective_warmup,
    global_batch_indices,
    project_to_ball,
    task_vector_norm,
)
from .conditioning.checkpointing import CHECKPOINT_FORMAT, latest_checkpoint, load_checkpoint, save_checkpoint
from .conditioning.config import MIXED_PRECISION_CHOICES, PAPER_URL, PRESET_CHOICES, ConditionConfig
from .conditioning.loop import run_condition
from .conditioning.outputs import command_line

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
