"""Simple averaging of the fine-tuned models (uniform "model soup", Wortsman et al., "Model soups: averaging
weights of multiple fine-tuned models improves accuracy without increasing inference time",
https://arxiv.org/abs/2203.05482), expressed on task vectors as a baseline row:

    τ_merged = (1/T) Σ_t τ_t      (applied with α = 1: θ = θ₀ + τ_merged = mean_t θ_t)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .primitives import TaskVectors
from .task_arithmetic import task_arithmetic_merge


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
    merged = task_arithmetic_merge(task_vectors)  # Σ_t τ_t (checks the task vectors)
    for total in merged.values():
        total /= len(task_vectors)
    return merged
