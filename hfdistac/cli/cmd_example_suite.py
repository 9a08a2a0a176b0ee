"""``hfdistac example-suite``: build the tiny offline replica of the DisTaC paper's benchmark."""

from __future__ import annotations

from pathlib import Path

from ..example_suite.config import ExampleSuiteConfig
from .main import Command


def _run(cfg: ExampleSuiteConfig) -> int:
    from ..example_suite import run_example_suite

    summary = run_example_suite(cfg)
    print(summary.table())
    state = "reused the complete suite" if summary.cached else "built"
    print(f"\n{state} at {summary.directory}; recipes in {summary.directory / 'recipes'}")
    if not summary.conditions_hold:
        print("warning: not every condition holds (see above and suite.json)")
    if summary.pushed:
        print(f"pushed {len(summary.pushed['commits'])} repos ({summary.pushed['repos']['base']}, ...); recipes "
              f"naming them by Hub id: {Path(summary.pushed['recipes'][0]).parent}")
    return 0


COMMAND = Command(
    "example-suite",
    "build a tiny offline replica of the paper's 8-task benchmark (base CLIP, datasets, models, recipes)",
    """\
      hfdistac example-suite example-suite
      hfdistac example-suite small-suite --tasks 4 --seed 1 --mismatch-task background
      hfdistac inspect example-suite/recipes/norm-mismatch.yaml
      # upload it (base, datasets, models) as repos whose cards name each other by Hub id
      hfdistac example-suite example-suite --push-to my-user""",
    ExampleSuiteConfig,
    _run,
)
