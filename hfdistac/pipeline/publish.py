"""``hfdistac run --push-to NAMESPACE/NAME``: each merge and each conditioned task vector to its own repo.

``NAMESPACE/NAME-<method>`` holds each method's merge (the one with DisTaC when something was conditioned) and
``NAMESPACE/NAME-<task>-distac`` each conditioned task vector; each goes up in one commit
(:func:`hfdistac.hub.push_folder`), its card gaining a section that links every other repo of the run. Where the
endpoint has Hub collections, one named after the run gathers them; where it has none, the report says so.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

SECTION = "## Part of an hfdistac run"


def _repo_names(report: dict, push_to: str) -> tuple[dict[str, str], dict[str, str]]:
    merges = {m: f"{push_to}-{m.replace('_', '-')}" for m in report["methods"]}
    conditioned = {name: f"{push_to}-{name.replace('_', '-')}-distac" for name in report["conditioned"]}
    return merges, conditioned


def _linked_card(text: str, repo: str, all_repos: dict[str, str]) -> str:
    from ..cards import markdown_cell

    lines = [SECTION, "", "This model is one output of `hfdistac run` (diagnose → DisTaC → merge). The others:", ""]
    lines += [f"- [{markdown_cell(what)}](../{r}) (`{r}`)" for what, r in all_repos.items() if r != repo]
    return text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"


def publish_run(root: Path, report: dict, config) -> dict:
    """Push a run's merges and conditioned task vectors (module docstring); returns what went where."""
    from ..hub import push_folder

    merges, conditioned = _repo_names(report, config.push_to)
    folders = {}
    for m, repo in merges.items():
        scenario = "distac" if "distac" in report["table"].get(m, {}) else "original"
        multi = (root / "merges" / scenario / m).is_dir()
        folders[repo] = root / "merges" / scenario / (m if multi else "")
    for name, repo in conditioned.items():
        folders[repo] = Path(report["conditioned"][name]["output"])
    labels = {**{f"merge ({m})": r for m, r in merges.items()},
              **{f"{n} conditioned with DisTaC": r for n, r in conditioned.items()}}
    commits = {}
    with tempfile.TemporaryDirectory(prefix="hfdistac-run-push-") as tmp:
        for repo, folder in folders.items():
            staged = Path(tmp) / repo.replace("/", "--")
            shutil.copytree(folder, staged, symlinks=True)
            card = staged / "README.md"
            card.write_text(_linked_card(card.read_text(encoding="utf-8"), repo, labels), encoding="utf-8")
            info = push_folder(staged, repo, private=config.private,
                               commit_message=f"hfdistac run {report['name']}: {repo.rsplit('/', 1)[1]}")
            commits[repo] = info["commit_url"]
    return {"merges": merges, "conditioned": conditioned, "commits": commits,
            "collection": _collection(report, config, list(folders))}


def _collection(report: dict, config, repos: list[str]) -> str | None:
    """A Hub collection of the run's repos, or ``None`` (logged) where the endpoint has no collections."""
    from huggingface_hub import HfApi

    namespace = config.push_to.split("/")[0]
    try:
        api = HfApi()
        collection = api.create_collection(f"hfdistac run: {report['name']}"[:60], namespace=namespace,
                                           private=config.private, exists_ok=True)
        for repo in repos:
            api.add_collection_item(collection.slug, item_id=repo, item_type="model", exists_ok=True)
        return collection.url
    except Exception as e:  # noqa: BLE001 - collections are a convenience: the repos are already pushed
        logger.warning("the Hub at this endpoint did not create a collection of the run's repos (%s); the cards "
                       "link each other", str(e).splitlines()[0] if str(e) else type(e).__name__)
        return None
