"""``hfdistac example-suite DIR [--push-to NAMESPACE]`` as one library call: build (or reuse), then publish."""

from __future__ import annotations

from .build import SuiteSummary, build_example_suite


def run_example_suite(config) -> SuiteSummary:
    """``hfdistac example-suite DIR`` as one library call (an :class:`~.config.ExampleSuiteConfig` in, the
    :class:`SuiteSummary` out); see :func:`build_example_suite`. With ``push_to``, the suite is then uploaded
    (:func:`~.publish.push_suite`) and ``summary.pushed`` holds what was pushed."""
    summary = build_example_suite(config.directory, num_tasks=config.num_tasks, seed=config.seed,
                                  mismatch_task=config.mismatch_task, progress=config.progress, workers=config.workers)
    if config.push_to:
        from .publish import push_suite

        summary.pushed = push_suite(summary.directory, config.push_to, private=config.private,
                                    progress=config.progress)
    return summary
