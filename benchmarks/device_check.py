"""GPU check at ViT-B/32 size: DisTaC in bf16 (one process and ``accelerate launch`` over every GPU), evaluation,
``merge`` with its evaluation on 1 and on every GPU (same α and accuracies?), ``run`` end to end on 1 and on every
GPU, and a TSV-M merge on the GPU; prints images/s, an MFU estimate and peak GPU memory as one table.

Run by ``benchmarks/device_check.sh`` (which installs what the GPU machine lacks); on its own::

    python benchmarks/device_check.py --workdir /tmp/dc                   # on a GPU machine
    python benchmarks/device_check.py --workdir /tmp/dc --device cpu --quick   # smoke test of the script on CPU

The look-alikes (exact ViT-B/32 ``CLIPConfig``, real-size tokenizer, fine-tuned towers, parquet datasets) come
from ``bench_real_size.build``. MFU is achieved FLOP/s over the chip's dense bf16 peak (H100/H200 SXM: 989
TFLOP/s; ``--peak-tflops`` for another), with the FLOPs of a ViT-B/32 forward pass counted from its shapes and a
training step counted as 3 forward passes of the student (forward + backward) plus one of the teacher.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def _bench_real_size():
    spec = importlib.util.spec_from_file_location("bench_real_size", HERE / "bench_real_size.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def vit_forward_flops(vision_config) -> float:
    """FLOPs (2 × multiply-adds) of one image through a CLIP vision tower, from its shapes."""
    c = vision_config
    tokens = (c.image_size // c.patch_size) ** 2 + 1
    d, f = c.hidden_size, c.intermediate_size
    patch = (tokens - 1) * 3 * c.patch_size ** 2 * d
    per_layer = tokens * (4 * d * d + 2 * d * f) + 2 * tokens * tokens * d
    return 2.0 * (patch + c.num_hidden_layers * per_layer)


def _peak_flops(device, override: float | None) -> float | None:
    import torch

    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v * 1e12 for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def check_eval(w: Path, device, batch: int, batches: int) -> dict:
    """Zero-shot classifier forward passes in bf16 autocast on synthetic 224-px batches."""
    import torch

    from hfdistac.checkpoints import load_base
    from hfdistac.data import DatasetSpec, load_image_data
    from hfdistac.evaluation import autocast_context, head_for_task
    from hfdistac.heads import ZeroShotClassifier

    base = load_base(str(w / "base"))
    data = load_image_data(DatasetSpec(str(w / "data" / "digits10")), "test", streaming=False)
    head = head_for_task(base, data)
    model = ZeroShotClassifier(base.clip.vision_model, head).to(device).eval()
    x = torch.randn(batch, 3, 224, 224, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad(), autocast_context(device, "bf16"):
        model(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(batches):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"images_per_s": batch * batches / seconds, "seconds": seconds, "peak_gpu_mb": peak,
            "flops_per_image": vit_forward_flops(base.vision_config)}


def check_condition(w: Path, processes: int, steps: int, batch: int, out: Path, device: str) -> dict:
    """``hfdistac condition`` in bf16: one process, or ``accelerate launch`` with ``processes``."""
    model, ref = str(w / "models" / "ft0"), [str(w / "models" / f"ft{t}") for t in (1, 2)]
    args = ["condition", model, "--base", str(w / "base"), "--data", str(w / "data" / "digits10"), "--reference",
            *ref, "--steps", str(steps), "--batch-size", str(batch), "--mixed-precision",
            "bf16", "--eval-limit", str(batch), "--output", str(out), "--overwrite", "--no-progress"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if processes > 1:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
                  "--num_machines", "1", "--mixed_precision", "bf16", "--dynamo_backend", "no",
                  "--main_process_port", "0"]
        if device == "cpu":
            launch += ["--multi_gpu"]
            env["ACCELERATE_USE_CPU"] = "1"
        elif processes > 1:
            launch += ["--multi_gpu"]
        cmd = [*launch, "-m", "hfdistac.cli.main", *args]
    else:
        cmd = [sys.executable, "-m", "hfdistac.cli", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"condition ({processes} process(es)) failed:\n{proc.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    return {**report["timing"], "wall_s": wall, "num_processes": report.get("num_processes", processes)}


def _command(processes: int, device: str, args: list[str]) -> tuple[list[str], dict]:
    """The command line (and environment) of ``hfdistac ARGS`` in ``processes`` processes."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if processes == 1:
        return [sys.executable, "-m", "hfdistac.cli", *args], env
    if device == "cpu":
        env["ACCELERATE_USE_CPU"] = "1"
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
            "-m", "hfdistac.cli.main", *args], env


def _timed(processes: int, device: str, args: list[str]) -> float:
    """Wall seconds of ``hfdistac ARGS`` in ``processes`` processes; its stderr's tail if it fails."""
    cmd, env = _command(processes, device, args)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} ({processes} process(es)) failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def check_merge(w: Path, processes: int, tasks: int, limit: int, out: Path, device: str) -> dict:
    """``hfdistac merge --method task_arithmetic,tsvm --calibrate`` of the look-alike recipe, evaluated on
    ``processes`` processes (the evaluation split across them); its report and wall time."""
    recipe = _bench_real_size()._merge_recipe(w, tasks)
    args = ["merge", str(recipe), "--method", "task_arithmetic,tsvm", "--calibrate", "--val-limit", str(limit),
            *(["--alpha-grid", "0.3", "0.5"] if limit < 256 else []),
            "--test-limit", str(limit), "--batch-size", "128", "--device", device, "--output", str(out),
            "--overwrite", "--no-progress"]
    wall = _timed(processes, device, args)
    return {"wall_s": wall, "report": json.loads((out / "report.json").read_text())}


def same_merge(a: dict, b: dict) -> str:
    """Whether two merge reports chose the same α and counted the same accuracies."""
    ra, rb = a["report"], b["report"]
    same = all(x["alpha"] == y["alpha"] and [t["accuracy"] for t in x["tasks"]] == [t["accuracy"] for t in y["tasks"]]
               for x, y in zip(ra["results"], rb["results"], strict=True))
    return "identical alpha and accuracies" if same else "DIFFERENT from 1 process"


def check_run(w: Path, processes: int, steps: int, out: Path, device: str) -> dict:
    """``hfdistac run`` of the look-alike recipe (its long task vector is flagged and conditioned) on
    ``processes`` processes; wall time and stages."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    recipe = _bench_real_size()._merge_recipe(w, 3)
    args = ["run", str(recipe), "--output", str(out), "--method", "task_arithmetic,tsvm", "--condition-steps",
            str(steps), "--inspect-limit", "64", "--no-progress"]
    wall = _timed(processes, device, args)
    report = json.loads((out / "run.json").read_text())
    return {"wall_s": wall, "stages": report["stages"], "conditioned": list(report["conditioned"])}


def check_tsvm(w: Path, device, tasks: int) -> dict:
    """TSV-M of ``tasks`` look-alike task vectors with the decompositions on ``device``."""
    import torch

    from hfdistac.checkpoints import read_vision_weights
    from hfdistac.merging import MERGE_METHODS

    theta0 = read_vision_weights(str(w / "base"))
    tvs = []
    for t in range(tasks):
        ft = read_vision_weights(str(w / "models" / f"ft{t}"))
        tvs.append({k: ft[k] - theta0[k] for k in theta0})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    merged = MERGE_METHODS["tsvm"](tvs, device=str(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"seconds": seconds, "peak_gpu_mb": peak, "parameters": sum(v.numel() for v in merged.values())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--bpe-wheel", default=None, help="the open-clip-torch wheel (for the tokenizer's vocabulary)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke test of this script)")
    p.add_argument("--quick", action="store_true", help="tiny step and batch counts (for --device cpu)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the chip's dense bf16 peak (default: by name)")
    a = p.parse_args()
    import torch

    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --device cpu --quick for a smoke test")
    n_gpus = torch.cuda.device_count() if device.type == "cuda" else 2
    steps, batch, eval_batch, eval_batches, tasks = (2, 8, 8, 2, 2) if a.quick else (30, 128, 256, 20, 8)
    a.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    _bench_real_size().build(a.workdir, a.bpe_wheel or next(iter(sorted(HERE.glob("wheels/open_clip_torch-*.whl"))),
                                                            None), max(tasks, 3))
    print(f"look-alikes built in {time.perf_counter() - start:.0f} s; device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, {n_gpus} GPU(s)",
          flush=True)
    peak = _peak_flops(device, a.peak_tflops)
    ev = check_eval(a.workdir, device, eval_batch, eval_batches)
    fwd = ev["flops_per_image"]

    def mfu(images_per_s: float | None, flops: float) -> str:
        return f"{100 * images_per_s * flops / peak:.1f} %" if peak and images_per_s else "n/a"

    rows = [(f"evaluation, bf16 autocast, batch {eval_batch}", f"{ev['images_per_s']:.0f}", mfu(ev["images_per_s"], fwd),
             ev["peak_gpu_mb"], f"{ev['seconds']:.2f} s")]
    for procs in sorted({1, n_gpus}):
        r = check_condition(a.workdir, procs, steps, batch, a.workdir / f"condition-{procs}", a.device)
        rows.append((f"condition, bf16, {procs} process(es), {steps} steps x {batch}", f"{r['images_per_s']:.0f}",
                     mfu(r["images_per_s"], 4 * fwd), r.get("peak_device_memory_mb"),
                     f"wall {r['wall_s']:.0f} s, teacher cache {r['teacher_cache_s']:.1f} s, train {r['train_s']:.1f} s"))
    limit = 64 if a.quick else 2048
    merges = {}
    for procs in sorted({1, n_gpus}):
        merges[procs] = check_merge(a.workdir, procs, 3, limit, a.workdir / f"merge-{procs}", a.device)
        images = sum(len(r["alpha_curve"]) + 1 for r in merges[procs]["report"]["results"]) * 3 * limit
        rows.append((f"merge TA+TSV-M, 3 tasks x {limit} val/test images, {procs} process(es)",
                     f"{images / merges[procs]['wall_s']:.0f}", "", None,
                     f"wall {merges[procs]['wall_s']:.0f} s (process start included); "
                     + (same_merge(merges[1], merges[procs]) if procs > 1 else "the reference")))
    for procs in sorted({1, n_gpus}) if not a.quick else []:  # --quick: its merges search the whole α grid,
        r = check_run(a.workdir, procs, steps, a.workdir / f"run-{procs}", a.device)  # minutes on a CPU
        rows.append((f"run, 3 tasks ({', '.join(r['conditioned']) or 'none'} conditioned, {steps} steps), "
                     f"{procs} process(es)", "", "", None,
                     f"wall {r['wall_s']:.0f} s: " + ", ".join(f"{s['stage']} {s['seconds']:.0f} s" for s in r["stages"])))
    ts = check_tsvm(a.workdir, device, tasks)
    rows.append((f"TSV-M merge, {tasks} tasks, on {device.type}", "", "", ts["peak_gpu_mb"], f"{ts['seconds']:.1f} s"))
    print(f"\nMFU against {peak / 1e12:.0f} TFLOP/s dense bf16; a ViT-B/32 forward pass = {fwd / 1e9:.2f} GFLOP/image"
          if peak else "\nMFU: no peak known for this device (--peak-tflops)")
    print("| check | images/s | MFU | peak GPU memory MB | note |")
    print("|:--|--:|--:|--:|:--|")
    for name, rate, m, mem, note in rows:
        print(f"| {name} | {rate} | {m} | {f'{mem:.0f}' if mem else 'n/a'} | {note} |")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
