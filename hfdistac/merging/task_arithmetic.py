"""Task Arithmetic (Ilharco et al., "Editing Models with Task Arithmetic", https://arxiv.org/abs/2212.04089).

    τ_merged = Σ_t τ_t            (the merged model is θ₀ + α·τ_merged; α is chosen outside)

Streams one parameter at a time: only the running sum and one task's tensor are in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .primitives import TaskVectors, check_task_vectors, load_float32


@dataclass(frozen=True)
class TaskArithmeticParams:
    """Task Arithmetic has no hyper-parameters besides α (applied outside the merge)."""


def task_arithmetic_merge(task_vectors: TaskVectors) -> dict[str, torch.Tensor]:
    """Sum of the task vectors.

    Args:
        task_vectors: τ_1 … τ_T, mappings ``{parameter name: tensor}`` with identical keys and shapes
            (lazy safetensors-backed :class:`~hfdistac.task_vectors.TaskVector` s are read key by key).

    Returns:
        τ_merged = Σ_t τ_t as float32 tensors, keys in the order of the first task vector.

    Raises:
        InputError: if the task vectors are empty or their keys/shapes differ.
    """
    keys = check_task_vectors(task_vectors)
    merged: dict[str, torch.Tensor] = {}
    for key in keys:
        total = load_float32(task_vectors[0], key).clone()
        for tv in task_vectors[1:]:
            total += load_float32(tv, key)
        merged[key] = total
    return merged
