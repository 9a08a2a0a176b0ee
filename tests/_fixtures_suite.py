"""A small example suite built once per test session (shared by the suite and end-to-end tests)."""

from __future__ import annotations

import pytest

SUITE_TASKS = 3


@pytest.fixture(scope="session")
def example_suite(tmp_path_factory):
    """``(directory, SuiteSummary)`` of a 3-task example suite (seed 0), built once per session."""
    from hfdistac.example_suite import build_example_suite

    directory = tmp_path_factory.mktemp("suite") / "example-suite"
    summary = build_example_suite(directory, num_tasks=SUITE_TASKS, seed=0, progress=False)
    return directory, summary
