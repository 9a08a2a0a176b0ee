"""hfdistac: Hub-native robust model merging for CLIP vision towers.

Diagnose task vectors, condition harmful ones with DisTaC (arXiv 2508.01148), merge with Task Arithmetic,
TIES, Consensus TA, TSVM or SAMerging, and publish the results to the Hugging Face Hub with model cards
that carry the diagnostics.

Every command is one library call with one config class, all importable from here::

    from hfdistac import MergeConfig, run_merge
    report = run_merge(MergeConfig(recipe="example-suite/recipes/original.yaml", method="tsvm", output="merged"))

The names are loaded on first use (``import hfdistac`` imports no torch).
"""

import importlib

__version__ = "0.1.0"

#: command → (config class, run function), each ``name: module``.
_EXPORTS = {
    "RunConfig": "hfdistac.pipeline.config", "run_pipeline": "hfdistac.pipeline.run",
    "InspectConfig": "hfdistac.configs", "run_inspect": "hfdistac.diagnosis",
    "EvaluateConfig": "hfdistac.configs", "run_evaluate": "hfdistac.evaluation",
    "ConditionConfig": "hfdistac.conditioning.config", "run_condition": "hfdistac.conditioning.loop",
    "MergeConfig": "hfdistac.merge_eval.config", "run_merge": "hfdistac.merge_eval.pipeline",
    "CardConfig": "hfdistac.readiness", "run_card": "hfdistac.readiness",
    "PushConfig": "hfdistac.configs", "run_push": "hfdistac.publish",
    "ExampleSuiteConfig": "hfdistac.example_suite.config", "run_example_suite": "hfdistac.example_suite.command",
    "DemoConfig": "hfdistac.demo.config", "run_demo": "hfdistac.demo.run",
    "set_threads": "hfdistac.runtime",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hfdistac' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted(_EXPORTS)
