"""What holding the norm buys in the merge: the demo's norm-mismatch runs with other conditioned vectors.

``hfdistac demo`` conditions each run's high-LR model with the paper's settings (β = 0.5). This merges the same
8 "+ DisTaC" recipes with that model replaced by another conditioning of it (for example ``--beta 15`` or
``--max-norm-ratio 1.15``, made by ``benchmarks/suite_conditioning.py``), with the demo's methods, TIES density
and α selection, and prints each variant's mean normalised accuracy beside the demo's, with the share of the
norm-mismatch drop it wins back.

Usage::

    python benchmarks/suite_conditioning.py SUITE --presets norm --beta 15 --output cond-b15
    python benchmarks/suite_conditioning.py SUITE --presets norm --max-norm-ratio 1.15 --output cond-r115
    python benchmarks/suite_norm_variants.py hfdistac-demo --variant "beta 15=cond-b15" \\
        --variant "bound 1.15x=cond-r115"
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def main() -> None:
    import torch

    from hfdistac.demo import DemoConfig
    from hfdistac.demo.jobs import merge_scenario
    from hfdistac.pipeline.chain import write_recipe
    from hfdistac.recipe import load_recipe

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("demo", type=Path, help="a finished `hfdistac demo` directory")
    p.add_argument("--variant", action="append", required=True, metavar="LABEL=DIR",
                   help="a label and a folder holding <task>-highlr conditioned outputs")
    args = p.parse_args()
    torch.set_num_threads(1)  # as the demo's steps
    demo = json.loads((args.demo / "demo.json").read_text())
    reading = DemoConfig(progress=False)  # merges run as the demo's do, or are read back when done
    methods, density = demo["methods"], demo["ties_density"]["density"]
    table = demo["table"]
    columns = {"norm mismatch": {m: table["norm mismatch"][m]["mean_normalized_accuracy"] for m in methods},
               "+ DisTaC (demo)": {m: table["norm mismatch + DisTaC"][m]["mean_normalized_accuracy"] for m in methods}}
    for spec in args.variant:
        label, folder = spec.split("=", 1)
        per_run = []
        for run in demo["norm_mismatch_runs"]:
            task = run["task"]
            recipe = args.demo / "recipes" / f"norm-mismatch-{task}-distac.yaml"
            replaced = Path(folder).resolve() / f"{task}-highlr"
            if not (replaced / "task_vector.safetensors").is_file():
                raise SystemExit(f"{replaced} holds no conditioned output")
            slug = label.replace(" ", "-")
            r_path = write_recipe(recipe, {task: str(replaced)}, args.demo / "variants" / f"{slug}-{task}.yaml",
                                  f"{slug}-{task}", f"{load_recipe(recipe).description} ({label})",
                                  keep_normalizer=True)
            column = merge_scenario(r_path, args.demo / "variants" / f"{slug}-{task}", methods, density, reading)
            per_run.append({m: column[m]["mean_normalized_accuracy"] for m in methods})
        columns[f"+ DisTaC, {label}"] = {m: statistics.mean(r[m] for r in per_run) for m in methods}
    original = {m: table["original"][m]["mean_normalized_accuracy"] for m in methods}
    print("| method | " + " | ".join(columns) + " | original |")
    print("|:--|" + "--:|" * (len(columns) + 1))
    for m in methods:
        drop = original[m] - columns["norm mismatch"][m]
        cells = [f"{columns['norm mismatch'][m]:.1f}"] + [
            f"{c[m]:.1f} ({100 * (c[m] - columns['norm mismatch'][m]) / drop:.0f} %)"
            for name, c in columns.items() if name != "norm mismatch"]
        print(f"| {m} | " + " | ".join(cells) + f" | {original[m]:.1f} |")


if __name__ == "__main__":
    main()
