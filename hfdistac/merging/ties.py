"""TIES-Merging (Yadav et al., "TIES-Merging: Resolving Interference When Merging Models",
https://arxiv.org/abs/2306.01708).

For each task t, with d = ``density``:

    trim:   τ̂_t = τ_t ⊙ 1[|τ_t| ≥ thr_t],  thr_t = the round(d·n_t)-th largest |entry| of the WHOLE
            flattened τ_t (n_t entries; one global threshold per task, not per tensor)
    elect:  γ = sign(Σ_t τ̂_t), with sign 0 → +1
    merge:  τ_merged = Σ_t τ̂_t ⊙ 1[τ̂_t·γ > 0] / max(1, Σ_t 1[τ̂_t·γ > 0])

The merged model is θ₀ + α·τ_merged (α chosen outside). The DisTaC paper effectively kept ≈0.17 of the
vision entries; the default density is 0.2.

Memory: the per-task thresholds are found one task vector at a time by an exact radix selection (two
streaming passes, see :func:`~hfdistac.merging.primitives.magnitude_threshold`); the merge then walks the
parameters one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .primitives import (
    TaskVectors,
    check_density,
    check_task_vectors,
    disjoint_mean,
    elect_sign,
    load_float32,
    magnitude_threshold,
    map_entries,
    trim_by_magnitude,
)


@dataclass(frozen=True)
class TiesParams:
    """Hyper-parameters of TIES-Merging."""

    density: float = field(
        default=0.2,
        metadata={"help": "Fraction of each task vector's entries kept by magnitude (global per task), in (0, 1]."},
    )

    def __post_init__(self):
        check_density(self.density)


def ties_merge(task_vectors: TaskVectors, density: float = 0.2) -> dict[str, torch.Tensor]:
    """TIES-Merging: trim each task vector by global magnitude, elect signs, average the agreeing entries.

    Args:
        task_vectors: τ_1 … τ_T, mappings ``{parameter name: tensor}`` with identical keys and shapes.
        density: Fraction of each task vector's entries kept, in (0, 1]. The number kept is
            ``round(density · n)`` (at least 1) of the n entries of the whole task vector; entries tied
            with the threshold are all kept.

    Returns:
        τ_merged as float32 tensors, keys in the order of the first task vector.

    Raises:
        InputError: for a density outside (0, 1], non-finite entries, or mismatched task vectors.
    """
    density = check_density(density)
    keys = check_task_vectors(task_vectors)
    # One task vector at a time: only per-tensor histograms are held, never a whole flattened vector.
    thresholds = [magnitude_threshold(tv, density) for tv in task_vectors]
    merged: dict[str, torch.Tensor] = {}
    for key in keys:
        trimmed = torch.stack([trim_by_magnitude(load_float32(tv, key), thr)
                               for tv, thr in zip(task_vectors, thresholds, strict=True)])
        merged[key] = map_entries(_elect_and_merge, trimmed)
    return merged


def _elect_and_merge(trimmed: torch.Tensor) -> torch.Tensor:
    return disjoint_mean(trimmed, elect_sign(trimmed))
