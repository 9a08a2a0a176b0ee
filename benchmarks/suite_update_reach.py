"""How far each task's vectors reach into the *other* tasks: one vector added alone, as the build's check (f).

For every task t of a built suite and a finished ``hfdistac demo`` on it, this sets the tower to θ₀ + α·v for one
vector v of t at a time and measures every task's test accuracy. It prints, per family of vectors, the mean
change of the *other* seven tasks' accuracy against zero-shot (check (f) does this for τ_LS at α 0.3 and asks
≥ −2) and of t's own:

- τ_std, τ_LS and τ' (the DisTaC-sharpened label-smoothed vector, ``DEMO/conditioned/<t>-ls``);
- u = τ' − τ_LS, DisTaC's own update, alone, and τ_std + u, the update on the standard vector, which is what
  ``benchmarks/suite_ls_update.py`` merges.

A family whose vectors cost the other tasks little is task-local; one that costs them much writes into
directions every task's images pass through, which task arithmetic then adds eight times.

A second table splits task arithmetic's merge θ₀ + α·Σ_t v_t at each α of ``--merge-alphas``: per family, the
mean accuracy of each task with its own vector alone at that α (θ₀ + α·v_t, what the merge could give it) and
in the merge; their difference is what the other seven vectors cost it together (interference).

Usage::

    python benchmarks/suite_update_reach.py example-suite hfdistac-demo [--alpha 0.3] [--merge-alphas 0.2 0.3 0.4]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def _vectors(suite: Path, conditioned: Path, base, task: str) -> dict[str, dict]:
    from hfdistac.checkpoints import load_finetuned
    from hfdistac.task_vectors import compute_task_vector, load_task_vector

    std = compute_task_vector(base.weights, load_finetuned(str(suite / "models" / task)).weights)
    ls = compute_task_vector(base.weights, load_finetuned(str(suite / "models" / f"{task}-ls")).weights)
    sharp = load_task_vector(conditioned / f"{task}-ls" / "task_vector.safetensors", lazy=False)
    update = {k: sharp[k] - ls[k] for k in std}
    return {"τ_std": std, "τ_LS": ls, "τ' (LS + DisTaC)": sharp, "u = τ' − τ_LS": update,
            "τ_std + u": {k: std[k] + update[k] for k in std}}


def main() -> None:
    from hfdistac.checkpoints import load_base
    from hfdistac.evaluation import resolve_device
    from hfdistac.merge_eval.config import MergeConfig
    from hfdistac.merge_eval.scoring import MergedModel, load_task_data
    from hfdistac.recipe import load_recipe
    from hfdistac.runtime import torch_state

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suite", type=Path, help="a built example suite")
    ap.add_argument("demo", type=Path, help="a finished `hfdistac demo` directory on that suite")
    ap.add_argument("--alpha", type=float, default=0.3, help="scale of the one vector added (check (f): 0.3)")
    ap.add_argument("--conditioned", type=Path,
                    help="where the sharpened <task>-ls runs are (default DEMO/conditioned; e.g. a suite_ls_kappa.py "
                         "output's kappa-0.6, where u then also holds the shrink)")
    ap.add_argument("--merge-alphas", type=float, nargs="*", default=[0.2, 0.3, 0.4, 0.5],
                    help="α values of the merge split (default 0.2 0.3 0.4 0.5; none: skip it)")
    args = ap.parse_args()
    recipe_path = args.suite / "recipes" / "original.yaml"
    recipe = load_recipe(recipe_path)
    base = load_base(recipe.base)
    config = MergeConfig(recipe=str(recipe_path), alpha=args.alpha, progress=False)
    with torch_state(threads=1):
        tasks, _ = load_task_data(recipe, base, config, ["task_arithmetic"])
        device = resolve_device("cpu")
        merged = MergedModel(base.vision_config, base.weights, tasks, device, "no")
        zero = merged.evaluate_all("test")["accuracy"]
        names = [t.name for t in tasks]
        others: dict[str, list[float]] = {}
        own: dict[str, list[float]] = {}
        worst: dict[str, tuple[float, str, str]] = {}
        conditioned = args.conditioned or args.demo / "conditioned"
        vectors = {t: _vectors(args.suite, conditioned, base, t) for t in names}
        for t in names:
            for family, vec in vectors[t].items():
                merged.set_weights(vec, args.alpha)
                acc = merged.evaluate_all("test")["accuracy"]
                changes = {m: acc[m] - zero[m] for m in names if m != t}
                others.setdefault(family, []).append(statistics.mean(changes.values()))
                own.setdefault(family, []).append(acc[t] - zero[t])
                m = min(changes, key=changes.get)
                if family not in worst or changes[m] < worst[family][0]:
                    worst[family] = (changes[m], t, m)
    print(f"one vector added alone at α {args.alpha:g}: change of test accuracy against zero-shot, points\n")
    print("| vectors | other tasks, mean over the 8 (range of the per-task means) | worst single task | own task, mean |")
    print("|:--|:--|:--|--:|")
    for family, vals in others.items():
        w = worst[family]
        print(f"| {family} | {statistics.mean(vals):+.1f} ({min(vals):+.1f} to {max(vals):+.1f}) "
              f"| {w[0]:+.1f} ({w[1]} on {w[2]}) | {statistics.mean(own[family]):+.1f} |")
    print("\nper task, the other tasks' mean change:\n")
    print("| task | " + " | ".join(others) + " |")
    print("|:--|" + "--:|" * len(others))
    for i, t in enumerate(names):
        print(f"| {t} | " + " | ".join(f"{others[f][i]:+.1f}" for f in others) + " |")
    split = _merge_split(merged, vectors, args.merge_alphas) if args.merge_alphas else {}
    print(json.dumps({"alpha": args.alpha, "zero_shot": zero, "others": others, "own": own, "merge_split": split}))


def _merge_split(merged, vectors: dict[str, dict[str, dict]], alphas: list[float]) -> dict[str, dict]:
    """Per family and α: each task's accuracy with its own vector alone and in the task-arithmetic sum."""
    import torch

    names = list(vectors)
    families = [f for f in next(iter(vectors.values())) if f != "u = τ' − τ_LS"]
    by_name = {t.name: t for t in merged.tasks}
    split: dict[str, dict] = {}
    for family in families:
        total = {k: torch.stack([vectors[t][family][k] for t in names]).sum(0) for k in vectors[names[0]][family]}
        for a in alphas:
            alone = {}
            for t in names:
                merged.set_weights(vectors[t][family], a)
                alone[t] = merged.accuracy(by_name[t], by_name[t].test)[0]
            merged.set_weights(total, a)
            together = merged.evaluate_all("test")["accuracy"]
            split.setdefault(family, {})[a] = {"alone": alone, "merged": together}
    print("\ntask arithmetic θ₀ + α·Σ v split: mean test accuracy of each task with its own vector alone at α, in "
          "the merge, and the difference (what the other seven cost it)\n")
    print("| vectors | " + " | ".join(f"α {a:g}: alone, merged, cost" for a in alphas) + " |")
    print("|:--|" + "--:|" * len(alphas))
    for family, rows in split.items():
        cells = []
        for a in alphas:
            al, mg = (statistics.mean(rows[a][k].values()) for k in ("alone", "merged"))
            cells.append(f"{al:.1f}, {mg:.1f}, {al - mg:.1f}")
        print(f"| {family} | " + " | ".join(cells) + " |")
    return split


if __name__ == "__main__":
    main()
