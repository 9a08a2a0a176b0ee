"""``hfdistac example-suite DIR --push-to NAMESPACE``: the suite on a Hub, so the whole Hub round trip can be tried.

On disk the suite's cards name their base and dataset by relative paths (``../../base``), which mean nothing
once uploaded. Pushed, every part becomes a repo and every card names the others by Hub id:

* ``NAMESPACE/hfdistac-suite-base`` — the tiny CLIP base (model repo);
* ``NAMESPACE/hfdistac-suite-<task>`` — each task's dataset (dataset repo);
* ``NAMESPACE/hfdistac-suite-<task>[-highlr|-ls]`` — each fine-tuned model (model repo), its card's ``base_model``,
  ``datasets`` and ``hfdistac`` block naming the repos above;
* ``DIR/recipes/hub-NAMESPACE/*.yaml`` — the suite's recipes with every model and dataset by Hub id (added to the
  suite's manifest: files the suite wrote).

Each repo is one commit (:func:`hfdistac.hub.push_folder`); the local suite's own files are never changed.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import yaml

from ..errors import InputError
from .config import PUSH_PREFIX as PREFIX
from .config import check_namespace

logger = logging.getLogger(__name__)

_VARIANT_SUFFIXES = ("-highlr", "-ls")


def repo_ids(namespace: str, task_names: list[str]) -> dict[str, str]:
    """Where each part of the suite goes: ``{"base", "data/<task>", "models/<task>[-highlr|-ls]"}`` → repo id."""
    ids = {"base": f"{namespace}/{PREFIX}-base"}
    for task in task_names:
        ids[f"data/{task}"] = f"{namespace}/{PREFIX}-{task}"
        for suffix in ("", *_VARIANT_SUFFIXES):
            ids[f"models/{task}{suffix}"] = f"{namespace}/{PREFIX}-{task}{suffix}"
    return ids


def hub_model_card(text: str, base_id: str, data_id: str, task: str) -> str:
    """A suite model's card as uploaded: its relative base and dataset paths replaced by Hub ids, and
    ``base_model`` / ``datasets`` (which the Hub reads) set to them."""
    if not text.startswith("---\n"):
        raise InputError("a suite model's README has no metadata block", "rebuild the suite")
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front) or {}
    recorded = dict(meta.get("hfdistac") or {})
    recorded.update({"base": base_id, "datasets": [data_id]})
    meta = {"base_model": base_id, "base_model_relation": "finetune", "datasets": [data_id], **meta,
            "hfdistac": recorded}
    body = body.replace("`../../base` (relative to this directory)", f"`{base_id}`") \
        .replace("../../base", base_id).replace(f"../../data/{task}", data_id)
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n" + body


def _hub_recipe(path: Path, ids: dict[str, str], suite: Path) -> dict:
    """A suite recipe with every local model, normaliser, dataset and the base replaced by its repo id."""
    from ..recipe import load_recipe

    recipe = load_recipe(path).to_dict()

    def hub(ref: str | None) -> str | None:
        if ref is None:
            return None
        rel = Path(ref).resolve().relative_to(suite.resolve()).as_posix()
        return ids[rel]

    recipe["base"] = hub(recipe["base"])
    for t in recipe["tasks"]:
        for key in ("model", "normalizer", "dataset"):
            if t.get(key):
                t[key] = hub(t[key])
    recipe["description"] = f"{recipe.get('description', '')} (every model and dataset on the Hub)".strip()
    return recipe


def push_suite(directory: str | Path, namespace: str, *, private: bool = False, progress: bool = True) -> dict:
    """Upload a complete example suite as Hub repos whose cards name each other by Hub id (module docstring).

    Args:
        directory: A complete example suite.
        namespace: The Hub user or organisation the repos are created under.
        private: Create the repos private.
        progress: Show a progress bar.

    Returns:
        ``{"repos": {part: repo id}, "commits": {repo id: commit url}, "recipes": [paths of the Hub recipes]}``.

    Raises:
        InputError: not a complete suite, or a bad namespace.
        HubError: the Hub refused or kept failing (what was pushed before stays; a rerun pushes again).
    """
    from tqdm.auto import tqdm

    from ..hub import push_folder
    from .build import MARKER, _read_summary, suite_status

    suite = Path(directory).expanduser().resolve()
    if suite_status(suite) != "complete":
        raise InputError(f"{str(suite)!r} is not a complete example suite", "build it first: hfdistac example-suite DIR")
    names = list(_read_summary(suite)["task_names"])
    ids = repo_ids(check_namespace(namespace), names)
    commits: dict[str, str] = {}
    parts = ["base", *(f"data/{t}" for t in names), *(f"models/{t}{s}" for t in names for s in ("", *_VARIANT_SUFFIXES))]
    with tempfile.TemporaryDirectory(prefix="hfdistac-suite-push-") as tmp:
        for part in tqdm(parts, desc="pushing the suite", unit="repo", disable=not progress):
            folder = suite / part
            if part.startswith("models/"):  # a staged copy whose card names the other repos by Hub id
                task = next(t for t in names if part in (f"models/{t}", *(f"models/{t}{s}" for s in _VARIANT_SUFFIXES)))
                staged = Path(tmp) / part.replace("/", "_")
                shutil.copytree(folder, staged, symlinks=True)
                card = (staged / "README.md").read_text(encoding="utf-8")
                (staged / "README.md").write_text(hub_model_card(card, ids["base"], ids[f"data/{task}"], task),
                                                  encoding="utf-8")
                folder = staged
            info = push_folder(folder, ids[part], private=private, repo_type="dataset" if part.startswith("data/")
                               else "model", commit_message=f"hfdistac example suite: {part}")
            commits[ids[part]] = info["commit_url"]
    out = suite / "recipes" / f"hub-{namespace}"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted((suite / "recipes").glob("*.yaml")):
        target = out / path.name
        target.write_text(yaml.safe_dump(_hub_recipe(path, ids, suite), sort_keys=False), encoding="utf-8")
        written.append(target)
    lines = (suite / MARKER).read_text(encoding="utf-8").splitlines()
    new = [p.relative_to(suite).as_posix() for p in written if p.relative_to(suite).as_posix() not in lines]
    (suite / MARKER).write_text("\n".join([*lines, *new]) + "\n", encoding="utf-8")  # files the suite wrote
    logger.info("pushed the example suite to %d repos under %s", len(commits), namespace)
    return {"repos": ids, "commits": commits, "recipes": [str(p) for p in written]}
