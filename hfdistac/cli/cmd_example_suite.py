"""``hfdistac example-suite``: build the tiny offline replica of the DisTaC paper's benchmark."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..example_suite.config import SuiteConfig
from .main import Command


@dataclass
class ExampleSuiteConfig(SuiteConfig):
    """``hfdistac example-suite DIR``: the suite's settings plus where to write it."""

    directory: str = field(default="example-suite", metadata={
        "help": "directory to write the suite into (reused when complete, rebuilt when partial)",
        "positional": True, "nargs": "?", "metavar": "DIR"})
    workers: int | None = field(default=None, metadata={
        "help": "processes that fine-tune the models in parallel (default: the CPU cores, at most 4); the files "
                "do not depend on it"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        self.validate()
        if self.workers is not None and self.workers < 1:
            from ..errors import InputError

            raise InputError(f"--workers must be at least 1, got {self.workers}", "omit it to use every CPU core")

    def to_dict(self) -> dict:
        return asdict(self)


def _run(cfg: ExampleSuiteConfig) -> int:
    from ..example_suite import build_example_suite

    summary = build_example_suite(cfg.directory, num_tasks=cfg.num_tasks, seed=cfg.seed,
                                  mismatch_task=cfg.mismatch_task, progress=cfg.progress, workers=cfg.workers)
    print(summary.table())
    state = "reused the complete suite" if summary.cached else "built"
    print(f"\n{state} at {summary.directory}; recipes in {summary.directory / 'recipes'}")
    if not summary.conditions_hold:
        print("warning: not every condition holds (see above and suite.json)")
    return 0


COMMAND = Command(
    "example-suite",
    "build a tiny offline replica of the paper's 8-task benchmark (base CLIP, datasets, models, recipes)",
    """\
      hfdistac example-suite example-suite
      hfdistac example-suite small-suite --tasks 4 --seed 1 --mismatch-task background
      hfdistac inspect example-suite/recipes/norm-mismatch.yaml""",
    ExampleSuiteConfig,
    _run,
)
