"""The low-confidence cure at κ < 1: sharpen the label-smoothed models from a shrunk start, then merge.

The paper conditions an under-confident vector with κ = 1 and temperatures (1, 10) (METHOD.md §1); shrinking
the start as well is its "both issues at once" setting (``--preset both``). On the example suite the
label-smoothed vectors are ~1.7× longer than the standard ones, and at κ = 1 the sharpened ones keep that
length and interfere once summed (``benchmarks/suite_update_reach.py``). This conditions every ``-ls`` model at each κ of ``--kappas`` with the
demo's other settings (β 0.5, the cards' lr, 500 steps × 128, (1, 10)), merges the eight with the demo's
methods (α on holdout, TIES at the paper-equivalent density, calibrated; normalised by the label-smoothed
models) and prints, beside the demo's own columns, the mean normalised accuracy and the share of the
low-confidence drop won back. Each κ's runs go to ``OUTPUT/kappa-<κ>`` and are read back when present.

Usage::

    python benchmarks/suite_ls_kappa.py example-suite hfdistac-demo --kappas 0.5 --output ls-kappa
    # the runs in two processes, then the merge:
    python benchmarks/suite_ls_kappa.py example-suite hfdistac-demo --kappas 0.5 --tasks digits glyphs textures colours &
    python benchmarks/suite_ls_kappa.py example-suite hfdistac-demo --kappas 0.5 --tasks counts terrain arrows positions
    wait; python benchmarks/suite_ls_kappa.py example-suite hfdistac-demo --kappas 0.5
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from suite_conditioning import _condition  # noqa: E402  (the benchmarks folder is not a package)


def main() -> None:
    from hfdistac.demo import jobs
    from hfdistac.demo.config import DemoConfig
    from hfdistac.demo.paper import paper_equivalent_density
    from hfdistac.pipeline.chain import recipe_with
    from hfdistac.runtime import torch_state

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suite", type=Path, help="a built example suite")
    ap.add_argument("demo", type=Path, help="a finished `hfdistac demo` directory on that suite")
    ap.add_argument("--kappas", type=float, nargs="+", default=[0.5], help="start scales to try (default 0.5)")
    ap.add_argument("--lr", type=float, default=1e-5, help="DisTaC learning rate (default the cards' 1e-5)")
    ap.add_argument("--steps", type=int, default=500, help="DisTaC steps (default the paper's 500)")
    ap.add_argument("--output", type=Path, default=Path("ls-kappa"), help="where the runs and merges go")
    ap.add_argument("--tasks", nargs="+", help="condition only these tasks and stop before merging (to spread the "
                                               "runs over processes; a last call without it merges)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    demo = json.loads((args.demo / "demo.json").read_text())
    methods, table = demo["methods"], demo["table"]
    names = json.loads((args.suite / "suite.json").read_text())["task_names"]
    density = paper_equivalent_density(args.suite / "base")["density"]
    columns = {"low confidence": table["low confidence"], "κ 1 (the demo)": table["low confidence + DisTaC"]}
    entropy: dict[str, str] = {}
    for kappa in args.kappas:
        out = args.output / f"kappa-{kappa:g}"
        reports = {}
        for t in args.tasks or names:
            with torch_state(threads=1):
                reports[t], _ = _condition(out / f"{t}-ls", False, base=str(args.suite / "base"),
                                           model=str(args.suite / "models" / f"{t}-ls"), data=str(args.suite / "data" / t),
                                           preset="both", kappa=kappa, steps=args.steps, lr=args.lr, beta=0.5)
        if args.tasks:
            continue
        entropy[f"κ {kappa:g}"] = ", ".join(
            f"{t} {reports[t]['entropy_before']:.2f}→{reports[t]['entropy_after']:.2f} "
            f"({reports[t]['accuracy_before']:.0f}→{reports[t]['accuracy_after']:.0f} %)" for t in names)
        recipe = recipe_with(args.suite / "recipes" / "low-confidence.yaml",
                             {t: str(out / f"{t}-ls") for t in names}, out / "low-confidence-distac.yaml",
                             f"low-confidence-distac-kappa-{kappa:g}")
        with torch_state(threads=1):
            columns[f"κ {kappa:g}"] = jobs.merge_scenario(recipe, out / "merge", methods, density,
                                                          DemoConfig(directory=str(out), progress=False))
    if args.tasks:
        return
    orig, low = table["original"], table["low confidence"]
    print("mean normalised accuracy % (share of the low-confidence drop won back)\n")
    print("| low confidence | " + " | ".join(methods) + " |")
    print("|:--|" + "--:|" * len(methods))
    print("| original | " + " | ".join(f"{orig[m]['mean_normalized_accuracy']:.1f}" for m in methods) + " |")
    for name, col in columns.items():
        cells = []
        for m in methods:
            v, drop = col[m]["mean_normalized_accuracy"], (orig[m]["mean_normalized_accuracy"]
                                                          - low[m]["mean_normalized_accuracy"])
            won = (v - low[m]["mean_normalized_accuracy"]) / drop if drop > 0 else float("nan")
            cells.append(f"{v:.1f} ({won:.0%})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nper task, entropy teacher → student (accuracy %):")
    for name, line in entropy.items():
        print(f"- {name}: {line}")


if __name__ == "__main__":
    main()
