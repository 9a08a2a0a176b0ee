"""``hfdistac demo``: the paper's Table 1 in miniature, offline, on the built-in example suite.

The paper's protocol (DisTaC, arXiv 2508.01148, §3.1 and §5.1), at the suite's size:

1. Build (or reuse) the example suite: a tiny CLIP pretrained on synthetic captioned images, N tasks, and per
   task a standard, a 10×-learning-rate and a label-smoothed fine-tune.
2. **Norm mismatch, once per task**: that task's 10×-learning-rate model swapped into the standard ones,
   ``inspect``'ed, the flagged vector conditioned with DisTaC as ``inspect`` recommends (κ to the mean norm
   of the others, temperatures (10, 10)), every method merged with and without it. The scenario's numbers
   are the mean over those runs (``norm_mismatch_runs`` holds each one).
3. **Low confidence**: every model label-smoothed; each flagged one sharpened (κ = 1, (1, 10)).
4. Every scenario is normalised by its own source models (the paper's "Individual" row differs per
   scenario); a "+ DisTaC" scenario by the models it conditioned. α is chosen on the suite's ``holdout``
   split (images no model was fine-tuned on), TIES keeps the paper-equivalent density
   (:func:`paper_equivalent_density`), merges are calibrated after merging.
5. A κ sweep on the suite's own norm-mismatch recipe (naive rescaling, task arithmetic): shrinking the long
   vector vs stretching the short ones (the paper's Figure 3 question).

Everything lands in one directory, each step's output with its report, card and plots; the final table
(``table1.md``, beside the paper's ViT-B/32 numbers) is written as Markdown and JSON (``demo.json``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .configs import check_fields
from .configs import help_field as _h
from .errors import InputError

logger = logging.getLogger(__name__)

SCENARIO_NAMES = ["original", "norm mismatch", "norm mismatch + DisTaC", "low confidence", "low confidence + DisTaC"]

#: The DisTaC paper's Table 1, ViT-B/32, mean normalised accuracy (%). Zero-shot: ≈ 52.6 (its absolute
#: mean over the individual models' mean; the paper does not print a normalised zero-shot row).
PAPER_TABLE1 = {
    "task_arithmetic": [78.0, 71.8, 78.2, 58.3, 72.2],
    "ties": [82.0, 66.4, 81.0, 62.0, 77.9],
    "consensus": [82.8, 77.0, 82.2, 62.0, 76.5],
    "tsvm": [92.4, 80.2, 91.8, 68.4, 91.8],
}
PAPER_ZERO_SHOT = 52.6
#: The paper's TIES keeps 10 % of the whole CLIP vector, text tower (whose task vector is zero) included.
PAPER_TIES_FRACTION = 0.1


@dataclass
class DemoConfig:
    """``hfdistac demo``: diagnose, condition, merge and compare on the example suite, offline."""

    directory: str = field(default="hfdistac-demo", metadata=_h(
        "where everything is written (the example suite is built inside unless --suite is given)",
        positional=True, nargs="?", metavar="DIR"))
    suite: str | None = field(default=None, metadata=_h(
        "use this existing, complete example suite as it is (default: build or reuse DIR/example-suite)",
        metavar="DIR"))
    tasks: int = field(default=8, metadata=_h("number of tasks when building the suite", ge=2, le=8))
    seed: int = field(default=0, metadata=_h("seed of the suite", ge=0))
    condition_steps: int = field(default=500, metadata=_h("DisTaC steps per conditioned model (the paper's 500)",
                                                          ge=1))
    condition_batch_size: int = field(default=128, metadata=_h("DisTaC global batch size (the paper's 128)", ge=1))
    condition_lr: float = field(default=3e-4, metadata=_h(
        "DisTaC learning rate: the suite's fine-tuning rate, as the paper uses its fine-tuning rate (1e-5 for "
        "ViT-B/32)", gt=0, le=1))
    methods: list[str] | None = field(default=None, metadata=_h(
        "merge methods to compare (default: the paper's Table 1: task_arithmetic ties consensus tsvm; any "
        "method of `hfdistac merge --method all` may be named)"))
    mismatch_tasks: list[str] | None = field(default=None, metadata=_h(
        "tasks whose 10x-learning-rate model is swapped in, one norm-mismatch run each (default: every task, "
        "as in the paper)"))
    kappa_grid: list[float] | None = field(default=None, metadata=_h(
        "rescaling factors of the kappa sweep, as multiples of the norm-matching kappa (default 0.25 ... 4)",
        gt=0, le=100))
    progress: bool = field(default=True, metadata=_h("show progress bars"))
    overwrite: bool = field(default=False, metadata=_h("redo every step even if its output exists"))

    def __post_init__(self) -> None:
        check_fields(self)
        valid = _all_methods()
        unknown = [m for m in self.methods or () if m not in valid]
        if unknown:
            raise InputError(f"unknown --methods {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}",
                             "the demo compares the methods of `hfdistac merge --method all` (SAMerging: "
                             "`hfdistac merge --method samerging`)")

    def to_dict(self) -> dict:
        return asdict(self)


def _all_methods() -> list[str]:
    from .merge_eval.config import NOT_IN_ALL
    from .merging import MERGE_METHODS

    return [m for m in MERGE_METHODS if m not in NOT_IN_ALL]


def paper_equivalent_density(base) -> dict:
    """TIES density over the vision tower equivalent to the paper's 10 % of the whole CLIP model.

    The paper's TIES (through the TSV-M / Consensus code) flattens the *whole* CLIP state dict, whose text
    tower's task vector is zero, and keeps its top 10 %: all of them vision entries. Over the vision tower
    that is ``0.1 · N_CLIP / N_vision`` (0.172 for ViT-B/32: 151.3M / 87.8M parameters).

    Args:
        base: A ``CLIPModel`` directory (the suite's ``base``) or its ``CLIPConfig``.

    Returns:
        ``{"density", "clip_parameters", "vision_parameters"}``.
    """
    import torch
    from transformers import CLIPConfig, CLIPModel

    config = base if isinstance(base, CLIPConfig) else CLIPConfig.from_pretrained(base)
    with torch.device("meta"):
        model = CLIPModel(config)
    total = sum(p.numel() for p in model.parameters())
    # open_clip's image encoder, which the paper fine-tunes, includes the projection
    vision = sum(p.numel() for m in (model.vision_model, model.visual_projection) for p in m.parameters())
    return {"density": round(min(1.0, PAPER_TIES_FRACTION * total / vision), 4), "clip_parameters": total,
            "vision_parameters": vision}


def _write_recipe(recipe_path: Path, replacements: dict[str, str], out: Path, name: str, description: str,
                  keep_normalizer: bool) -> Path:
    """A copy of a recipe with some tasks' models replaced (by absolute paths).

    ``keep_normalizer``: the replaced task keeps its former model as normaliser (a "+ DisTaC" scenario is
    normalised by the models it conditioned); otherwise the new model is its own normaliser (the scenario's
    own source models, as in the paper).
    """
    from .recipe import load_recipe

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
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(d, sort_keys=False))
    return out


def _recipe_with(recipe_path: Path, replacements: dict[str, str], out: Path, name: str) -> Path:
    """A recipe's conditioned copy: replaced tasks keep their former model as normaliser."""
    from .recipe import load_recipe

    desc = f"{load_recipe(recipe_path).description} (conditioned with DisTaC)".strip()
    return _write_recipe(recipe_path, replacements, out, name, desc, keep_normalizer=True)


def _diagnose(recipe: Path, out: Path, config: DemoConfig) -> dict:
    from .configs import InspectConfig
    from .diagnosis import run_inspect

    if (out / "report.json").is_file() and not config.overwrite:
        return json.loads((out / "report.json").read_text())
    return run_inspect(InspectConfig(models=[str(recipe)], output=str(out), overwrite=True,
                                     progress=config.progress, limit=256)).to_dict()


def _condition_flagged(diagnosis: dict, flag: str, kind: str, root: Path, scenario: str,
                       config: DemoConfig) -> tuple[dict[str, str], list[dict]]:
    """Condition every model ``inspect`` flagged with ``flag`` as it recommends; returns replacements, reports."""
    from .conditioning import ConditionConfig, run_condition

    replacements, reports = {}, []
    for m in diagnosis["models"]:
        if flag not in m["flags"]:
            continue
        rec = m["recommendation"]
        out = root / "conditioned" / Path(m["reference"]).name
        if not (out / "report.json").is_file() or config.overwrite:
            run_condition(ConditionConfig(
                model=m["reference"], base=diagnosis["base"], data=m.get("dataset"), preset=kind,
                target_norm=rec.get("target_norm") if kind == "norm" else None, steps=config.condition_steps,
                batch_size=config.condition_batch_size, lr=config.condition_lr, output=str(out), overwrite=True,
                progress=config.progress, eval_limit=256))
        report = json.loads((out / "report.json").read_text())
        reports.append({"scenario": scenario, "task": m["name"], "output": str(out), **{
            k: report.get(k) for k in ("kappa", "target_norm", "norm_before", "norm_after", "entropy_before",
                                       "entropy_after", "accuracy_before", "accuracy_rescaled_only",
                                       "accuracy_after")}})
        replacements[m["name"]] = str(out)
    return replacements, reports


def _merge_scenario(recipe: Path, out: Path, methods: list[str], density: float, config: DemoConfig) -> dict:
    """Merge one scenario with every method; its table column (methods + zero-shot + individual)."""
    from .merge_eval import MergeConfig, run_merge

    if (out / "report.json").is_file() and not config.overwrite:
        report = json.loads((out / "report.json").read_text())
    else:
        report = run_merge(MergeConfig(recipe=str(recipe), method=",".join(methods),
                                       density=density, calibrate=True, output=str(out), overwrite=True,
                                       progress=config.progress, val_limit=0, test_limit=0))
    column = {r["method"]: {"mean_accuracy": r["mean_accuracy"],
                            "mean_normalized_accuracy": r["mean_normalized_accuracy"], "alpha": r["alpha"],
                            "mean_ece_before": r.get("mean_ece_before"), "mean_ece_after": r.get("mean_ece_after")}
              for r in report["results"] if r["method"] in methods}
    column["zero-shot"] = {"mean_accuracy": report["zero_shot"]["mean_accuracy"],
                           "mean_normalized_accuracy": report["zero_shot"]["mean_normalized_accuracy"]}
    column["individual"] = {"mean_accuracy": report["individual"]["mean_accuracy"], "mean_normalized_accuracy": 100.0}
    return column


def _mean_column(columns: list[dict]) -> dict:
    """The mean over runs of each row's numbers (α kept per run, as ``alpha_per_run``)."""
    import numpy as np

    out: dict[str, dict] = {}
    for row in columns[0]:
        cells = [c[row] for c in columns if row in c]
        mean = {}
        for key in cells[0]:
            values = [c.get(key) for c in cells]
            if key == "alpha":
                mean["alpha_per_run"] = values
            elif all(isinstance(v, (int, float)) for v in values):
                mean[key] = round(float(np.mean(values)), 4)
        out[row] = mean
    return out


def _load_suite(config: DemoConfig, root: Path) -> tuple[Path, dict]:
    from .example_suite import build_example_suite, suite_status

    if not config.suite:
        suite_dir = root / "example-suite"
        return suite_dir, build_example_suite(suite_dir, num_tasks=config.tasks, seed=config.seed,
                                              progress=config.progress).as_dict()
    # A suite given by the user is used as it is: never rebuilt (that would delete their directory).
    suite_dir = Path(config.suite)
    if suite_status(suite_dir) != "complete":
        raise InputError(f"--suite {config.suite!r} is not a complete example suite "
                         f"(status: {suite_status(suite_dir)})",
                         "build one with `hfdistac example-suite DIR`, or drop --suite to build one inside DIR")
    return suite_dir, json.loads((suite_dir / "suite.json").read_text())


def _norm_mismatch_runs(suite_dir: Path, root: Path, tasks: list[str], methods: list[str], density: float,
                        config: DemoConfig, diagnoses: dict, reports: list) -> list[dict]:
    """One run per task: its 10x-learning-rate model swapped in, inspected, DisTaC'd, merged with and without."""
    from .diagnosis import NORM_MISMATCH

    original = suite_dir / "recipes" / "original.yaml"
    runs = []
    for task in tasks:
        slug = f"norm-mismatch-{task}"
        recipe = _write_recipe(original, {task: str(suite_dir / "models" / f"{task}-highlr")},
                               root / "recipes" / f"{slug}.yaml", slug,
                               f"'{task}' replaced by its 10x-learning-rate model (norm mismatch)", keep_normalizer=False)
        diagnoses[slug] = _diagnose(recipe, root / "inspect" / slug, config)
        replacements, conditioned = _condition_flagged(diagnoses[slug], NORM_MISMATCH, "norm", root, slug, config)
        reports.extend(conditioned)
        if not replacements:
            logger.warning("inspect flagged no norm mismatch in %s: the suite does not show the paper's condition",
                           recipe)
        distac = _recipe_with(recipe, replacements, root / "recipes" / f"{slug}-distac.yaml", f"{slug}-distac")
        runs.append({"task": task, "flagged": sorted(replacements), "table": {
            "norm mismatch": _merge_scenario(recipe, root / "merges" / slug, methods, density, config),
            "norm mismatch + DisTaC": _merge_scenario(distac, root / "merges" / f"{slug}-distac", methods, density,
                                                      config)}})
    return runs


def run_demo(config: DemoConfig) -> dict:
    """Run the whole demo (library form of ``hfdistac demo``) and return its summary."""
    from .diagnosis import LOW_CONFIDENCE
    from .outputs import write_json

    t0 = time.perf_counter()
    root = Path(config.directory).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    suite_dir, suite_figures = _load_suite(config, root)
    timings["example suite"] = round(time.perf_counter() - start, 1)
    recipes = suite_dir / "recipes"
    task_names = list(suite_figures["task_names"])
    unknown = [t for t in config.mismatch_tasks or () if t not in task_names]
    if unknown:
        raise InputError(f"--mismatch-tasks {', '.join(map(repr, unknown))} not in the suite",
                         f"the suite's tasks: {', '.join(task_names)}")
    methods = config.methods or list(PAPER_TABLE1)
    ties = paper_equivalent_density(suite_dir / "base")
    diagnoses: dict[str, dict] = {}
    reports: list[dict] = []

    start = time.perf_counter()
    table: dict[str, dict] = {"original": _merge_scenario(recipes / "original.yaml", root / "merges" / "original",
                                                          methods, ties["density"], config)}
    runs = _norm_mismatch_runs(suite_dir, root, config.mismatch_tasks or task_names, methods, ties["density"],
                               config, diagnoses, reports)
    for scenario in ("norm mismatch", "norm mismatch + DisTaC"):
        table[scenario] = _mean_column([r["table"][scenario] for r in runs])
    timings["norm mismatch runs"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    diagnoses["low-confidence"] = _diagnose(recipes / "low-confidence.yaml", root / "inspect" / "low-confidence",
                                            config)
    replacements, conditioned = _condition_flagged(diagnoses["low-confidence"], LOW_CONFIDENCE, "confidence", root,
                                                   "low-confidence", config)
    reports.extend(conditioned)
    distac = _recipe_with(recipes / "low-confidence.yaml", replacements,
                          root / "recipes" / "low-confidence-distac.yaml", "low-confidence-distac")
    table["low confidence"] = _merge_scenario(recipes / "low-confidence.yaml", root / "merges" / "low-confidence",
                                              methods, ties["density"], config)
    table["low confidence + DisTaC"] = _merge_scenario(distac, root / "merges" / "low-confidence-distac", methods,
                                                       ties["density"], config)
    timings["low confidence"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    diagnoses["norm-mismatch"] = _diagnose(recipes / "norm-mismatch.yaml", root / "inspect" / "norm-mismatch", config)
    sweep = kappa_sweep(root, recipes / "norm-mismatch.yaml", diagnoses["norm-mismatch"], config) \
        if any("norm_mismatch" in m["flags"] for m in diagnoses["norm-mismatch"]["models"]) else []
    timings["kappa sweep"] = round(time.perf_counter() - start, 1)

    summary = {"suite": str(suite_dir), "suite_summary": suite_figures, "diagnoses": diagnoses,
               "conditioned": reports, "table": table, "norm_mismatch_runs": runs, "methods": methods,
               "ties_density": ties, "kappa_sweep": sweep, "timings_s": timings,
               "total_s": round(time.perf_counter() - t0, 1), "config": config.to_dict()}
    summary["table_markdown"] = table1_markdown(table, methods, runs=len(runs), ties=ties)
    write_json(root / "demo.json", summary)
    (root / "table1.md").write_text(summary["table_markdown"] + "\n")
    return summary


def kappa_sweep(root: Path, recipe_path: Path, diagnosis: dict, config: DemoConfig) -> list[dict]:
    """Merged task-arithmetic accuracy after naive rescaling: shrink the long vector, or stretch the others.

    No distillation here: the question is which direction of norm matching merging prefers. With κ* the
    norm-matching factor of the long vector (mean norm of the others / its norm) and a multiple ``m``:
    *shrink long* scales the long vector by m·κ* (m = 1: it has the others' mean norm); *stretch others* scales
    every other vector by 1/(m·κ*) (m = 1: their mean norm equals the long one's). Both match norms at m = 1;
    they differ in how far from θ₀ the merge lands. α is chosen on validation as everywhere.
    """
    from .checkpoints import load_base
    from .merge_eval import MergeConfig, run_merge, task_vector_for
    from .plots import sweep_plot
    from .task_vectors import save_task_vector

    long = next(m for m in diagnosis["models"] if "norm_mismatch" in m["flags"])
    kappa_star = long["recommendation"]["kappa"]
    grid = config.kappa_grid or [0.25, 0.5, 1.0, 2.0, 4.0]
    base = load_base(diagnosis["base"])
    theta0 = base.weights
    from .recipe import load_recipe

    recipe = load_recipe(recipe_path)
    work = root / "kappa-sweep"
    rows = []
    for mode in ("shrink long", "stretch others"):
        for mult in grid:
            replacements = {}
            for t in recipe.tasks:
                if mode == "shrink long" and t.name != long["name"]:
                    continue
                if mode == "stretch others" and t.name == long["name"]:
                    continue
                factor = kappa_star * mult if mode == "shrink long" else 1.0 / (kappa_star * mult)
                d = work / f"{mode.split()[0]}-{mult:g}" / t.name
                if not (d / "task_vector.safetensors").is_file():
                    tv, _ = task_vector_for(t.model, base, d.parent, f"_{t.name}_raw", theta0)
                    d.mkdir(parents=True, exist_ok=True)
                    save_task_vector(tv.scaled(factor), d / "task_vector.safetensors",
                                     {"base": base.resolved.reference, "base_revision": base.resolved.revision,
                                      "method": "rescale", "scale": repr(factor)})
                replacements[t.name] = str(d)
            r_path = _recipe_with(recipe_path, replacements, work / f"{mode.split()[0]}-{mult:g}.yaml",
                                  f"kappa-{mode.split()[0]}-{mult:g}")
            report = run_merge(MergeConfig(recipe=str(r_path), method="task_arithmetic", progress=False,
                                           val_limit=0, test_limit=0))
            r = report["results"][0]
            rows.append({"mode": mode, "multiple": mult, "kappa": kappa_star * mult if mode == "shrink long"
                         else 1.0 / (kappa_star * mult), "alpha": r["alpha"], "mean_accuracy": r["mean_accuracy"],
                         "mean_normalized_accuracy": r["mean_normalized_accuracy"]})
    sweep_plot(rows, root / "kappa_sweep.png")
    return rows


def recovery(table: dict, method: str, harm: str) -> dict | None:
    """Drop and recovered share of one harm (``"norm mismatch"`` or ``"low confidence"``) for one method.

    drop = original − harmed; recovered = (harmed + DisTaC − harmed) / drop, in normalised points (%).
    """
    try:
        orig, bad, fixed = (table[s][method]["mean_normalized_accuracy"] for s in
                            ("original", harm, f"{harm} + DisTaC"))
    except KeyError:
        return None
    drop = orig - bad
    return {"drop": round(drop, 2), "recovered_points": round(fixed - bad, 2),
            "recovered_percent": round(100.0 * (fixed - bad) / drop, 1) if abs(drop) > 1e-9 else None}


def _paper_recovery(method: str, harm: str) -> dict | None:
    if method not in PAPER_TABLE1:
        return None
    p = dict(zip(SCENARIO_NAMES, PAPER_TABLE1[method], strict=True))
    drop = p["original"] - p[harm]
    return {"drop": round(drop, 1), "recovered_percent": round(100.0 * (p[f"{harm} + DisTaC"] - p[harm]) / drop)}


def table1_markdown(table: dict, methods: list[str], runs: int = 1, ties: dict | None = None) -> str:
    """Table 1 in miniature beside the paper's (ViT-B/32): cells = mean normalised accuracy % (ours: mean
    absolute accuracy in brackets), then each harm's drop and the share DisTaC recovers."""
    from .merging import MERGE_METHODS
    from .tables import table as md_table

    scenarios = [s for s in SCENARIO_NAMES if s in table]
    rows = []
    for key in ["zero-shot", "individual", *methods]:
        label = MERGE_METHODS[key].pretty_name if key in MERGE_METHODS else key
        paper = PAPER_TABLE1.get(key) or ([PAPER_ZERO_SHOT] * 5 if key == "zero-shot" else
                                          [100.0] * 5 if key == "individual" else None)
        cells = []
        for s in scenarios:
            c = table[s].get(key)
            ours = f"{c['mean_normalized_accuracy']:.1f} ({c['mean_accuracy']:.1f})" if c else "-"
            ref = "" if paper is None else f" · {'≈' if key == 'zero-shot' else ''}{paper[SCENARIO_NAMES.index(s)]:.1f}"
            cells.append(ours + ref)
        rows.append([label, *cells])
    lines = ["Mean normalised accuracy % (mean absolute accuracy %) over the suite's tasks, test split, "
             "· the paper's Table 1 (ViT-B/32, normalised) where it has the method. Each scenario is normalised "
             "by its own source models. alpha chosen on the suite's holdout split (never fine-tuned on); "
             f"norm mismatch: mean of {runs} run(s), each task's 10x-learning-rate model in turn."]
    if ties:
        lines.append(f"TIES density {ties['density']:g} of the vision entries = the paper's 10 % of the whole CLIP "
                     f"model ({ties['clip_parameters']:,} parameters, {ties['vision_parameters']:,} vision).")
    lines += ["", md_table(["method", *scenarios], rows, align="l" + "r" * len(scenarios)), ""]
    rec_rows = []
    for key in methods:
        cells = []
        for harm in ("norm mismatch", "low confidence"):
            ours, paper = recovery(table, key, harm), _paper_recovery(key, harm)
            cells.append("-" if ours is None else f"{ours['drop']:.1f}" + (f" · {paper['drop']:.1f}" if paper else ""))
            pct = None if ours is None else ours["recovered_percent"]
            cells.append(("-" if pct is None else f"{pct:.0f} %") + (f" · {paper['recovered_percent']} %" if paper
                                                                      else ""))
        rec_rows.append([MERGE_METHODS[key].pretty_name, *cells])
    lines += ["Drop = original − harmed (normalised points); recovered = share of the drop that DisTaC wins back "
              "(ours · paper).", "",
              md_table(["method", "norm-mismatch drop", "recovered", "low-confidence drop", "recovered"], rec_rows)]
    return "\n".join(lines)
