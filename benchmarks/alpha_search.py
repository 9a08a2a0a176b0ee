"""Would coarse-to-fine α search choose what the full grid chose? Replays every merge of a demo (or any folder
of merge outputs) from the curves their reports recorded (the full grid's validation numbers), so it needs no
evaluation of its own.

    python benchmarks/alpha_search.py hfdistac-demo

Prints one row per merge and method (α full grid, α coarse-to-fine, evaluations) and the totals: how many choices
agree and how many validation evaluations the coarse-to-fine search saves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def replay(report: dict) -> list[dict]:
    from hfdistac.merge_eval.selection import best_point, coarse_to_fine

    rows = []
    for r in report.get("results", []):
        curve = {c["alpha"]: c for c in r.get("alpha_curve") or []}
        if r.get("alpha_search", "grid") != "grid" or len(curve) < 3 or len(curve) != len(r.get("alpha_grid", [])):
            continue
        searched = coarse_to_fine(r["alpha_grid"], curve.__getitem__)
        rows.append({"method": r["method"], "full": best_point(list(curve.values()))["alpha"], "recorded": r["alpha"],
                     "coarse_to_fine": best_point(searched)["alpha"], "evaluations": (len(curve), len(searched))})
    return rows


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "hfdistac-demo")
    total = agree = full_evals = c2f_evals = 0
    print("| merge | method | α grid | α coarse-to-fine | evaluations |\n|:--|:--|--:|--:|--:|")
    for path in sorted(root.rglob("report.json")):
        report = json.loads(path.read_text())
        if "results" not in report:
            continue
        if path.parent.name == report["results"][0].get("method") and (path.parent.parent / "report.json").is_file():
            continue  # a method's folder of a several-method merge: its numbers are in the merge's own report
        for row in replay(report):
            assert row["full"] == row["recorded"], (path, row)  # the replay reproduces the recorded choice
            total += 1
            agree += row["full"] == row["coarse_to_fine"]
            full_evals += row["evaluations"][0]
            c2f_evals += row["evaluations"][1]
            flag = "" if row["full"] == row["coarse_to_fine"] else " **differs**"
            print(f"| {path.parent.relative_to(root)} | {row['method']} | {row['full']:g} | "
                  f"{row['coarse_to_fine']:g}{flag} | {row['evaluations'][1]} of {row['evaluations'][0]} |")
    if total:
        print(f"\n{agree} of {total} choices agree; validation evaluations {c2f_evals} instead of {full_evals} "
              f"({100 * (1 - c2f_evals / full_evals):.0f} % saved)")


if __name__ == "__main__":
    main()
