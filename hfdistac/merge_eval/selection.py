"""Stage 4 of a merge: the scaling coefficient α of θ₀ + α·τ_merged, chosen on validation (METHOD.md §2).

Default grid {0, 0.05, …, 1.0}; the α maximising the mean normalised validation accuracy wins, ties going to
the smaller α. ``--alpha`` fixes it instead; methods that need no scaling (averaging, SAMerging) use α = 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .config import DEFAULT_ALPHA_GRID
from .scoring import MergedModel, mean, normalize


def select_alpha(tau: Mapping[str, torch.Tensor], *, uses_alpha: bool, fixed: float | None,
                 grid: Sequence[float] | None, merged: MergedModel, normalizers: Mapping[str, float],
                 label: str = "alpha search", progress: bool = True) -> dict[str, Any]:
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

    Returns:
        ``{"alpha", "alpha_selection", "alpha_grid", "alpha_curve"}`` (the curve: one entry per α searched).
    """
    from tqdm.auto import tqdm

    grid = list(grid or DEFAULT_ALPHA_GRID)
    if not uses_alpha:
        alpha, how, curve = 1.0, "fixed at 1 (the method needs no scaling)", []
    elif fixed is not None:
        alpha, how, curve = fixed, "given (--alpha)", []
    else:
        curve = []
        for a in tqdm(grid, desc=label, disable=not progress, leave=False):
            merged.set_weights(tau, a)
            accs = merged.evaluate_all("validation")["accuracy"]
            curve.append({"alpha": a, "mean_normalized_accuracy": mean(normalize(accs, normalizers).values()),
                          "mean_accuracy": mean(accs.values())})
        best = max(curve, key=lambda c: (round(c["mean_normalized_accuracy"], 9), -c["alpha"]))
        alpha, how = best["alpha"], "grid search on the validation split (mean normalised accuracy)"
    return {"alpha": alpha, "alpha_selection": how, "alpha_grid": grid if curve else [], "alpha_curve": curve}
