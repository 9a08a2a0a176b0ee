"""The chain every multi-stage command runs: diagnose → condition what is flagged → write the conditioned recipe →
merge. One implementation, used by ``hfdistac run`` (:mod:`.run`) and by the demo's steps (:mod:`hfdistac.demo`).

Each stage writes its own output directory and records, beside its ``report.json``, the fingerprint of what
determined it (:func:`reuse_or_run`: the stage's settings and the identity of its inputs: a Hub model's commit,
a local folder's files by size and time, a recipe's text). A stage whose fingerprint is unchanged is read back
instead of run; ``overwrite`` redoes it. So a second ``run`` of the same recipe conditions and merges nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

#: The file beside a stage's report.json that holds the fingerprint it was made with.
STAGE_FILE = "hfdistac_stage.json"


def identity(reference: str | None) -> Any:
    """What identifies an input for a fingerprint: a small local file (a recipe) by its content, a local folder by
    its files' names, sizes and times, a Hub reference by the commit it resolves to (the reference itself when the
    Hub cannot be asked)."""
    if not reference:
        return None
    path = Path(str(reference)).expanduser()
    if path.is_file() and path.stat().st_size < 1 << 20:  # a recipe: its text (rewritten alike, it stays the same)
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()
                                                     and p.name != STAGE_FILE)
        return [(p.relative_to(path).as_posix() if p != path else p.name, p.stat().st_size, p.stat().st_mtime_ns)
                for p in files]
    try:
        from ..hub import resolve_model

        return resolve_model(reference).revision
    except Exception as e:  # noqa: BLE001 - the reference itself still identifies it; the stage reports the error
        logger.debug("could not resolve %s for a fingerprint: %s", reference, e)
        return reference


def fingerprint(stage: str, settings: dict[str, Any], inputs: list[str | None]) -> str:
    """A stage's fingerprint: its kind, its settings and its inputs' identities."""
    doc = json.dumps([stage, settings, [(ref, identity(ref)) for ref in inputs]], sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()


def reusable(out: Path, key: str | None, overwrite: bool) -> bool:
    """Whether the stage output ``out`` was made with fingerprint ``key`` (``None``: any) and may be read back.

    In several processes (``accelerate launch``) the main process decides for all (they then agree)."""
    from ..distributed import broadcast_values, is_main, world

    report, stage = out / "report.json", out / STAGE_FILE
    reuse = False
    if is_main() and report.is_file() and not overwrite:
        recorded = json.loads(stage.read_text()).get("key") if stage.is_file() else None
        reuse = key is None or recorded == key
        if not reuse:
            logger.info("%s: its inputs or settings changed since it was made; running it again", out)
    if world()[1] > 1:
        reuse = bool(broadcast_values([float(reuse)])[0])
    return reuse


def record(out: Path, key: str | None) -> None:
    """Record the fingerprint a stage output was made with (the main process writes it)."""
    from ..distributed import is_main

    if is_main() and key is not None and out.is_dir():
        tmp = out / f".{STAGE_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"key": key}))
        tmp.replace(out / STAGE_FILE)


def reuse_or_run(out: Path, key: str | None, overwrite: bool, run: Callable[[], Any], *,
                 collective: bool = True) -> dict:
    """The stage's ``report.json`` in ``out`` when it was made with fingerprint ``key`` (and ``overwrite`` is off),
    else ``run()`` (which writes ``out``), after which ``key`` is recorded there. ``key=None``: reuse any report.

    In several processes (``accelerate launch``) the main process decides, for all, whether the stage is reused; a
    ``collective`` stage (conditioning, merging: each process does its share) is then run by every process, any
    other (the diagnosis) by the main process alone while the others wait and read its report."""
    from ..distributed import barrier, is_main

    if reusable(out, key, overwrite):
        return json.loads((out / "report.json").read_text())
    result = run() if collective or is_main() else None
    record(out, key)
    barrier()
    return result if isinstance(result, dict) else json.loads((out / "report.json").read_text())


# --------------------------------------------------------------------------------------------- the stages
def diagnose(recipe: Path, out: Path, *, progress: bool, overwrite: bool = False, limit: int = 256) -> dict:
    """``hfdistac inspect`` of a recipe (its report, read back when its fingerprint is unchanged)."""
    from ..configs import InspectConfig
    from ..diagnosis import run_inspect
    from ..recipe import load_recipe

    r = load_recipe(recipe)
    key = fingerprint("inspect", {"limit": limit}, [str(recipe), r.base, *[t.model for t in r.tasks],
                                                     *[t.dataset for t in r.tasks]])
    return reuse_or_run(out, key, overwrite, lambda: run_inspect(InspectConfig(
        models=[str(recipe)], output=str(out), overwrite=True, progress=progress, limit=limit)).to_dict(),
        collective=False)


def flagged(diagnosis: dict, flags: str | tuple[str, ...], root: Path) -> dict[str, tuple[dict, Path]]:
    """The models ``inspect`` flagged with any of ``flags``: task name → (its diagnosis entry, where DisTaC writes
    it, ``root/conditioned/<model folder name>``)."""
    wanted = (flags,) if isinstance(flags, str) else tuple(flags)
    return {m["name"]: (m, root / "conditioned" / Path(m["reference"]).name)
            for m in diagnosis["models"] if any(f in m["flags"] for f in wanted)}


def condition_job(model: dict, base: str, kind: str, out: Path, settings: dict[str, Any], *, progress: bool
                  ) -> tuple[dict[str, Any], str]:
    """The :class:`~hfdistac.conditioning.ConditionConfig` fields of DisTaC on one flagged model as ``inspect``
    recommends (preset ``kind``; κ to the recommended target norm for ``norm``/``both``; ``settings``: steps, lr,
    ...), and the fingerprint of its output."""
    rec = model["recommendation"]
    fields = {"model": model["reference"], "base": base, "data": model.get("dataset"), "preset": kind,
              "target_norm": rec.get("target_norm") if kind in ("norm", "both") else None, **settings}
    key = fingerprint("condition", fields, [model["reference"], base, model.get("dataset")])
    return {**fields, "output": str(out), "overwrite": True, "progress": progress}, key


def condition(model: dict, base: str, kind: str, out: Path, settings: dict[str, Any], *, progress: bool,
              overwrite: bool = False) -> dict:
    """DisTaC on one flagged model (:func:`condition_job`), across every process; its report, read back when its
    fingerprint is unchanged."""
    from ..conditioning import ConditionConfig, run_condition

    fields, key = condition_job(model, base, kind, out, settings, progress=progress)
    return reuse_or_run(out, key, overwrite, lambda: run_condition(ConditionConfig(**fields)))


def write_recipe(recipe_path: Path, replacements: dict[str, str], out: Path, name: str, description: str,
                 keep_normalizer: bool) -> Path:
    """A copy of a recipe with some tasks' models replaced (by absolute paths).

    ``keep_normalizer``: the replaced task keeps its former model as normaliser (a "+ DisTaC" scenario is
    normalised by the models it conditioned); otherwise the new model is its own normaliser (the scenario's
    own source models, as in the paper).
    """
    from ..recipe import load_recipe

    recipe = load_recipe(recipe_path)
    d = recipe.to_dict()
    for t in d["tasks"]:
        if t["name"] in replacements:
            if keep_normalizer:
                t.setdefault("normalizer", t["model"])
            else:
                t.pop("normalizer", None)
            new = Path(replacements[t["name"]])
            t["model"] = str(new.resolve()) if new.exists() else str(new)  # usable from any directory
    d["name"] = name
    d["description"] = description
    from ..distributed import barrier, is_main

    if is_main():  # one process writes; the others wait for it
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        tmp.write_text(yaml.safe_dump(d, sort_keys=False))
        tmp.replace(out)
    barrier()
    return out


def recipe_with(recipe_path: Path, replacements: dict[str, str], out: Path, name: str) -> Path:
    """A recipe's conditioned copy: replaced tasks keep their former model as normaliser."""
    from ..recipe import load_recipe

    desc = f"{load_recipe(recipe_path).description} (conditioned with DisTaC)".strip()
    return write_recipe(recipe_path, replacements, out, name, desc, keep_normalizer=True)


def merge(recipe: Path, out: Path, methods: list[str], settings: dict[str, Any], *, progress: bool,
          overwrite: bool = False) -> dict:
    """``hfdistac merge`` of a recipe with ``methods`` (``settings``: further :class:`MergeConfig` fields); its
    report, read back when its fingerprint is unchanged."""
    from ..merge_eval import MergeConfig, run_merge
    from ..recipe import load_recipe

    r = load_recipe(recipe)
    fields = {"method": ",".join(methods), **settings}
    key = fingerprint("merge", fields, [str(recipe), r.base, *[t.model for t in r.tasks],
                                        *[t.normalizer for t in r.tasks], *[t.dataset for t in r.tasks]])
    return reuse_or_run(out, key, overwrite, lambda: run_merge(MergeConfig(
        recipe=str(recipe), **fields, output=str(out), overwrite=True, progress=progress)))


def scenario_column(report: dict, methods: list[str]) -> dict:
    """One table column of a merge report: each method's mean (normalised) accuracy, α and ECE, plus the
    zero-shot and individual rows."""
    column = {r["method"]: {"mean_accuracy": r["mean_accuracy"],
                            "mean_normalized_accuracy": r["mean_normalized_accuracy"], "alpha": r["alpha"],
                            "mean_ece_before": r.get("mean_ece_before"), "mean_ece_after": r.get("mean_ece_after")}
              for r in report["results"] if r["method"] in methods}
    column["zero-shot"] = {"mean_accuracy": report["zero_shot"]["mean_accuracy"],
                           "mean_normalized_accuracy": report["zero_shot"]["mean_normalized_accuracy"]}
    column["individual"] = {"mean_accuracy": report["individual"]["mean_accuracy"], "mean_normalized_accuracy": 100.0}
    return column
