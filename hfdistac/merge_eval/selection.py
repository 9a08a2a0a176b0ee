"""Stage 4 of a merge: the scaling coefficient α of θ₀ + α·τ_merged, chosen on validation (METHOD.md §2).

Default grid {0, 0.05, …, 1.0}; the α maximising the mean normalised validation accuracy wins, ties going to
the smaller α. ``--alpha-search coarse-to-fine`` evaluates every other grid value and then the neighbours of the
best (13 evaluations of 21). ``--alpha`` fixes α instead; methods that need no scaling (averaging, SAMerging) use
α = 1. A winner at the top of the grid is reported (``alpha_at_edge``) and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .config import DEFAULT_ALPHA_GRID
from .scoring import MergedModel, mean, normalize

logger = logging.getLogger(__name__)


ALPHA_SEARCHES = ("grid", "coarse-to-fine")


def best_point(curve: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The searched point with the highest mean normalised validation accuracy; ties go to the smaller α."""
    return max(curve, key=lambda c: (round(c["mean_normalized_accuracy"], 9), -c["alpha"]))


def coarse_to_fine(grid: Sequence[float], evaluate) -> list[dict[str, Any]]:
    """Every other value of the sorted grid (its ends included), then the grid neighbours of the best of them:
    about half the evaluations of the full grid (13 of 21 for the default). ``evaluate(alpha)`` returns one
    curve entry; returns the entries of the points searched, in α order."""
    grid = sorted(grid)
    coarse = sorted(set(grid[::2]) | {grid[-1]})
    done = {a: evaluate(a) for a in coarse}
    i = grid.index(best_point(list(done.values()))["alpha"])
    for j in (i - 1, i + 1):
        if 0 <= j < len(grid) and grid[j] not in done:
            done[grid[j]] = evaluate(grid[j])
    return [done[a] for a in sorted(done)]


def select_alpha(tau: Mapping[str, torch.Tensor], *, uses_alpha: bool, fixed: float | None,
                 grid: Sequence[float] | None, merged: MergedModel, normalizers: Mapping[str, float],
                 label: str = "alpha search", progress: bool = True, search: str = "grid") -> dict[str, Any]:
    """Choose α for one merged task vector.

    Args:
        tau: τ_merged.
        uses_alpha: Whether the method scales τ_merged by a searched α (``False``: α = 1).
        fixed: ``--alpha`` (used as given when set).
        grid: The α values to search (default :data:`~.config.DEFAULT_ALPHA_GRID`).
        merged: The evaluation model (its weights are changed).
        normalizers: Normaliser validation accuracies by task.
        label: Progress-bar label.
        progress: Show a progress bar.
        search: ``grid`` (every value) or ``coarse-to-fine`` (:func:`coarse_to_fine`).

    Returns:
        ``{"alpha", "alpha_selection", "alpha_grid", "alpha_curve", "alpha_search", "alpha_evaluations",
        "alpha_at_edge"}`` (the curve: one entry per α evaluated; ``alpha_at_edge``: the largest α of the grid
        won, so a better one may lie beyond it).
    """
    from tqdm.auto import tqdm

    grid = list(grid or DEFAULT_ALPHA_GRID)
    if not uses_alpha:
        return {"alpha": 1.0, "alpha_selection": "fixed at 1 (the method needs no scaling)", "alpha_grid": [],
                "alpha_curve": [], "alpha_search": None, "alpha_evaluations": 0, "alpha_at_edge": False}
    if fixed is not None:
        return {"alpha": fixed, "alpha_selection": "given (--alpha)", "alpha_grid": [], "alpha_curve": [],
                "alpha_search": None, "alpha_evaluations": 0, "alpha_at_edge": False}
    bar = tqdm(total=len(grid), desc=label, disable=not progress, leave=False)

    undefined = sorted(t for t in (task.name for task in merged.tasks) if not normalizers.get(t))
    if undefined and len(undefined) == len(merged.tasks):
        from ..errors import InputError

        raise InputError("every task's fine-tuned model scores 0 % on its validation rows, so normalised accuracy "
                         f"(merged / fine-tuned) is undefined and alpha cannot be chosen ({', '.join(undefined)})",
                         "check the validation split's labels and class names (a wrong label column scores 0), or "
                         "fix alpha with --alpha")
    if undefined:
        logger.warning("%s: the fine-tuned model of %s scores 0 %% on its validation rows; alpha is chosen on the "
                       "other tasks' normalised accuracy", label, ", ".join(undefined))

    def evaluate(a: float) -> dict[str, Any]:
        merged.set_weights(tau, a)
        accs = merged.evaluate_all("validation")["accuracy"]
        bar.update(1)
        return {"alpha": a, "mean_normalized_accuracy": mean(normalize(accs, normalizers).values()),
                "mean_accuracy": mean(accs.values())}

    curve = coarse_to_fine(grid, evaluate) if search == "coarse-to-fine" else [evaluate(a) for a in grid]
    bar.close()
    best = best_point(curve)
    at_edge = len(grid) > 1 and best["alpha"] == max(grid)
    if at_edge:
        logger.warning("%s: alpha = %g is the largest value searched: a larger one may be better (try --alpha-grid "
                       "with values above it)", label, best["alpha"])
    how = ("coarse-to-fine search" if search == "coarse-to-fine" else "grid search") + \
        " on the validation split (mean normalised accuracy)"
    return {"alpha": best["alpha"], "alpha_selection": how, "alpha_grid": grid, "alpha_curve": curve,
            "alpha_search": search, "alpha_evaluations": len(curve), "alpha_at_edge": at_edge}
