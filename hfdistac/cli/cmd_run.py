"""``hfdistac run``: diagnose, condition what is harmful, merge with and without DisTaC, and publish."""

from __future__ import annotations

from ..pipeline.config import RunConfig
from .main import Command, is_main_process


def _run(cfg: RunConfig) -> int:
    from ..pipeline import run_pipeline
    from ..pipeline.tables import table_markdown

    report = run_pipeline(cfg)
    if not is_main_process():
        return 0  # only the main process prints
    print(table_markdown(report))
    reused = sum(s["reused"] for s in report["stages"])
    print(f"\n{len(report['stages'])} stages ({reused} reused) in {report['total_seconds']:.1f} s; wrote {cfg.output} "
          "(table.md, run.json, README.md, recipe.conditioned.yaml)")
    if report.get("pushed"):
        pushed = report["pushed"]
        print(f"pushed {len(pushed['commits'])} repos" + (f"; collection {pushed['collection']}"
                                                          if pushed.get("collection") else ""))
    return 0


COMMAND = Command(
    "run",
    "the main job in one command: diagnose every task, condition the harmful ones with DisTaC, merge with and "
    "without them, print your own Table 1, publish",
    """\
      hfdistac run example-suite/recipes/norm-mismatch.yaml --output nm-run
      hfdistac run my-recipe.yaml --output run --method all --push-to my-user/clip-8tasks
      # force a task, or merge as is
      hfdistac run my-recipe.yaml --output run --condition svhn,mnist
      hfdistac run my-recipe.yaml --output run --no-distac
      # a second run of the same command reuses every stage; --overwrite redoes them
      hfdistac run my-recipe.yaml --output run --overwrite""",
    RunConfig,
    _run,
)
