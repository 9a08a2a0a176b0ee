"""Isotropic merging, Iso-C and Iso-CTS (Marczak et al., "No Task Left Behind: Isotropic Model Merging with
Common and Task-Specific Subspaces", ICML 2025, https://arxiv.org/abs/2502.04959; official code
danielm1405/iso-merging, ``src/utils/iso.py``).

**Iso-C** — for every 2-D parameter matrix (:func:`~hfdistac.merging.primitives.is_matrix_parameter`):

    Σ_t τ_t = U S Vᵀ          →       τ_merged = σ̄ · U Vᵀ,   σ̄ = mean of the singular values S

i.e. the sum's spectrum is flattened to its mean (its polar factor times the mean singular value).

**Iso-CTS** — for every 2-D matrix of shape m×n, r = min(m, n), T tasks and a common-space fraction f:

    k = r − round((r − ⌊f·r⌋)/T)·T          (common directions, so that the rest divides by T)
    Σ_t τ_t = U S Vᵀ;  U_c, V_cᵀ = the top-k singular vectors of the sum   (the common subspace)
    per task: τ_t − U_c U_cᵀ τ_t = U_t S_t V_tᵀ; keep its top (r − k)/T directions  (task-specific)
    U = [U_1 … U_T, U_c],  Vᵀ = [V_1ᵀ; …; V_Tᵀ; V_cᵀ]  → orthogonalised (polar factors)
    τ_merged = s̄ · U Vᵀ,  s̄ = mean of all r kept singular values

Every other tensor (biases, LayerNorms, class embedding, the 4-D patch convolution) is the plain mean over
tasks, in both. The merged model is θ₀ + α·τ_merged with α chosen on validation, as in the official code
(FusionBench's port, ``fusion_bench/method/isotropic_merging``, computes the same and defaults to α = 1).
With f = 1 every direction is common and Iso-CTS equals Iso-C. HF stores q, k, v as separate matrices
(open_clip fuses them): each 2-D matrix is treated alike, as FusionBench does on these checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Real

import torch

from ..errors import InputError
from .primitives import (
    TaskVectors,
    check_task_vectors,
    is_matrix_parameter,
    load_float32,
    polar_factor,
    thin_svd,
)


@dataclass(frozen=True)
class IsoCParams:
    """Iso-C has no hyper-parameters besides α (applied outside the merge)."""

    device: str | None = field(default=None, repr=False, compare=False, metadata={
        "help": "where the SVDs run (default cpu); not a CLI option (from --device)", "cli": False})


def _check_fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= float(value) <= 1.0:
        raise InputError(f"common_space_fraction must be a number in [0, 1], got {value!r}",
                         "the share of each matrix's directions taken from the sum's top subspace, e.g. 0.8")
    return float(value)


@dataclass(frozen=True)
class IsoCTSParams:
    """Hyper-parameters of Iso-CTS."""

    common_space_fraction: float = field(default=0.8, metadata={
        "help": "Iso-CTS: share of each matrix's directions taken from the common subspace of the sum, in [0, 1] "
                "(the paper's 0.8; 1 gives Iso-C)"})
    device: str | None = field(default=None, repr=False, compare=False, metadata={
        "help": "where the SVDs run (default cpu); not a CLI option (from --device)", "cli": False})

    def __post_init__(self):
        _check_fraction(self.common_space_fraction)


def _sum(task_vectors: TaskVectors, key: str, first: torch.Tensor) -> torch.Tensor:
    """Σ_t τ_t[key] in task order (``first`` is τ_1[key], already read)."""
    total = first.clone()
    for tv in task_vectors[1:]:
        total += load_float32(tv, key)
    return total


def isotropic(matrix: torch.Tensor) -> torch.Tensor:
    """σ̄·U Vᵀ for matrix = U S Vᵀ: the same singular vectors with every singular value set to their mean."""
    u, s, vt = thin_svd(matrix)
    return (u @ vt) * s.mean()


def iso_c_merge(task_vectors: TaskVectors, device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
    """Iso-C: the sum of the task vectors with an isotropic spectrum on every matrix, the mean elsewhere.

    Args:
        task_vectors: τ_1 … τ_T, mappings ``{parameter name: tensor}`` with identical keys and shapes.
        device: Where the SVDs run (one parameter of all tasks at a time); results come back on the CPU.

    Returns:
        τ_merged as float32 tensors, keys in the order of the first task vector.
    """
    keys = check_task_vectors(task_vectors)
    device = device or "cpu"
    merged: dict[str, torch.Tensor] = {}
    for key in keys:
        first = load_float32(task_vectors[0], key)
        total = _sum(task_vectors, key, first)
        merged[key] = isotropic(total.to(device)).cpu() if is_matrix_parameter(first) else total / len(task_vectors)
    return merged


def common_space_size(shape: Sequence[int], n_tasks: int, fraction: float) -> tuple[int, int]:
    """``(k common directions, directions per task)`` of an m×n matrix, as in the official code."""
    r = min(shape)
    k = int(r * fraction)
    task_total = round((r - k) / n_tasks) * n_tasks
    k = r - task_total
    return k, task_total // n_tasks


def iso_cts_matrix(matrices: Sequence[torch.Tensor], fraction: float) -> torch.Tensor:
    """Iso-CTS of one parameter matrix across tasks (see the module docstring)."""
    total = matrices[0].clone()
    for m in matrices[1:]:
        total += m
    k, per_task = common_space_size(tuple(total.shape), len(matrices), fraction)
    u, s, vt = thin_svd(total)
    u_c, s_c, vt_c = u[:, :k], s[:k], vt[:k, :]
    us, ss, vts = [], [], []
    if per_task:
        for m in matrices:
            u_t, s_t, vt_t = thin_svd(m - u_c @ (u_c.T @ m))  # the part of τ_t outside the common subspace
            us.append(u_t[:, :per_task])
            ss.append(s_t[:per_task])
            vts.append(vt_t[:per_task, :])
    u_all = polar_factor(torch.cat([*us, u_c], dim=1))
    vt_all = polar_factor(torch.cat([*vts, vt_c], dim=0))
    return (u_all @ vt_all) * torch.cat([*ss, s_c]).mean()


def iso_cts_merge(task_vectors: TaskVectors, common_space_fraction: float = 0.8,
                  device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
    """Iso-CTS: common and task-specific subspaces, orthogonalised, with an isotropic spectrum.

    Args:
        task_vectors: τ_1 … τ_T, mappings ``{parameter name: tensor}`` with identical keys and shapes.
        common_space_fraction: Share of each matrix's directions taken from the sum's top subspace, in [0, 1].
        device: Where the SVDs run (one parameter of all tasks at a time); results come back on the CPU.

    Returns:
        τ_merged as float32 tensors, keys in the order of the first task vector.
    """
    fraction = _check_fraction(common_space_fraction)
    keys = check_task_vectors(task_vectors)
    device = device or "cpu"
    merged: dict[str, torch.Tensor] = {}
    for key in keys:
        first = load_float32(task_vectors[0], key)
        if is_matrix_parameter(first):
            mats = [first.to(device), *(load_float32(tv, key).to(device) for tv in task_vectors[1:])]
            merged[key] = iso_cts_matrix(mats, fraction).cpu()
        else:
            merged[key] = _sum(task_vectors, key, first) / len(task_vectors)
    return merged
