"""``hfdistac push``: publish an existing hfdistac output directory to the Hub in one commit."""

from __future__ import annotations

from ..configs import PushConfig
from .main import Command


def _run(cfg: PushConfig) -> int:
    from ..publish import run_push

    info = run_push(cfg)
    print(f"{'opened ' + info['pr_url'] if info.get('pr_url') else 'pushed ' + info['commit_url']}")
    return 0


COMMAND = Command(
    "push",
    "push an existing output directory (weights, task vector, report, plots, card) to the Hub in one commit",
    """\
      hfdistac push svhn-distac user/clip-vit-b32-svhn-distac
      hfdistac push merged/tsvm user/clip-vit-b32-merged --private
      hfdistac push merged/tsvm user/clip-vit-b32-merged --create-pr --commit-message "TSVM merge, 8 tasks\"""",
    PushConfig,
    _run,
    uses_torch=False,
)
