"""``hfdistac demo``: the paper's Table 1 in miniature, offline, on the built-in example suite.

1. Build (or reuse) the example suite: a tiny CLIP pretrained on synthetic captioned images, N tasks, and per
   task a standard, a 10×-learning-rate and a label-smoothed fine-tune.
2. ``inspect`` the three recipes (original, norm mismatch, low confidence).
3. Condition every flagged task vector with DisTaC as ``inspect`` recommends (κ to the mean norm of the others
   with (10, 10) for norm mismatch; κ = 1 with (1, 10) for low confidence).
4. Merge with every method in five scenarios — original; norm mismatch without / with DisTaC; low confidence
   without / with DisTaC — α chosen on validation, calibrated after merging.
5. A κ sweep on the norm-mismatch scenario (naive rescaling, task arithmetic): shrinking the long vector vs
   stretching the short ones (the paper's Figure 3 question).

Everything lands in one directory, each step's output with its report, card and plots; the final table is
written as Markdown and JSON.
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

SCENARIOS = [
    ("original", "original.yaml", None),
    ("norm mismatch", "norm-mismatch.yaml", None),
    ("norm mismatch + DisTaC", "norm-mismatch.yaml", "norm"),
    ("low confidence", "low-confidence.yaml", None),
    ("low confidence + DisTaC", "low-confidence.yaml", "confidence"),
]


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
        "merge methods to compare (default: every method of `hfdistac merge --method all`)"))
    kappa_grid: list[float] | None = field(default=None, metadata=_h(
        "rescaling factors of the kappa sweep, as multiples of the norm-matching kappa (default 0.25 ... 4)",
        gt=0, le=100))
    progress: bool = field(default=True, metadata=_h("show progress bars"))
    overwrite: bool = field(default=False, metadata=_h("redo every step even if its output exists"))

    def __post_init__(self) -> None:
        from .merging import MERGE_METHODS

        check_fields(self)
        from .merge_eval.config import NOT_IN_ALL

        valid = [m for m in MERGE_METHODS if m not in NOT_IN_ALL]
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


def _recipe_with(recipe_path: Path, replacements: dict[str, str], out: Path, name: str) -> Path:
    """A copy of a recipe with some tasks' models replaced (by absolute paths); normalisers stay."""
    from .recipe import load_recipe

    recipe = load_recipe(recipe_path)
    d = recipe.to_dict()
    for t in d["tasks"]:
        if t["name"] in replacements:
            t.setdefault("normalizer", t["model"])
            t["model"] = replacements[t["name"]]
    d["name"] = name
    d["description"] = f"{recipe.description} (conditioned with DisTaC)".strip()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(d, sort_keys=False))
    return out


def run_demo(config: DemoConfig) -> dict:
    """Run the whole demo (library form of ``hfdistac demo``) and return its summary."""
    from .conditioning import ConditionConfig, run_condition
    from .diagnosis import LOW_CONFIDENCE, NORM_MISMATCH, run_inspect
    from .example_suite import build_example_suite, suite_status
    from .merge_eval import MergeConfig, run_merge
    from .outputs import write_json

    t0 = time.perf_counter()
    root = Path(config.directory).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    suite_dir = Path(config.suite) if config.suite else root / "example-suite"
    timings: dict[str, float] = {}

    def timed(name: str, start: float) -> None:
        timings[name] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    if config.suite:
        # A suite given by the user is used as it is: never rebuilt (that would delete their directory).
        if suite_status(suite_dir) != "complete":
            raise InputError(f"--suite {config.suite!r} is not a complete example suite "
                             f"(status: {suite_status(suite_dir)})",
                             "build one with `hfdistac example-suite DIR`, or drop --suite to build one inside DIR")
        suite_figures = json.loads((suite_dir / "suite.json").read_text())
    else:
        suite_figures = build_example_suite(suite_dir, num_tasks=config.tasks, seed=config.seed,
                                            progress=config.progress).as_dict()
    timed("example suite", start)
    recipes = suite_dir / "recipes"

    # --- diagnose ----------------------------------------------------------------------------------------
    from .configs import InspectConfig

    start = time.perf_counter()
    diagnoses = {}
    for name in ("norm-mismatch", "low-confidence"):
        out = root / "inspect" / name
        if out.exists() and not config.overwrite:
            diagnoses[name] = json.loads((out / "report.json").read_text())
            continue
        d = run_inspect(InspectConfig(models=[str(recipes / f"{name}.yaml")], output=str(out), overwrite=True,
                                      progress=config.progress, limit=256))
        diagnoses[name] = d.to_dict()
    timed("inspect", start)

    # --- condition the flagged task vectors as inspect recommends ------------------------------------------
    start = time.perf_counter()
    conditioned: dict[str, dict[str, str]] = {"norm": {}, "confidence": {}}
    condition_reports = []
    for name, flag, kind in (("norm-mismatch", NORM_MISMATCH, "norm"), ("low-confidence", LOW_CONFIDENCE,
                                                                         "confidence")):
        for m in diagnoses[name]["models"]:
            if flag not in m["flags"]:
                continue
            rec = m["recommendation"]
            out = root / "conditioned" / Path(m["reference"]).name
            if not (out / "report.json").is_file() or config.overwrite:
                run_condition(ConditionConfig(
                    model=m["reference"], base=diagnoses[name]["base"], data=m.get("dataset"),
                    preset=kind, target_norm=rec.get("target_norm") if kind == "norm" else None,
                    steps=config.condition_steps,
                    batch_size=config.condition_batch_size, lr=config.condition_lr, output=str(out),
                    overwrite=True, progress=config.progress, eval_limit=256))
            report = json.loads((out / "report.json").read_text())
            condition_reports.append({"scenario": name, "task": m["name"], "output": str(out), **{
                k: report.get(k) for k in ("kappa", "target_norm", "norm_before", "norm_after", "entropy_before",
                                           "entropy_after", "accuracy_before", "accuracy_rescaled_only",
                                           "accuracy_after")}})
            conditioned[kind][m["name"]] = str(out)
    timed("condition", start)
    if not conditioned["norm"]:
        logger.warning("inspect flagged no norm mismatch in %s: the suite does not show the paper's condition",
                       recipes / "norm-mismatch.yaml")

    # --- merge every scenario ---------------------------------------------------------------------------
    start = time.perf_counter()
    methods = config.methods or _all_methods()
    table: dict[str, dict] = {}
    for label, recipe_file, kind in SCENARIOS:
        recipe_path = recipes / recipe_file
        slug = label.replace(" + ", "-").replace(" ", "-").lower()
        if kind:
            recipe_path = _recipe_with(recipe_path, conditioned[kind], root / "recipes" / f"{slug}.yaml", slug)
        out = root / "merges" / slug
        if (out / "report.json").is_file() and not config.overwrite:
            report = json.loads((out / "report.json").read_text())
        else:
            report = run_merge(MergeConfig(recipe=str(recipe_path), method="all" if len(methods) > 1 else methods[0],
                                           calibrate=True, output=str(out), overwrite=True,
                                           progress=config.progress, val_limit=0, test_limit=0))
        table[label] = {r["method"]: {"mean_accuracy": r["mean_accuracy"],
                                      "mean_normalized_accuracy": r["mean_normalized_accuracy"],
                                      "alpha": r["alpha"], "mean_ece_before": r.get("mean_ece_before"),
                                      "mean_ece_after": r.get("mean_ece_after")}
                        for r in report["results"] if r["method"] in methods}
        table[label]["zero-shot"] = {"mean_accuracy": report["zero_shot"]["mean_accuracy"],
                                     "mean_normalized_accuracy": report["zero_shot"]["mean_normalized_accuracy"]}
        table[label]["individual"] = {"mean_accuracy": report["individual"]["mean_accuracy"],
                                      "mean_normalized_accuracy": 100.0}
    timed("merge", start)

    # --- kappa sweep ---------------------------------------------------------------------------------------
    start = time.perf_counter()
    sweep = kappa_sweep(root, recipes / "norm-mismatch.yaml", diagnoses["norm-mismatch"], config) \
        if conditioned["norm"] else []
    timed("kappa sweep", start)

    summary = {"suite": str(suite_dir), "suite_summary": suite_figures, "diagnoses": diagnoses,
               "conditioned": condition_reports, "table": table, "methods": methods, "kappa_sweep": sweep,
               "timings_s": timings, "total_s": round(time.perf_counter() - t0, 1), "config": config.to_dict()}
    summary["table_markdown"] = table1_markdown(table, methods)
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


def table1_markdown(table: dict, methods: list[str]) -> str:
    """Table 1 in miniature: rows = methods, columns = scenarios, cells = mean accuracy (normalised)."""
    from .merging import MERGE_METHODS
    from .tables import table as md_table

    scenarios = list(table)
    rows = []
    for key in ["zero-shot", "individual", *methods]:
        label = MERGE_METHODS[key].pretty_name if key in MERGE_METHODS else key
        cells = []
        for s in scenarios:
            c = table[s].get(key)
            cells.append(f"{c['mean_accuracy']:.1f} ({c['mean_normalized_accuracy']:.1f})" if c else "-")
        rows.append([label, *cells])
    return ("Mean absolute accuracy % (mean normalised accuracy %) over the suite's tasks, test split; alpha "
            "chosen on validation.\n\n" + md_table(["method", *scenarios], rows, align="l" + "r" * len(scenarios)))
