"""Benchmark: run time and peak memory of SAMerging vs task arithmetic, end to end through ``run_merge``.

For every recipe, each configuration runs ``hfdistac.merge_eval.run_merge`` in its own child process, which
reports its wall time and peak RSS (``ru_maxrss``), plus SAMerging's own breakdown (teacher logits,
optimisation) and the resulting mean test accuracy. A warm-up child first fills the shared caches (zero-shot
heads, individual-model accuracies) so that no configuration pays for them. The parent never imports torch.

Compared (same data, same evaluation):

* ``task_arithmetic``: τ = Σ_t τ_t, α searched on the validation grid {0, 0.05, …, 1} (21 evaluations).
* ``tsvm``: TSV-M, α searched on the same grid.
* ``samerging``: learned coefficients (default 1,000 ASAM steps; ``--steps`` to change), α fixed at 1.
* ``samerging (released)``: the released code's non-re-merged SAM (``--released-sam``).

Usage::

    python benchmarks/bench_samerging.py --suite /tmp/suite            # DIR/recipes/*.yaml
    python benchmarks/bench_samerging.py --recipe a.yaml b.yaml --steps 200
    python benchmarks/bench_samerging.py --tiny /tmp/tiny-bench        # tiny fixtures, a smoke run
    python benchmarks/bench_samerging.py --vitb 2 --tasks 8            # ViT-B/32 shapes, 2 steps: s/step, RSS

``--vitb N`` times N SAMerging steps at the real ViT-B/32 shapes (random weights, heads and 224 px pixels;
nothing is downloaded) and task arithmetic on the same in-memory task vectors, each in its own child.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    "task_arithmetic": ["--method", "task_arithmetic"],
    "tsvm": ["--method", "tsvm"],
    "samerging": ["--method", "samerging"],
    "samerging (released)": ["--method", "samerging", "--released-sam"],
}


# ---------------------------------------------------------------------------------------------- child
def child_run(recipe: str, extra: list[str]) -> None:
    import resource

    import torch

    from hfdistac.cli.args import config_from_args
    from hfdistac.merge_eval import MergeConfig, run_merge

    parser = argparse.ArgumentParser()
    from hfdistac.cli.args import add_dataclass_arguments

    add_dataclass_arguments(parser, MergeConfig)
    cfg = config_from_args(MergeConfig, parser.parse_args([recipe, "--no-progress", *extra]))
    start = time.perf_counter()
    report = run_merge(cfg)
    wall = time.perf_counter() - start
    res = report["results"][0]
    out = {"wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "mean_accuracy": res.get("mean_accuracy"), "mean_normalized_accuracy": res.get("mean_normalized_accuracy"),
           "alpha": res["alpha"], "method_s": res.get("time_s"), "teacher_s": res.get("teacher_time_s"),
           "optimize_s": res.get("optimize_time_s"), "steps": res.get("params", {}).get("steps"),
           "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


def child_vitb(method: str, tasks: int, steps: int, batch_size: int) -> None:
    import resource

    import torch
    from transformers import CLIPVisionConfig

    from hfdistac.checkpoints import build_vision_model, vision_state
    from hfdistac.heads import Head
    from hfdistac.merging import MERGE_METHODS
    from hfdistac.merging.samerging import SAMergingData, SAMergingTask

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(projection_dim=512)  # ViT-B/32: hidden 768, 12 layers, patch 32, 224 px
    base = vision_state(build_vision_model(cfg))
    tvs = [{k: 1e-3 * torch.randn_like(v) for k, v in base.items()} for _ in range(tasks)]
    start = time.perf_counter()
    result: dict = {}
    if method == "task_arithmetic":
        MERGE_METHODS[method](tvs)
    else:
        data = SAMergingData(base=base, vision_config=cfg, tasks=[
            SAMergingTask(f"t{t}", Head(torch.nn.functional.normalize(torch.randn(10, 512), dim=-1),
                                        torch.randn(512, 768) / 30, 100.0, [str(i) for i in range(10)], ["{c}"]),
                          [torch.randn(batch_size, 3, 224, 224)]) for t in range(tasks)])
        MERGE_METHODS["samerging"](tvs, steps=steps, init=0.3, batches_per_task=1, batch_size=batch_size,
                                   data=data, result=result)
    print(json.dumps({"method": method, "wall_s": time.perf_counter() - start,
                      "teacher_s": result.get("teacher_time_s"), "optimize_s": result.get("optimize_time_s"),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "threads": torch.get_num_threads()}))


def vitb_main(tasks: int, steps: int, batch_size: int) -> None:
    rows = [_child(["_vitb", m, str(tasks), str(steps), str(batch_size)]) for m in ("task_arithmetic", "samerging")]
    print(f"ViT-B/32 shapes, {tasks} tasks, {batch_size} images per task and step, "
          f"{rows[0]['threads']} torch threads (CPU)\n")
    print("| method | wall s | teacher logits s | s / step | projected 1,000 steps | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["method"] == "task_arithmetic":
            print(f"| task_arithmetic (merge only) | {r['wall_s']:.1f} | - | - | - | {r['peak_rss_mb']:.0f} |")
        else:
            per = r["optimize_s"] / steps
            print(f"| samerging | {r['wall_s']:.1f} | {r['teacher_s']:.1f} | {per:.1f} | {per * 1000 / 3600:.1f} h | "
                  f"{r['peak_rss_mb']:.0f} |")


# ---------------------------------------------------------------------------------------------- parent
def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _tiny_recipes(directory: Path) -> list[Path]:
    """Tiny fixtures (the test suite's) and one recipe over them: a smoke run, not a measurement."""
    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests._fixtures_models import make_base, make_finetuned, make_image_dataset

    directory.mkdir(parents=True, exist_ok=True)
    base = directory / "base"
    if not base.exists():
        make_base(base)
        make_image_dataset(directory / "data", n_train=96, n_test=48)
        for i, name in enumerate(("a", "b", "c")):
            make_finetuned(base, directory / name, scale=0.01, seed=i + 1)
    recipe = directory / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "tiny", "base": str(base), "tasks": [
        {"name": n, "model": str(directory / n), "dataset": str(directory / "data")} for n in ("a", "b", "c")]}))
    return [recipe]


def _fmt(v, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--suite", type=Path, help="an example suite directory (uses DIR/recipes/*.yaml)")
    src.add_argument("--recipe", type=Path, nargs="+", help="recipe files")
    src.add_argument("--tiny", type=Path, help="build tiny fixtures in this directory and benchmark them")
    src.add_argument("--vitb", type=int, metavar="STEPS", help="time STEPS SAMerging steps at ViT-B/32 shapes")
    parser.add_argument("--tasks", type=int, default=8, help="tasks for --vitb (default 8)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per task and step for --vitb")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=None, help="SAMerging steps (default: the method's, 1000)")
    parser.add_argument("--merge-args", nargs=argparse.REMAINDER, default=[],
                        help="further `hfdistac merge` options for every run (e.g. --val-limit 200)")
    args = parser.parse_args(argv)

    if args.vitb:
        vitb_main(args.tasks, args.vitb, args.batch_size)
        return
    if args.suite:
        recipes = sorted((args.suite / "recipes").glob("*.yaml"))
        if not recipes:
            raise SystemExit(f"no recipes in {args.suite / 'recipes'}")
    elif args.tiny:
        recipes = _tiny_recipes(args.tiny)
    else:
        recipes = list(args.recipe)
    common = list(args.merge_args)
    rows = []
    for recipe in recipes:
        _child(["_run", str(recipe), "--method", "task_arithmetic", "--alpha", "0.3", *common])  # warm caches
        for name in args.configs:
            extra = [*CONFIGS[name], *common]
            if args.steps is not None and name.startswith("samerging"):
                extra += ["--steps", str(args.steps)]
            r = _child(["_run", str(recipe), *extra])
            rows.append((recipe.stem, name, r))
            print(f"{recipe.stem} / {name}: {r['wall_s']:.1f} s, {r['peak_rss_mb']:.0f} MB", file=sys.stderr)

    cuda = any("peak_cuda_mb" in r for _, _, r in rows)
    print("| recipe | method | steps | alpha | mean acc | mean norm. acc | wall s (run_merge) | SAMerging s "
          "(teachers + steps) | peak RSS MB |" + (" peak CUDA MB |" if cuda else ""))
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if cuda else ""))
    for recipe, name, r in rows:
        sam = (f"{r['method_s']:.1f} ({r['teacher_s']:.1f} + {r['optimize_s']:.1f})"
               if r.get("method_s") is not None else "-")
        line = (f"| {recipe} | {name} | {r['steps'] or '-'} | {_fmt(r['alpha'], 'g')} | {_fmt(r['mean_accuracy'])} | "
                f"{_fmt(r['mean_normalized_accuracy'])} | {r['wall_s']:.1f} | {sam} | {r['peak_rss_mb']:.0f} |")
        if cuda:
            line += f" {_fmt(r.get('peak_cuda_mb'), '.0f')} |"
        print(line)
    print(f"\ntorch threads per child: {rows[0][2]['threads'] if rows else '-'}; wall time includes loading, "
          "caching the SAMerging batches, alpha search (task arithmetic) and the test evaluation.")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_run":
        child_run(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_vitb":
        child_vitb(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
