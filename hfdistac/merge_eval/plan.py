"""How much evaluation a merge will do, said before it starts (and how long it will take, once measured).

On the real 8-task benchmark ``merge --method all`` evaluates ~10 methods × 21 α × 8 tasks × up to 1,000
validation images: hundreds of thousands of ViT-B/32 forward passes, hours on a CPU. :func:`forward_passes`
counts them from the recipe's split sizes; :func:`announce` and :func:`estimate` write the count and, after the
first evaluation is timed, the expected duration to the ``hfdistac.progress`` logger, which the command line
always shows (the library itself never prints).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .config import DEFAULT_ALPHA_GRID, MergeConfig

progress_log = logging.getLogger("hfdistac.progress")

HOW_TO_CUT = ("to cut it: --alpha A (no search), --alpha-grid with fewer values, --val-limit N (validation "
              "images per task), --test-limit N, or --method with one method")


def _size(split) -> int | None:
    if split is None:
        return 0
    n = split.data.num_examples
    if n is None:
        return None
    return n if split.limit is None else min(n, split.limit)


def forward_passes(config: MergeConfig, methods: Sequence[str], tasks) -> int | None:
    """Image forward passes of the evaluation (zero-shot, individual models, α search, test, calibration,
    Consensus TA's λ selection), or ``None`` when a split's size is unknown (a streamed dataset).

    The individual models' accuracies may come from the on-disk cache, so this is an upper bound.
    """
    from ..merging import MERGE_METHODS

    val = [_size(t.val) for t in tasks]
    test = [_size(t.test) for t in tasks]
    if None in val or None in test:
        return None
    n_val, n_test = sum(val), sum(test)
    total = n_test + n_val + n_test  # zero-shot on test; each individual model on its validation and test split
    grid = len(config.alpha_grid or DEFAULT_ALPHA_GRID)
    if config.alpha_search == "coarse-to-fine":  # every other value, the ends, two neighbours of the best
        grid = min(grid, (grid + 1) // 2 + 1 + 2)
    for name in methods:
        method = MERGE_METHODS[name]
        if method.uses_alpha and config.alpha is None:
            total += grid * n_val
        total += n_test + (n_val if config.calibrate else 0)
        if name == "consensus" and n_val:
            total += len(config.tall_lambdas or (0.2, 0.3, 0.4, 0.5, 0.6)) * n_val
    return total


def announce(config: MergeConfig, methods: Sequence[str], tasks) -> int | None:
    """Log how many forward passes the evaluation will make (and how to make fewer)."""
    n = forward_passes(config, methods, tasks)
    if n is not None:
        progress_log.info("merge: %d method(s) on %d task(s), about %s image forward passes to evaluate; %s",
                          len(methods), len(tasks), f"{n:,}", HOW_TO_CUT)
    return n


def estimate(total: int | None, images: int, seconds: float) -> float | None:
    """Log the expected evaluation time from a measured rate (``images`` in ``seconds``); returns it."""
    if not total or images <= 0 or seconds <= 0:
        return None
    rate = images / seconds
    eta = total / rate
    progress_log.info("merge: %.0f images/s on the first evaluation; the whole evaluation will take about %s",
                      rate, _duration(eta))
    return eta


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
