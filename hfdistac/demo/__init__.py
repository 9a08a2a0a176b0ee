"""``hfdistac demo``: the DisTaC paper's Table 1 in miniature, offline, on the built-in example suite.

* :mod:`.config` — :class:`DemoConfig` (no torch: ``--help`` stays fast);
* :mod:`.paper` — the paper's numbers, the TIES density equivalent to its 10 %, ``table1.md``;
* :mod:`.jobs` — the steps (diagnose, condition, merge) and the queue worker processes share;
* :mod:`.worker` — one worker process (``python -m hfdistac.demo.worker``);
* :mod:`.run` — :func:`run_demo`: prepare, run the steps, assemble the tables.
"""

import importlib

# Re-exported lazily (PEP 562): the CLI imports DemoConfig to build its parser without importing torch.
_EXPORTS = {"DemoConfig": "config", "run_demo": "run", "kappa_sweep_plan": "run", "kappa_sweep_rows": "run",
            "SCENARIO_NAMES": "paper", "PAPER_TABLE1": "paper", "PAPER_ZERO_SHOT": "paper",
            "paper_equivalent_density": "paper", "recovery": "paper", "table1_markdown": "paper"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
