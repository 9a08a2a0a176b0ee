"""The product's main job as one pipeline: diagnose → condition what is harmful → merge with and without DisTaC
→ the user's own Table 1 → publish (``hfdistac run``).

* :mod:`.chain` — the stages, each reused when its fingerprint is unchanged (shared with ``hfdistac demo``);
* :mod:`.config` — :class:`RunConfig` (no torch: ``--help`` stays fast);
* :mod:`.run` — :func:`run_pipeline`: the stages in order, the table, the card, the push.
"""

import importlib

_EXPORTS = {"RunConfig": "config", "run_pipeline": "run"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
