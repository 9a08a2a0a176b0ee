"""Which part of a DisTaC-sharpened label-smoothed vector costs the merge: label smoothing's change or DisTaC's own?

A sharpened vector is τ' = τ_std + δ + u, with δ = τ_LS − τ_std (what label smoothing changed) and u = τ' − τ_LS
(what DisTaC added). This writes, per task of a built suite and a finished ``hfdistac demo``, the vector
τ_std + u (DisTaC's update on the standard vector, without δ) and merges the eight with the demo's methods and
settings (α on holdout, TIES at the paper-equivalent density, calibrated), normalised like the demo's
"low confidence + DisTaC" column (by the label-smoothed models). Compare its mean accuracy with the demo's
"original" (τ_std alone) and "low confidence + DisTaC" (τ_std + δ + u) merges, which it prints beside it:
what u costs is original − this; what δ costs is this − "low confidence + DisTaC".

Usage::

    python benchmarks/suite_ls_update.py example-suite hfdistac-demo --output ls-update
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def write_vectors(suite: Path, demo: Path, out: Path) -> Path:
    """τ_std + (τ' − τ_LS) per task under ``out/<task>``; returns the recipe that names them."""
    from hfdistac.checkpoints import load_base, load_finetuned
    from hfdistac.pipeline.chain import recipe_with
    from hfdistac.task_vectors import TaskVector, compute_task_vector, load_task_vector, save_task_vector

    base = load_base(str(suite / "base"))
    replacements = {}
    for task in json.loads((suite / "suite.json").read_text())["task_names"]:
        std = compute_task_vector(base.weights, load_finetuned(str(suite / "models" / task)).weights)
        ls = compute_task_vector(base.weights, load_finetuned(str(suite / "models" / f"{task}-ls")).weights)
        sharp = load_task_vector(demo / "conditioned" / f"{task}-ls" / "task_vector.safetensors", lazy=False)
        (out / task).mkdir(parents=True, exist_ok=True)
        save_task_vector(TaskVector({k: std[k] + (sharp[k] - ls[k]) for k in std}),
                         out / task / "task_vector.safetensors",
                         {"base": base.resolved.reference, "base_revision": base.resolved.revision,
                          "method": "tau_std + (tau_distac - tau_ls)"})
        replacements[task] = str(out / task)
    return recipe_with(suite / "recipes" / "low-confidence.yaml", replacements, out / "std-plus-update.yaml",
                       "std-plus-distac-update")


def main() -> None:
    from hfdistac.demo import jobs
    from hfdistac.demo.config import DemoConfig
    from hfdistac.demo.paper import paper_equivalent_density
    from hfdistac.runtime import torch_state

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suite", type=Path, help="a built example suite")
    ap.add_argument("demo", type=Path, help="a finished `hfdistac demo` directory on that suite")
    ap.add_argument("--output", type=Path, default=Path("ls-update"), help="where the vectors and the merge go")
    args = ap.parse_args()
    demo = json.loads((args.demo / "demo.json").read_text())
    methods = demo["methods"]
    recipe = write_vectors(args.suite, args.demo, args.output)
    config = DemoConfig(directory=str(args.output), progress=False)
    with torch_state(threads=1):  # as the demo's steps run
        column = jobs.merge_scenario(recipe, args.output / "merge", methods,
                                     paper_equivalent_density(args.suite / "base")["density"], config)
    rows = {"τ_std (original)": demo["table"]["original"], "τ_std + u (this)": column,
            "τ_std + δ + u (low confidence + DisTaC)": demo["table"]["low confidence + DisTaC"],
            "τ_std + δ (low confidence)": demo["table"]["low confidence"]}
    print("mean accuracy % (α) on the test split\n")
    print("| vectors | " + " | ".join(methods) + " |")
    print("|:--|" + "--:|" * len(methods))
    for name, col in rows.items():
        print(f"| {name} | " + " | ".join(f"{col[m]['mean_accuracy']:.1f} ({col[m]['alpha']})" for m in methods)
              + " |")


if __name__ == "__main__":
    main()
