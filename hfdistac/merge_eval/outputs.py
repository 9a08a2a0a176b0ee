"""Stage 7 of a merge: the results table, the output directory (one per method) and the merged model's card.

Each method's directory holds the merged vision tower (``config.json`` + ``model.safetensors`` with provenance
metadata, and the base's ``preprocessor_config.json``), ``report.json``, ``results.md``, the resolved
``recipe.yaml`` and ``hfdistac_config.json``, the calibrated heads (``--calibrate``), SAMerging's learned coefficients, and a README model card. Everything is
written into a temporary sibling and renamed into place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .config import MergeConfig


def results_table(report: dict) -> str:
    """The paper-style table: zero-shot, individual, then each method (accuracy, mean, mean normalised)."""
    from ..tables import table

    names = report["task_names"]
    headers = ["method", "alpha", *names, "mean acc", "mean norm. acc"]
    rows = []
    zs, ind = report.get("zero_shot"), report.get("individual")
    if zs:
        rows.append(["zero-shot", None, *[zs["accuracy"][n] for n in names], zs["mean_accuracy"],
                     zs.get("mean_normalized_accuracy")])
    if ind:
        rows.append(["individual", None, *[ind["accuracy"][n] for n in names], ind["mean_accuracy"], 100.0])
    for r in report["results"]:
        if "tasks" not in r:
            continue
        accs = {t["name"]: t["accuracy"] for t in r["tasks"]}
        rows.append([r["pretty_name"], r["alpha"], *[accs[n] for n in names], r["mean_accuracy"],
                     r["mean_normalized_accuracy"]])
    text = table(headers, rows)
    cal = [r for r in report["results"] if "temperatures" in r]
    if cal:
        text += "\n\n" + table(["method", "mean ECE before", "mean ECE after"],
                               [[r["pretty_name"], r["mean_ece_before"], r["mean_ece_after"]] for r in cal])
    return text


class OutputWriter:
    """Writes a merge's outputs as it goes: each method's directory right after that method is evaluated (so
    its merged task vector can be freed before the next method runs), the top-level files at the end; all in one
    temporary directory renamed into place when the run succeeds (:func:`~hfdistac.outputs.atomic_output_dir`).

    Args:
        config: The run's :class:`MergeConfig`; nothing is written without ``config.output``.
        recipe: The resolved recipe.
        base: The recipe's base model (config, reference, revision).
        tasks: The evaluation tasks (their heads are saved calibrated with ``--calibrate``).
        sources: The task vectors' provenance.
    """

    def __init__(self, config: MergeConfig, recipe, base, tasks, sources):
        self.config, self.recipe, self.base, self.tasks, self.sources = config, recipe, base, tasks, sources
        self.many = config.many
        self._context = None
        self.root: Path | None = None

    def __enter__(self) -> OutputWriter:
        from ..outputs import atomic_output_dir

        if self.config.output:
            self._context = atomic_output_dir(self.config.output, self.config.overwrite)
            self.root = self._context.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        return bool(self._context is not None and self._context.__exit__(*exc))

    def method(self, report: dict, res: dict, weights: Mapping[str, torch.Tensor], learned: dict | None) -> None:
        """One method's directory: merged tower, report, table, recipe, config, calibrated heads, card."""
        import yaml

        from ..checkpoints import save_full_clip, save_vision_checkpoint
        from ..heads import Head, save_head
        from ..outputs import write_json

        if self.root is None:
            return
        d = self.root / res["method"] if self.many else self.root
        d.mkdir(parents=True, exist_ok=True)
        meta = {"base": self.base.resolved.reference, "base_revision": self.base.resolved.revision,
                "method": res["method"], "alpha": repr(res["alpha"]), "params": json.dumps(res["params"], default=str),
                "sources": json.dumps([{"name": s.name, "reference": s.reference, "revision": s.revision}
                                       for s in self.sources])}
        if self.config.full_clip:
            save_full_clip(d, self.base.resolved.local_dir, weights, meta)
        else:
            save_vision_checkpoint(d, self.base.vision_config, weights, meta, self.base.image_processor)
        if learned:
            write_coefficients(d, learned, title=f"{res['pretty_name']} coefficients")
        single = {k: v for k, v in report.items() if k not in ("results", "table_markdown")}
        single.update(res)
        single["results"] = [res]
        single["table_markdown"] = results_table(single) if "tasks" in res else ""
        write_json(d / "report.json", single)
        (d / "results.md").write_text(single["table_markdown"] + "\n")
        (d / "recipe.yaml").write_text(yaml.safe_dump(self.recipe.to_dict(), sort_keys=False))
        write_json(d / "hfdistac_config.json", self.config.to_dict())
        if "temperatures" in res:
            for task in self.tasks:
                h: Head = task.head
                calibrated = Head(h.weight, h.projection, h.logit_scale, h.class_names, h.templates,
                                  res["temperatures"][task.name])
                (d / "heads").mkdir(exist_ok=True)
                save_head(calibrated, d / "heads" / f"{task.name}.safetensors")
        repo = self.config.push_to or Path(self.config.output).name
        (d / "README.md").write_text(merge_card(single, repo=repo, subfolder=res["method"] if self.many else None,
                                                 full_clip=self.config.full_clip))

    def finish(self, report: dict) -> None:
        """The top-level report, table, recipe and config of a ``--method all`` run."""
        import yaml

        from ..outputs import write_json

        if self.root is None or not self.many:
            return
        write_json(self.root / "report.json", dict(report))
        (self.root / "results.md").write_text(report["table_markdown"] + "\n")
        (self.root / "recipe.yaml").write_text(yaml.safe_dump(self.recipe.to_dict(), sort_keys=False))
        write_json(self.root / "hfdistac_config.json", self.config.to_dict())
        repo = self.config.push_to or Path(self.config.output).name
        (self.root / "README.md").write_text(merge_overview_card(report, repo=repo, full_clip=self.config.full_clip))


def merge_card(report: dict, repo: str | None = None, subfolder: str | None = None, full_clip: bool = False) -> str:
    """The README model card of a merged model, rendered from ``templates/merge_card.md.j2``.

    Metadata: ``base_model`` = the source models on the Hub, ``base_model_relation: merge``, Hub datasets,
    the license the sources agree on, tags, and a ``model-index`` with each task's test accuracy. Local
    models and datasets are named by their folder name only.

    Args:
        report: One method's report.
        repo: How "How to use" names the model (the ``--push-to`` repo or the output folder's name).
        subfolder: The method's folder inside it (``--method all``).
        full_clip: The output is a full ``CLIPModel`` (``--full-clip``).
    """
    import yaml

    from ..cards import accuracy_result, is_hub_id, public_name, render_card
    from ..merging import MERGE_METHODS

    res = report["results"][0]
    method = MERGE_METHODS[res["method"]]
    task_rows = {r["name"]: r for r in res.get("tasks", [])}
    evals = [accuracy_result(t.get("dataset") or t["name"], None, t.get("test_split", "test"),
                             task_rows[t["name"]]["accuracy"], label=t["name"], config=t.get("dataset_config"))
             for t in report["recipe"]["tasks"] if t["name"] in task_rows]
    sources = [s["reference"] for s in report["sources"]]
    model_name = f"{report['recipe'].get('name', 'merge')}-{res['method']}"
    card_data = dict(
        **_lineage_metadata(report), library_name="transformers",
        pipeline_tag="zero-shot-image-classification" if full_clip else "image-feature-extraction",
        tags=["hfdistac", res["method"], "task-vector", "model-merging", "clip"], model_name=model_name,
        eval_results=evals or None,
        hfdistac={k: v for k, v in {"method": res["method"], "base": report["base"] if is_hub_id(report["base"]) else
                                    None, "base_revision": report["base_revision"], "alpha": res["alpha"]}.items()
                  if v is not None})
    calibration = [t for t in res.get("tasks", []) if "temperature" in t]
    shown_sources = [{**s, "reference": public_name(s["reference"]), "is_local": not is_hub_id(s["reference"])}
                     for s in report["sources"]]
    return render_card("merge_card.md.j2", {
        "card_data": card_data, "title": f"{method.pretty_name} merge of {len(sources)} CLIP task vectors",
        "sources": shown_sources, "method": method, "base": public_name(report["base"]),
        "base_is_local": not is_hub_id(report["base"]),
        "base_revision": report["base_revision"], "alpha": res["alpha"], "alpha_selection": res["alpha_selection"],
        "fixed_alpha": res["alpha_selection"].startswith("given"), "repo": repo or model_name, "subfolder": subfolder, "full_clip": full_clip,
        "table": report.get("table_markdown") or "_not evaluated (merged without data)_",
        "calibration": calibration, "params": json.dumps(res["params"], default=str),
        "coefficients": _coefficient_rows(res),
        "recipe_yaml": yaml.safe_dump(_public_recipe(report["recipe"]), sort_keys=False).strip()})


def _lineage_metadata(report: dict) -> dict:
    """A merge card's lineage metadata: the Hub sources (``base_model``, relation ``merge``), the license they agree
    on, and the Hub datasets (local ones never go into metadata)."""
    from ..cards import inherited_license, is_hub_id

    hub_sources = [s["reference"].split("@")[0] for s in report["sources"] if is_hub_id(s["reference"])]
    datasets = [t["dataset"] for t in report["recipe"]["tasks"] if t.get("dataset")]
    return {"base_model": hub_sources or None, "base_model_relation": "merge" if hub_sources else None,
            "license": inherited_license([{"license": s.get("license")} for s in report["sources"]]),
            "datasets": list(dict.fromkeys(d.split("@")[0] for d in datasets if is_hub_id(d))) or None}


def merge_overview_card(report: dict, repo: str, full_clip: bool = False) -> str:
    """The README card at the root of a several-method merge (``--method all`` or a list): every method's row, and
    how to load each method's folder. Metadata as :func:`merge_card`'s, without a ``model-index`` (each method's
    folder carries its own)."""
    import yaml

    from ..cards import public_name, render_card
    from ..merging import MERGE_METHODS

    methods = [{"name": r["method"], "pretty_name": MERGE_METHODS[r["method"]].pretty_name, "alpha": r["alpha"]}
               for r in report["results"]]
    card_data = dict(**_lineage_metadata(report), library_name="transformers",
                     tags=["hfdistac", "task-vector", "model-merging", "clip", *(m["name"] for m in methods)])
    alphas = {r.get("alpha_selection", "") for r in report["results"]}
    return render_card("merge_overview_card.md.j2", {
        "card_data": card_data, "title": f"{report['recipe'].get('name', 'merge')}: {len(methods)} merges of "
                                         f"{len(report['sources'])} CLIP task vectors",
        "sources": report["sources"], "methods": methods, "base": public_name(report["base"]), "repo": repo,
        "full_clip": full_clip, "alpha_note": "; ".join(sorted(a for a in alphas if a)) or "see each folder",
        "table": report.get("table_markdown") or "_not evaluated (merged without data)_",
        "recipe_yaml": yaml.safe_dump(_public_recipe(report["recipe"]), sort_keys=False).strip()})


def _public_recipe(recipe: Mapping[str, Any]) -> dict:
    """The recipe as a card shows it: local models and datasets by folder name."""
    from ..cards import public_name

    out = dict(recipe)
    if out.get("base"):
        out["base"] = public_name(out["base"])
    out["tasks"] = [{k: public_name(v) if k in ("model", "dataset", "normalizer") and isinstance(v, str) else v
                     for k, v in t.items()} for t in recipe.get("tasks", [])]
    return out


def write_coefficients(directory: Path, result: Mapping[str, Any], title: str = "Learned coefficients") -> None:
    """Write ``coefficients.safetensors`` (``[T, L]``; metadata: task and parameter names in order, params)
    and the heat-map ``coefficients.png`` into ``directory``."""
    from ..plots import coefficients_heatmap
    from ..tensor_files import save_safetensors

    coef = result["coefficients"].float().contiguous()
    save_safetensors({"coefficients": coef}, Path(directory) / "coefficients.safetensors", {
        "format": "pt", "task_names": json.dumps(list(result["task_names"])),
        "parameter_names": json.dumps(list(result["parameter_names"])),
        "params": json.dumps(result.get("params", {}), default=str)})
    coefficients_heatmap(coef, result["task_names"], result["parameter_names"],
                         Path(directory) / "coefficients.png", title=title)


def _coefficient_rows(res: Mapping[str, Any]) -> dict[str, Any] | None:
    """Card context of the learned coefficients (``None`` for methods that learn none)."""
    stats = res.get("coefficient_stats")
    if not stats:
        return None
    hist = res.get("loss_history") or [float("nan")]
    return {"rows": [{"name": n, **v} for n, v in stats.items()], "loss_first": hist[0], "loss_last": hist[-1],
            "steps": res["params"].get("steps"), "objective": res["params"].get("objective"),
            "time_s": res.get("time_s")}
