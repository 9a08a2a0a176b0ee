"""``hfdistac merge``: merge a recipe's task vectors and print the paper-style table."""

from __future__ import annotations

from ..merge_eval.config import MergeConfig
from .main import Command, is_main_process


def _run(cfg: MergeConfig) -> int:
    from ..merge_eval.pipeline import run_merge

    report = run_merge(cfg)
    if not is_main_process():
        return 0  # only the main process prints
    if report.get("processes", 1) > 1:
        print(f"evaluated on {report['processes']} processes")
    if report.get("table_markdown"):
        print(report["table_markdown"])
    for r in report["results"]:
        if r.get("alpha_curve"):
            continue
        print(f"{r['pretty_name']}: alpha = {r['alpha']} ({r['alpha_selection']})")
    if cfg.output:
        print(f"\nwrote {cfg.output}")
    if report.get("pushed"):
        info = report["pushed"]
        print(f"pushed to {info.get('pr_url') or info.get('commit_url')}")
    return 0


COMMAND = Command(
    "merge",
    "merge task vectors (TA, TIES, Consensus, TSV-M, Iso-C/CTS, WUDI, RegMean(++), averaging, SAMerging), "
    "choose alpha on validation, evaluate on test",
    """\
      hfdistac merge example-suite/recipes/original.yaml --method all
      hfdistac merge example-suite/recipes/norm-mismatch.yaml --method tsvm --output merged-tsvm
      hfdistac merge recipe.yaml --method iso_cts --common-space-fraction 0.8 --output merged-iso
      hfdistac merge recipe.yaml --method wudi --device cuda --output merged-wudi     # data-free, alpha = 1
      hfdistac merge recipe.yaml --method regmean --regmean-examples 256 --output merged-regmean
      hfdistac merge recipe.yaml --method ties --density 0.2 --calibrate --output out --push-to user/merged
      hfdistac merge recipe.yaml --method task_arithmetic --alpha 0.3 --weights-only --output weights-only
      hfdistac merge recipe.yaml --method tsvm --full-clip --output merged-clip   # runs in the zero-shot pipeline

    The evaluation can take long (every alpha of every method on every task); the command says first how many
    forward passes it will make and, after the first batches, how long they will take. To cut it:
      --alpha 0.3 (no search), --alpha-grid 0.2 0.3 0.4, --val-limit 200, --test-limit 500, or one --method""",
    MergeConfig,
    _run,
)
