"""Simple averaging of the fine-tuned models (uniform "model soup", Wortsman et al., "Model soups: averaging
weights of multiple fine-tuned models improves accuracy without increasing inference time",
https://arxiv.org/abs/2203.05482), expressed on task vectors as a baseline row:

    τ_merged = (1/T) Σ_t τ_t      (applied with α = 1: θ = θ₀ + τ_merged = mean_t θ_t)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .primitives import TaskVectors, check_task_vectors, load_float32


@dataclass(frozen=True)
class AverageParams:
    """Simple averaging has no hyper-parameters (and uses α = 1)."""


def average_merge(task_vectors: TaskVectors) -> dict[str, torch.Tensor]:
    """Mean of the task vectors.

    Args:
        task_vectors: τ_1 … τ_T, mappings ``{parameter name: tensor}`` with identical keys and shapes.

    Returns:
        τ_merged = mean_t τ_t as float32 tensors (sum in task order, then divided by T).

    Raises:
        InputError: if the task vectors are empty or their keys/shapes differ.
    """
    keys = check_task_vectors(task_vectors)
    n_tasks = len(task_vectors)
    merged: dict[str, torch.Tensor] = {}
    for key in keys:
        total = load_float32(task_vectors[0], key).clone()
        for tv in task_vectors[1:]:
            total += load_float32(tv, key)
        merged[key] = total / n_tasks
    return merged
