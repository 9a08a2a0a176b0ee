"""Geometry of the example suite's task vectors: lengths and mutual cosines, standard vs label-smoothed.

The low-confidence scenario's merge stays at zero-shot even after DisTaC sharpens every label-smoothed model
(REPRODUCTION.md). This prints what that explanation rests on, per family of vectors: the mean norm, the mean
pairwise cosine, the share of the summed length the sum keeps (‖Σ τ‖ / Σ ‖τ‖) and each vector's cosine with
its task's standard vector; for the sharpened vectors also how far DisTaC moved each (‖τ' − τ‖ / ‖τ‖) and, per
task, how much of label smoothing's change δ = τ_LS − τ_std is still there (‖τ' − τ_std‖ / ‖δ‖, and the cosine of
τ' − τ_std with δ: 1 when DisTaC leaves δ whole, 0 when it removes it).

Usage::

    python benchmarks/suite_vector_geometry.py example-suite [--demo hfdistac-demo]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

import torch


def _flat(tv) -> torch.Tensor:
    return torch.cat([tv[k].flatten().double() for k in sorted(tv.keys())])


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def main() -> None:
    from hfdistac.checkpoints import load_base, load_finetuned
    from hfdistac.task_vectors import compute_task_vector, load_task_vector

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("suite", type=Path)
    p.add_argument("--demo", type=Path, help="a demo directory: adds its DisTaC-sharpened label-smoothed vectors")
    args = p.parse_args()
    tasks = json.loads((args.suite / "suite.json").read_text())["task_names"]
    base = load_base(str(args.suite / "base"))
    families: dict[str, dict[str, torch.Tensor]] = {}
    for suffix, label in (("", "standard"), ("-ls", "label-smoothed")):
        families[label] = {t: _flat(compute_task_vector(base.weights, load_finetuned(str(
            args.suite / "models" / f"{t}{suffix}")).weights)) for t in tasks}
    if args.demo:
        families["label-smoothed + DisTaC"] = {t: _flat(load_task_vector(
            args.demo / "conditioned" / f"{t}-ls" / "task_vector.safetensors", lazy=False)) for t in tasks}
    std = families["standard"]
    print("| vectors | mean norm | mean pairwise cosine | ‖Σ τ‖ / Σ ‖τ‖ | cosine with the task's standard vector |")
    print("|:--|--:|--:|--:|:--|")
    for label, vecs in families.items():
        v = list(vecs.values())
        pair = statistics.mean(_cos(a, b) for a, b in itertools.combinations(v, 2))
        kept = float(torch.stack(v).sum(0).norm() / sum(x.norm() for x in v))
        with_std = [_cos(vecs[t], std[t]) for t in tasks]
        print(f"| {label} | {statistics.mean(float(x.norm()) for x in v):.3f} | {pair:.3f} | {kept:.3f} | "
              f"{min(with_std):.2f}–{max(with_std):.2f} |")
    if args.demo:
        moved = [float((families["label-smoothed + DisTaC"][t] - families["label-smoothed"][t]).norm()
                       / families["label-smoothed"][t].norm()) for t in tasks]
        print(f"\nDisTaC moved each label-smoothed vector by {min(moved):.0%}–{max(moved):.0%} of its length.")
        _ls_difference(families, tasks)


def _ls_difference(families: dict[str, dict[str, torch.Tensor]], tasks: list[str]) -> None:
    """Per task: how much of what label smoothing changed (δ = τ_LS − τ_std) is still there after DisTaC."""
    print("\n| task | ‖δ‖ = ‖τ_LS − τ_std‖ | ‖τ' − τ_std‖ / ‖δ‖ | cos(τ' − τ_std, δ) | cos(τ' − τ_LS, δ) |")
    print("|:--|--:|--:|--:|--:|")
    for t in tasks:
        std, ls, sharp = (families[f][t] for f in ("standard", "label-smoothed", "label-smoothed + DisTaC"))
        delta = ls - std
        print(f"| {t} | {delta.norm():.2f} | {(sharp - std).norm() / delta.norm():.2f} | {_cos(sharp - std, delta):.2f} "
              f"| {_cos(sharp - ls, delta):.2f} |")


if __name__ == "__main__":
    main()
