"""Merging a recipe's task vectors and evaluating the result: the library form of ``hfdistac merge``.

One module per stage, in the order data flows (METHOD.md §2):

* :mod:`.config` — :class:`MergeConfig` (flags, help texts, ranges; no torch).
* :mod:`.sources` — resolving the recipe's models into lazy task vectors (conditioned ones included).
* :mod:`.scoring` — task heads and cached splits, the evaluation model θ₀ + α·τ, the zero-shot and
  individual rows, test rows and post-merge calibration.
* :mod:`.methods` — one registered method applied with its parameters (TIES density, Consensus λ on
  validation, SAMerging's unlabeled batches).
* :mod:`.selection` — α on the validation grid.
* :mod:`.outputs` — results table, output directories, merged-model cards, learned coefficients.
* :mod:`.pipeline` — :func:`run_merge`, the stages called in order (and the push).

Normalised accuracy(t) = accuracy(merged, t) / accuracy(normaliser t, t) on the same split.
"""

import importlib

# Names re-exported lazily (PEP 562): the CLI imports ``hfdistac.merge_eval.config`` to build its parser
# without importing torch.
_EXPORTS = {
    "DEFAULT_ALPHA_GRID": "config", "NO_DATA_ALPHA": "config", "NOT_IN_ALL": "config", "MergeConfig": "config",
    "TaskSource": "sources", "task_vector_for": "sources", "build_task_vectors": "sources",
    "MergedModel": "scoring", "calibrate": "scoring", "evaluate_on_test": "scoring", "fit_temperature": "scoring",
    "load_task_data": "scoring", "reference_rows": "scoring",
    "merge_with": "methods", "samerging_data": "methods", "samerging_params": "methods",
    "select_alpha": "selection",
    "merge_card": "outputs", "results_table": "outputs", "write_coefficients": "outputs", "OutputWriter": "outputs",
    "run_merge": "pipeline",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
