"""``hfdistac push``: publish an existing hfdistac output directory to the Hub in one commit."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InputError
from .main import Command


@dataclass
class PushConfig:
    """``hfdistac push DIR REPO``."""

    directory: str = field(default="", metadata={"help": "an hfdistac output directory (condition, merge, card)",
                                                 "positional": True, "metavar": "DIR"})
    repo: str = field(default="", metadata={"help": "target Hub repo id (created if needed)", "positional": True,
                                            "metavar": "REPO"})
    private: bool = field(default=False, metadata={"help": "create the repo as private"})
    revision: str | None = field(default=None, metadata={"help": "branch to push to (created if missing)"})
    create_pr: bool = field(default=False, metadata={"help": "open a pull request instead of committing"})
    commit_message: str | None = field(default=None, metadata={"help": "commit message"})

    def __post_init__(self) -> None:
        d = Path(self.directory)
        if not d.is_dir():
            raise InputError(f"{self.directory!r} is not a directory", "pass the --output directory of a command")
        if not (d / "README.md").is_file():
            raise InputError(f"{self.directory!r} has no README.md: not an hfdistac output directory",
                             "every hfdistac output directory has a model card; rerun the command with --output")

    def to_dict(self) -> dict:
        return asdict(self)


def _run(cfg: PushConfig) -> int:
    from ..hub import push_folder

    info = push_folder(cfg.directory, cfg.repo, private=cfg.private, revision=cfg.revision,
                       create_pr=cfg.create_pr, commit_message=cfg.commit_message or "Upload with hfdistac")
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
