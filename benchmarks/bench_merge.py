"""Benchmark: time and peak RSS of every merge method on ViT-B/32-shaped task vectors stored as safetensors.

The task vectors have the real parameter shapes of ``openai/clip-vit-base-patch32``'s vision tower (built
from a default ``transformers.CLIPVisionConfig()`` on the ``meta`` device, so nothing is downloaded) and
random values. Each method runs in its own child process, which reads its own peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, cross-checked with ``VmHWM``) so the numbers are per
method. This parent process never imports torch, so it stays small and cannot inflate a child's
high-water mark.

Usage::

    python benchmarks/bench_merge.py                 # 8 ViT-B/32 task vectors (~2.8 GB on disk)
    python benchmarks/bench_merge.py --small         # tiny shapes, a few seconds (smoke test)
    python benchmarks/bench_merge.py --tasks 4 --methods ties tsvm --workdir /tmp/bench
    python benchmarks/bench_merge.py --vs-fusionbench fbvenv/bin/python --threads 1   # TSV-M vs FusionBench

``--vs-fusionbench PYTHON`` runs TSV-M here and FusionBench's
``TSVM_utils.compute_and_sum_svd_mem_reduction`` (in PYTHON, an environment with fusion-bench 0.2.33: a benchmark
only, never a dependency) alternately on the same task vectors, ``--repeats`` times each, and prints their CPU
times, the ratio of the medians and the relative L2 difference of the results (FusionBench computes the exact
formula with full SVDs).

Target: peak RSS <= 1.5 GB for every method.

RegMean is timed on its merge step with random symmetric positive-definite Gram matrices (one safetensors file
per task, read back lazily, as ``hfdistac merge`` keeps them); its Gram step is a forward pass of every task's
tower over 256 images and is measured with the other forward passes in ``benchmarks/bench_real_size.py``.
RegMean++ interleaves forward passes with the merge and is measured there too. WUDI runs its default 300 Adam
iterations per matrix (``--wudi-iterations`` to change).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MB = 1536.0
ALL_METHODS = ["task_arithmetic", "ties", "consensus", "tsvm", "average", "iso_c", "iso_cts", "wudi", "regmean"]


# ---------------------------------------------------------------------------------------------- children
def _vision_config(small: bool):
    from transformers import CLIPVisionConfig

    if small:
        return CLIPVisionConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                                image_size=32, patch_size=8)
    return CLIPVisionConfig()  # ViT-B/32: hidden 768, 12 layers, MLP 3072, patch 32, 224 px (50 positions)


def _shapes(small: bool) -> dict[str, tuple[int, ...]]:
    import torch
    from transformers import CLIPVisionModel

    with torch.device("meta"):
        model = CLIPVisionModel(_vision_config(small))
    # Parameters only (buffers such as position_ids are not part of a task vector), canonical key form.
    return {("" if n.startswith("vision_model.") else "vision_model.") + n: tuple(p.shape)
            for n, p in model.named_parameters()}


def child_generate(workdir: Path, tasks: int, small: bool) -> None:
    import torch

    from hfdistac.task_vectors import TaskVector, save_task_vector

    shapes = _shapes(small)
    gen = torch.Generator().manual_seed(0)
    for t in range(tasks):
        path = workdir / f"task_{t}.safetensors"
        if path.exists():
            continue
        # Per-tensor scales vary so magnitudes are not identically distributed across tensors.
        tensors = {k: torch.randn(s, generator=gen) * (1e-3 * (1 + (i % 7))) for i, (k, s) in enumerate(shapes.items())}
        save_task_vector(TaskVector(tensors, {"source": f"random task {t}"}), path)
        del tensors
    print(json.dumps({"n_params": sum(_numel(s) for s in shapes.values()), "n_tensors": len(shapes)}))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child_grams(workdir: Path, tasks: int, small: bool) -> None:
    """Random SPD Gram matrices (B Bᵀ/k + 0.1·I) for every linear layer of every task, one file per task."""
    import torch

    from hfdistac.merging.wudi import is_linear_layer_weight
    from hfdistac.tensor_files import save_safetensors

    gen = torch.Generator().manual_seed(1)
    for t in range(tasks):
        path = workdir / f"grams_{t}.safetensors"
        if path.exists():
            continue
        grams = {}
        for key, shape in _shapes(small).items():
            if is_linear_layer_weight(key):
                b = torch.randn(shape[1], 64, generator=gen)
                grams[key] = b @ b.T / 64 + 0.1 * torch.eye(shape[1])
        save_safetensors(grams, path)
        del grams
    print(json.dumps({"grams": tasks}))


def child_run(workdir: Path, tasks: int, method: str, threads: int, wudi_iterations: int) -> None:
    import resource

    import torch
    from safetensors.torch import save_file

    if threads > 0:
        torch.set_num_threads(threads)

    from hfdistac.merging import get_method
    from hfdistac.task_vectors import load_task_vector
    from hfdistac.tensor_files import LazyTensors

    baseline_mb = _hwm_mb()
    tvs = [load_task_vector(workdir / f"task_{t}.safetensors") for t in range(tasks)]  # lazy
    params: dict = {}
    if method == "wudi":
        params = {"iterations": wudi_iterations}
    elif method == "regmean":  # the Gram files exist only where a RegMean run prepared them
        params = {"grams": [LazyTensors(workdir / f"grams_{t}.safetensors") for t in range(tasks)]}
    start, cpu_start = time.perf_counter(), time.process_time()
    merged = get_method(method)(tvs, **params)
    merge_s, merge_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    merge_peak_mb = _hwm_mb()
    start = time.perf_counter()
    out = workdir / f"merged_{method}.safetensors"
    save_file(merged, str(out))
    write_s = time.perf_counter() - start
    out.unlink()
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"method": method, "threads": torch.get_num_threads(), "merge_s": merge_s,
                      "merge_cpu_s": merge_cpu_s, "write_s": write_s, "baseline_mb": baseline_mb,
                      "merge_peak_mb": merge_peak_mb, "peak_mb": maxrss_mb, "hwm_mb": _hwm_mb()}))


FUSIONBENCH_TSVM = r"""
import json, resource, sys, time
import torch
from safetensors.torch import load_file, save_file
from fusion_bench.method.task_singular_vector.utils.TSVM_utils import compute_and_sum_svd_mem_reduction
workdir, tasks, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if threads > 0:
    torch.set_num_threads(threads)
tvs = [load_file(f"{workdir}/task_{t}.safetensors") for t in range(tasks)]
start, cpu = time.perf_counter(), time.process_time()
merged = compute_and_sum_svd_mem_reduction(tvs, accelerator="cpu")
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
save_file({k: v.contiguous() for k, v in merged.items()}, f"{workdir}/merged_fusionbench.safetensors")
print(json.dumps({"merge_s": wall, "merge_cpu_s": cpu,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child_tsvm_ours(workdir: Path, tasks: int, threads: int) -> None:
    """TSV-M here, its result kept for the comparison with FusionBench's."""
    import resource

    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    from hfdistac.merging import get_method
    from hfdistac.task_vectors import load_task_vector
    from hfdistac.tensor_files import save_safetensors

    tvs = [load_task_vector(workdir / f"task_{t}.safetensors") for t in range(tasks)]
    start, cpu = time.perf_counter(), time.process_time()
    merged = get_method("tsvm")(tvs)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    save_safetensors(merged, workdir / "merged_ours.safetensors")
    print(json.dumps({"merge_s": wall, "merge_cpu_s": cpu,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def child_compare(workdir: Path) -> None:
    from safetensors.torch import load_file

    ours, theirs = load_file(str(workdir / "merged_ours.safetensors")), load_file(str(workdir / "merged_fusionbench.safetensors"))
    num = sum(float((ours[k].double() - theirs[k].double()).pow(2).sum()) for k in theirs)
    den = sum(float(theirs[k].double().pow(2).sum()) for k in theirs)
    print(json.dumps({"relative_l2": (num / den) ** 0.5,
                      "max_abs": max(float((ours[k] - theirs[k]).abs().max()) for k in theirs)}))


def vs_fusionbench(args) -> None:
    import statistics

    ours, theirs = [], []
    print("| run | hfdistac TSV-M CPU s | FusionBench TSV-M CPU s | wall s (ours / theirs) | peak RSS MB (ours / theirs) |")
    print("|---:|---:|---:|---:|---:|", flush=True)
    for i in range(args.repeats):  # alternate, so both see the same machine load
        a = _child(["_tsvm_ours", str(args.workdir), str(args.tasks), str(args.threads)])
        proc = subprocess.run([args.vs_fusionbench, "-c", FUSIONBENCH_TSVM, str(args.workdir), str(args.tasks),
                               str(args.threads)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"FusionBench child failed:\n{proc.stderr[-3000:]}")
        b = json.loads(proc.stdout.strip().splitlines()[-1])
        ours.append(a["merge_cpu_s"])
        theirs.append(b["merge_cpu_s"])
        print(f"| {i + 1} | {a['merge_cpu_s']:.1f} | {b['merge_cpu_s']:.1f} | {a['merge_s']:.1f} / {b['merge_s']:.1f} | "
              f"{a['peak_mb']:.0f} / {b['peak_mb']:.0f} |", flush=True)
    diff = _child(["_compare", str(args.workdir)])
    print(f"\nmedian CPU s: hfdistac {statistics.median(ours):.1f}, FusionBench {statistics.median(theirs):.1f}: "
          f"{statistics.median(theirs) / statistics.median(ours):.2f}x less CPU time; relative L2 difference of the "
          f"results {diff['relative_l2']:.2e} (max abs {diff['max_abs']:.2e})")


# ---------------------------------------------------------------------------------------------- parent
def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=8, help="number of task vectors (default 8)")
    parser.add_argument("--small", action="store_true", help="tiny shapes for a fast smoke run")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the task vectors are written (reused if present; default: a temp dir)")
    parser.add_argument("--methods", nargs="+", default=ALL_METHODS, choices=ALL_METHODS,
                        help="methods to time (default: all)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads in each child (default 0: torch's default). On a shared, "
                             "oversubscribed machine 1 thread can be much faster than OpenMP's spinning threads")
    parser.add_argument("--wudi-iterations", type=int, default=300, help="WUDI's Adam iterations per matrix")
    parser.add_argument("--vs-fusionbench", metavar="PYTHON", default=None,
                        help="compare TSV-M with FusionBench's, run by this Python (a venv with fusion-bench)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side with --vs-fusionbench")
    args = parser.parse_args(argv)

    if args.workdir is None:
        args.workdir = Path(tempfile.mkdtemp(prefix="bench_merge_"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    size = "small" if args.small else "ViT-B/32"
    start = time.perf_counter()
    info = _child(["_generate", str(args.workdir), str(args.tasks), "1" if args.small else "0"])
    print(f"{args.tasks} {size} task vectors in {args.workdir}: {info['n_tensors']} tensors, "
          f"{info['n_params']:,} parameters each, {args.tasks * info['n_params'] * 4 / 2**30:.2f} GiB fp32 "
          f"in total (prepared in {time.perf_counter() - start:.0f} s)\n")

    if args.vs_fusionbench:
        vs_fusionbench(args)
        return
    if "regmean" in args.methods:
        _child(["_grams", str(args.workdir), str(args.tasks), "1" if args.small else "0"])
    print("| method | merge s | merge CPU s | write s | peak RSS MB (merge) | peak RSS MB (incl. write) | "
          f"<= {TARGET_MB / 1024:.1f} GB |")
    print("|---|---:|---:|---:|---:|---:|:---:|", flush=True)
    rows = []
    for method in args.methods:  # one child process per method: peak RSS is per method
        r = _child(["_run", str(args.workdir), str(args.tasks), method, str(args.threads), str(args.wudi_iterations)])
        rows.append(r)
        ok = "yes" if r["peak_mb"] <= TARGET_MB else "NO"
        print(f"| {r['method']} | {r['merge_s']:.1f} | {r['merge_cpu_s']:.1f} | {r['write_s']:.1f} | "
              f"{r['merge_peak_mb']:.0f} | {r['peak_mb']:.0f} | {ok} |", flush=True)
    print(f"\nPython + torch baseline RSS before merging: {rows[0]['baseline_mb']:.0f} MB; "
          f"torch threads per child: {rows[0]['threads']}.")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_generate":
        child_generate(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")
    elif len(sys.argv) > 1 and sys.argv[1] == "_tsvm_ours":
        child_tsvm_ours(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_compare":
        child_compare(Path(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_grams":
        child_grams(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")
    elif len(sys.argv) > 1 and sys.argv[1] == "_run":
        child_run(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    else:
        main()
