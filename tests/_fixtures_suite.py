"""Fixtures that build a small example suite once per session.

``example_suite`` is the path of a complete suite (4 tasks: colour, background, frame, tint; seed 0) built
with the default plan except half the fine-tuning steps (:func:`suite_plan`, to keep the test run near its
earlier length), reused by every end-to-end test (inspect, condition, merge, demo). All four conditions of
the suite hold on it (checked in ``tests/test_example_suite.py``).
"""

from __future__ import annotations

import pytest

SUITE_TASKS = 4
SUITE_SEED = 0


def suite_plan():
    from hfdistac.example_suite import SuitePlan

    return SuitePlan(finetune_steps=450)


@pytest.fixture(scope="session")
def example_suite(tmp_path_factory):
    """Path of a complete example suite (4 tasks, seed 0), built once per test session."""
    from hfdistac.example_suite import build_example_suite

    root = tmp_path_factory.mktemp("example_suite") / "suite"
    build_example_suite(root, num_tasks=SUITE_TASKS, seed=SUITE_SEED, progress=False, plan=suite_plan())
    return root
