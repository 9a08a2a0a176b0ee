"""Geometry of the example suite's task vectors: lengths and mutual cosines, standard vs label-smoothed.

The low-confidence scenario's merge stays at zero-shot even after DisTaC sharpens every label-smoothed model
(REPRODUCTION.md). This prints what that explanation rests on, per family of vectors: the mean norm, the mean
pairwise cosine, the share of the summed length the sum keeps (‖Σ τ‖ / Σ ‖τ‖) and each vector's cosine with
its task's standard vector; for the sharpened vectors also how far DisTaC moved each (‖τ' − τ‖ / ‖τ‖) and, per
task, how much of label smoothing's change δ = τ_LS − τ_std is still there (‖τ' − τ_std‖ / ‖δ‖, and the cosine of
τ' − τ_std with δ: 1 when DisTaC leaves δ whole, 0 when it removes it).

With ``--demo`` it also treats DisTaC's own updates u = τ' − τ_LS as a family and breaks u and τ_std down by
parameter group (embeddings, each layer's attention, MLP and norms, the final norm): each group's share of the
squared length and the two numbers that say whether the eight tasks write into the same directions — the mean
pairwise cosine and ‖Σ_t v_t‖² / Σ_t ‖v_t‖² (1 when the eight are orthogonal, 8 when they are one vector). Task
arithmetic and Consensus add the eight updates; where they agree the sum grows eightfold, where they are
orthogonal threefold (√8).

Usage::

    python benchmarks/suite_vector_geometry.py example-suite [--demo hfdistac-demo]
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import statistics
from pathlib import Path

import torch


def _flat(tv) -> torch.Tensor:
    return torch.cat([tv[k].flatten().double() for k in sorted(tv.keys())])


def _group(key: str) -> str:
    """The parameter group of a vision-tower key: embeddings, layer N attention / MLP / norms, final norm."""
    layer = re.search(r"layers\.(\d+)\.", key)
    if layer:
        part = "attention" if "self_attn" in key else "MLP" if "mlp" in key else "norms"
        return f"layer {layer.group(1)} {part}"
    if "embeddings" in key:
        return "embeddings"
    return "final norm" if "post_layernorm" in key else "pre-norm" if "pre_layrnorm" in key else key


def _segments(tv) -> dict[str, list[slice]]:
    """Where each parameter group sits in :func:`_flat`'s vector (groups keep their order of appearance)."""
    spans: dict[str, list[slice]] = {}
    start = 0
    for k in sorted(tv.keys()):
        n = tv[k].numel()
        spans.setdefault(_group(k), []).append(slice(start, start + n))
        start += n
    return spans


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
        pair = _agreement(v)[0]
        kept = float(torch.stack(v).sum(0).norm() / sum(x.norm() for x in v))
        with_std = [_cos(vecs[t], std[t]) for t in tasks]
        print(f"| {label} | {statistics.mean(float(x.norm()) for x in v):.3f} | {pair:.3f} | {kept:.3f} | "
              f"{min(with_std):.2f}–{max(with_std):.2f} |")
    if args.demo:
        moved = [float((families["label-smoothed + DisTaC"][t] - families["label-smoothed"][t]).norm()
                       / families["label-smoothed"][t].norm()) for t in tasks]
        print(f"\nDisTaC moved each label-smoothed vector by {min(moved):.0%}–{max(moved):.0%} of its length.")
        _ls_difference(families, tasks)
        updates = {t: families["label-smoothed + DisTaC"][t] - families["label-smoothed"][t] for t in tasks}
        _by_group({"τ_std": std, "u = τ' − τ_LS": updates},
                  _segments(load_task_vector(args.demo / "conditioned" / f"{tasks[0]}-ls" / "task_vector.safetensors")))


def _ls_difference(families: dict[str, dict[str, torch.Tensor]], tasks: list[str]) -> None:
    """Per task: how much of what label smoothing changed (δ = τ_LS − τ_std) is still there after DisTaC."""
    print("\n| task | ‖δ‖ = ‖τ_LS − τ_std‖ | ‖τ' − τ_std‖ / ‖δ‖ | cos(τ' − τ_std, δ) | cos(τ' − τ_LS, δ) |")
    print("|:--|--:|--:|--:|--:|")
    for t in tasks:
        std, ls, sharp = (families[f][t] for f in ("standard", "label-smoothed", "label-smoothed + DisTaC"))
        delta = ls - std
        print(f"| {t} | {delta.norm():.2f} | {(sharp - std).norm() / delta.norm():.2f} | {_cos(sharp - std, delta):.2f} "
              f"| {_cos(sharp - ls, delta):.2f} |")


def _agreement(vecs: list[torch.Tensor]) -> tuple[float, float]:
    """(mean pairwise cosine, ‖Σ v‖² / Σ ‖v‖²) of equally indexed vectors."""
    pair = statistics.mean(_cos(a, b) for a, b in itertools.combinations(vecs, 2))
    return pair, float(torch.stack(vecs).sum(0).norm() ** 2 / sum(float(v.norm()) ** 2 for v in vecs))


def _by_group(families: dict[str, dict[str, torch.Tensor]], spans: dict[str, list[slice]]) -> None:
    """Per parameter group and family: share of the squared length, mean pairwise cosine, ‖Σ‖² / Σ‖‖²."""
    names = list(families)
    print("\nper parameter group: share of Σ_t ‖v_t‖², mean pairwise cosine, ‖Σ_t v_t‖² / Σ_t ‖v_t‖² (1 to 8)\n")
    print("| group | " + " | ".join(f"{n}: share, cosine, sum ratio" for n in names) + " |")
    print("|:--|" + "--:|" * len(names))
    totals = {n: sum(float(v.norm()) ** 2 for v in fam.values()) for n, fam in families.items()}
    rows = [("all", None), *spans.items()]
    for group, parts in rows:
        cells = []
        for n in names:
            vecs = list(families[n].values()) if parts is None else [
                torch.cat([v[sl] for sl in parts]) for v in families[n].values()]
            share = sum(float(v.norm()) ** 2 for v in vecs) / totals[n]
            pair, ratio = _agreement(vecs)
            cells.append(f"{share:.1%}, {pair:.2f}, {ratio:.2f}")
        print(f"| {group} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
