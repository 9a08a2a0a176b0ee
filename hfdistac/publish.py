"""``hfdistac push`` as a library call: an existing output directory to the Hub in one commit."""

from __future__ import annotations

from .configs import PushConfig


def run_push(config: PushConfig) -> dict:
    """Publish an hfdistac output directory (the library form of ``hfdistac push DIR REPO``).

    Every file goes up in one commit (:func:`hfdistac.hub.push_folder`); each card's usage code is pointed at
    the repo it lands in.

    Args:
        config: A :class:`~hfdistac.configs.PushConfig`.

    Returns:
        ``{"repo_id", "commit_sha", "commit_url", "pr_url"}``.
    """
    from .hub import push_folder

    return push_folder(config.directory, config.repo, private=config.private, revision=config.revision,
                       create_pr=config.create_pr, commit_message=config.commit_message or "Upload with hfdistac")
