"""Consensus Task Arithmetic with TALL masks (Wang et al., "Localizing Task Information for Improved Model
Merging and Compression", https://arxiv.org/abs/2405.07813).

    m_t = 1[ |τ_t| > λ_t·|Σ_{s≠t} τ_s| ]          (TALL mask of task t; strict >)
    c   = 1[ Σ_t m_t ≥ k ]                          (consensus mask; k = 2 drops "selfish" and
                                                      "catastrophic" weights)
    τ_merged = c ⊙ Σ_t τ_t

The merged model is θ₀ + α·τ_merged (α chosen outside). Each λ_t is chosen from {0.2, 0.3, 0.4, 0.5, 0.6}
by task t's validation accuracy of θ₀ + 1.0·(m_t ⊙ Σ_s τ_s): see :func:`select_tall_lambdas`, to which
the caller supplies the evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real

import torch

from ..errors import InputError
from .primitives import (
    TaskVectors,
    check_nonnegative,
    check_positive_int,
    check_task_vectors,
    consensus_mask,
    load_float32,
    map_entries,
    stack_key,
    sum_over_tasks,
    tall_masks,
)

logger = logging.getLogger(__name__)

DEFAULT_LAMBDA_CANDIDATES = (0.2, 0.3, 0.4, 0.5, 0.6)
# Used when no validation data chooses λ_t: the middle of the paper's grid.
DEFAULT_TALL_LAMBDA = 0.4


def _check_lambdas_value(tall_lambdas: object) -> float | tuple[float, ...]:
    if isinstance(tall_lambdas, Real) and not isinstance(tall_lambdas, bool):
        return check_nonnegative("tall_lambdas", tall_lambdas)
    if isinstance(tall_lambdas, Sequence) and not isinstance(tall_lambdas, (str, bytes)):
        if len(tall_lambdas) == 0:
            raise InputError("tall_lambdas is empty", "give one lambda per task vector, or one for all")
        return tuple(check_nonnegative(f"tall_lambdas[{i}]", x) for i, x in enumerate(tall_lambdas))
    raise InputError(f"tall_lambdas must be a number >= 0 or a list of them (one per task), got "
                     f"{tall_lambdas!r}")


def resolve_tall_lambdas(tall_lambdas: float | Sequence[float], n_tasks: int) -> list[float]:
    """One λ_t per task: a single number applies to every task; a sequence must have one per task.

    Raises:
        InputError: for negative/non-numeric values or a sequence of the wrong length.
    """
    value = _check_lambdas_value(tall_lambdas)
    if isinstance(value, float):
        return [value] * n_tasks
    if len(value) != n_tasks:
        raise InputError(f"got {len(value)} tall_lambdas for {n_tasks} task vectors",
                         "give one lambda per task vector (in task order), or a single number for all")
    return list(value)


def _check_k(k: object, n_tasks: int | None = None) -> int:
    k = check_positive_int("k", k)
    if n_tasks is not None and k > n_tasks:
        raise InputError(f"k={k} but only {n_tasks} task vector(s) given; k must be between 1 and {n_tasks}",
                         "k is the number of tasks that must agree an entry matters (default 2)")
    return k


@dataclass(frozen=True)
class ConsensusParams:
    """Hyper-parameters of Consensus TA."""

    tall_lambdas: float | tuple[float, ...] = field(
        default=DEFAULT_TALL_LAMBDA,
        metadata={"help": "TALL-mask lambda per task (in task order), or one number for every task; each >= 0. "
                          "Choose them on validation data with select_tall_lambdas; without data the default "
                          f"{DEFAULT_TALL_LAMBDA} (middle of the paper's grid 0.2-0.6) is used."},
    )
    k: int = field(
        default=2,
        metadata={"help": "Keep entries that at least k tasks' TALL masks select (1 <= k <= number of tasks)."},
    )

    def __post_init__(self):
        # Lists become tuples (the dataclass is frozen and hashable); values are validated, never changed.
        object.__setattr__(self, "tall_lambdas", _check_lambdas_value(self.tall_lambdas))
        _check_k(self.k)


def consensus_merge(task_vectors: TaskVectors, tall_lambdas: float | Sequence[float] = DEFAULT_TALL_LAMBDA,
                    k: int = 2) -> dict[str, torch.Tensor]:
    """Consensus TA: the task-arithmetic sum restricted to entries selected by at least ``k`` TALL masks.

    Args:
        task_vectors: τ_1 … τ_T, mappings ``{parameter name: tensor}`` with identical keys and shapes.
        tall_lambdas: λ_t per task (a sequence of T numbers ≥ 0), or one number for every task.
        k: Minimum number of tasks whose mask selects an entry, 1 ≤ k ≤ T.

    Returns:
        τ_merged = 1[Σ_t m_t ≥ k] ⊙ Σ_t τ_t as float32 tensors, keys in the order of the first task vector.

    Raises:
        InputError: for invalid λ or k, or mismatched task vectors.
    """
    keys = check_task_vectors(task_vectors)
    lambdas = resolve_tall_lambdas(tall_lambdas, len(task_vectors))
    k = _check_k(k, len(task_vectors))
    merged: dict[str, torch.Tensor] = {}
    def merge_entries(stacked: torch.Tensor) -> torch.Tensor:
        total = sum_over_tasks(stacked)
        return total * consensus_mask(tall_masks(stacked, lambdas, total=total), k)

    for key in keys:
        merged[key] = map_entries(merge_entries, stack_key(task_vectors, key))
    return merged


class _MaskedSum(Mapping[str, torch.Tensor]):
    """m_t ⊙ Σ_s τ_s computed on access, one parameter at a time (nothing but Σ_s τ_s is held)."""

    def __init__(self, total: Mapping[str, torch.Tensor], task_vector: Mapping[str, torch.Tensor], lam: float):
        self._total = total
        self._tv = task_vector
        self._lam = lam

    def __getitem__(self, key: str) -> torch.Tensor:
        total = self._total[key]
        tau = load_float32(self._tv, key)
        return total * (tau.abs() > self._lam * (total - tau).abs())

    def __contains__(self, key: object) -> bool:
        return key in self._total

    def __iter__(self) -> Iterator[str]:
        return iter(self._total)

    def __len__(self) -> int:
        return len(self._total)


def select_tall_lambdas(task_vectors: TaskVectors, evaluate_task: Callable[[int, Mapping[str, torch.Tensor]], float],
                        candidates: Sequence[float] = DEFAULT_LAMBDA_CANDIDATES) -> list[float]:
    """Choose each task's TALL-mask λ_t on validation data (METHOD.md §2).

    For every task t and candidate λ, the masked multi-task vector tv = m_t(λ) ⊙ Σ_s τ_s is handed to
    ``evaluate_task(t, tv)``, which must return task t's validation accuracy of θ₀ + 1.0·tv. The λ with the
    highest accuracy wins; **ties go to the smaller λ** (a smaller λ keeps more entries, i.e. stays closer
    to plain task arithmetic).

    ``tv`` is a read-only mapping computed on access, one parameter at a time; only Σ_s τ_s (one task
    vector's worth of float32) is held in memory.

    Args:
        task_vectors: τ_1 … τ_T, mappings ``{parameter name: tensor}`` with identical keys and shapes.
        evaluate_task: ``(t, tv) -> accuracy`` for task index t (0-based).
        candidates: The λ grid (each ≥ 0), tried in increasing order.

    Returns:
        λ_t for each task, in task order (pass them as ``tall_lambdas`` to the consensus merge).

    Raises:
        InputError: for an empty or negative candidate grid, or mismatched task vectors.
    """
    keys = check_task_vectors(task_vectors)
    if isinstance(candidates, (str, bytes)) or not isinstance(candidates, Sequence) or not candidates:
        raise InputError(f"candidates must be a non-empty list of lambdas >= 0, got {candidates!r}")
    grid = sorted({check_nonnegative("candidate lambda", c) for c in candidates})
    total = {key: sum_over_tasks(stack_key(task_vectors, key)) for key in keys}
    chosen: list[float] = []
    for t, tv in enumerate(task_vectors):
        best_lam, best_acc = grid[0], float("-inf")
        scores = []
        for lam in grid:
            acc = float(evaluate_task(t, _MaskedSum(total, tv, lam)))
            scores.append(acc)
            if acc > best_acc:  # strict: an equal score keeps the smaller lambda
                best_lam, best_acc = lam, acc
        logger.info("task %d: TALL lambda %s (validation accuracy %s over grid %s)", t, best_lam, scores, grid)
        chosen.append(best_lam)
    return chosen
