"""Benchmark: `run_condition`'s loop vs a straightforward Algorithm-1 loop, on a CPU-sized CLIP.

Both variants condition the same fine-tuned tower (same base, κ, temperatures, β, AdamW, cosine schedule,
gradient clipping, global batch and batch order) on the same images, in fp32 and one process:

* **straightforward**: Algorithm 1 as written — every step decodes and preprocesses its images and runs the
  teacher forward pass, then the student forward/backward (the shape of the paper's released code);
* **hfdistac**: ``run_condition`` — teacher logits computed once per image and looked up by index,
  preprocessed images kept in memory (both timed: the caching pass is part of its cost);
* **hfdistac-nocache**: ``run_condition`` with ``cache_teacher_logits=False`` (the teacher runs every step, as in
  the straightforward loop): what the loop's own machinery costs.

Each variant runs in its own process (peak RSS is that process's ``ru_maxrss``, imports included), several
times, interleaved; the table shows medians. The input pipeline alone (decode + ``CLIPImageProcessor``) is
timed too, to show it is not what limits the training loop. Final weights of the two variants must agree.

Usage::

    python benchmarks/bench_condition.py                 # hidden 256, 6 layers, 64 px; 3 repeats, 1 thread
    python benchmarks/bench_condition.py --repeats 5 --steps 60
    python benchmarks/bench_condition.py --size vit-b32 --steps 16 --batch-size 8 --train-images 16 --repeats 2
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

#: Tower sizes: hidden width, layers, heads, image px, patch px, projection width.
VARIANTS = ("straightforward", "hfdistac", "hfdistac-nocache", "pipeline")
SIZES = {"small": (256, 6, 4, 64, 8, 128), "vit-b32": (768, 12, 12, 224, 32, 512)}


# ------------------------------------------------------------------------------------------------ assets
def build_assets(root: Path, n_train: int, size: str = "small", seed: int = 0) -> dict[str, str]:
    """Base CLIP of ``SIZES[size]``, a fine-tuned tower (base + noise) and a parquet dataset."""
    import numpy as np
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage
    from transformers import CLIPModel, CLIPVisionModel

    from hfdistac.example_suite.domains import TASK_BY_NAME, sample, vocabulary
    from hfdistac.tiny import build_word_tokenizer, tiny_clip_config, tiny_image_processor

    torch.manual_seed(seed)
    tok = build_word_tokenizer(vocabulary())
    hidden, layers, heads, image, patch, projection = SIZES[size]
    cfg = tiny_clip_config(tok, hidden_size=hidden, num_layers=layers, num_heads=heads, image_size=image,
                           patch_size=patch, projection_dim=projection)
    base = CLIPModel(cfg)
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    tiny_image_processor(image).save_pretrained(root / "base")
    ft = CLIPVisionModel(cfg.vision_config)
    ft.load_state_dict(base.vision_model.state_dict())
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in ft.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    ft.save_pretrained(root / "ft")

    rng = np.random.default_rng(seed)
    images, labels = sample("colours", n_train + 32, rng)
    # stored larger than the model input (80 px, nearest-neighbour): the processor must resize + crop
    pixels = [PILImage.fromarray(a).resize((80, 80), PILImage.NEAREST) for a in images]
    task = TASK_BY_NAME["colours"]
    feats = Features({"image": Image(), "label": ClassLabel(names=list(task.classes))})
    (root / "data" / "data").mkdir(parents=True)
    for split, sl in (("train", slice(0, n_train)), ("test", slice(n_train, None))):
        ds = Dataset.from_dict({"image": pixels[sl], "label": labels[sl].tolist()}, features=feats)
        ds.to_parquet(str(root / "data" / "data" / f"{split}-00000-of-00001.parquet"))
    return {"base": str(root / "base"), "ft": str(root / "ft"), "data": str(root / "data")}


# ------------------------------------------------------------------------------------------------ variants
def run_hfdistac(a: dict, out: Path, cache: bool = True) -> dict:
    from hfdistac.distac import ConditionConfig, run_condition

    report = run_condition(ConditionConfig(
        model=a["ft"], base=a["base"], data=a["data"], kappa=a["kappa"], preset="norm", steps=a["steps"],
        batch_size=a["batch_size"], lr=a["lr"], seed=0, eval_split="none", output=str(out), overwrite=True,
        progress=False, cache_teacher_logits=cache))
    t = report["timing"]
    return {"seconds": t["teacher_cache_s"] + t["train_s"], "cpu_seconds": t["cpu_s"],
            "cache_seconds": t["teacher_cache_s"],
            "weights": str(out / "model.safetensors")}


def run_straightforward(a: dict, out: Path) -> dict:
    """Algorithm 1 as written: preprocess + teacher forward + student forward/backward every step."""
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from hfdistac.checkpoints import build_vision_model, load_base, load_finetuned
    from hfdistac.data import DatasetSpec, load_image_data
    from hfdistac.distac import cosine_with_warmup, effective_warmup, global_batch_indices
    from hfdistac.evaluation import head_for_task
    from hfdistac.heads import ZeroShotClassifier
    from hfdistac.task_vectors import apply_task_vector, compute_task_vector

    torch.manual_seed(0)
    base, ft = load_base(a["base"]), load_finetuned(a["ft"])
    data = load_image_data(DatasetSpec(a["data"]), "train", streaming=False)
    head = head_for_task(base, data)
    theta0 = base.weights
    tau = compute_task_vector(theta0, ft.weights)
    theta_init = apply_task_vector(theta0, tau, a["kappa"])
    teacher = ZeroShotClassifier(build_vision_model(base.vision_config, ft.weights), head).eval()
    teacher.requires_grad_(False)
    student = ZeroShotClassifier(build_vision_model(base.vision_config, theta_init), head).train()
    named = {f"vision_model.{k}": p for k, p in student.vision_model.named_parameters()}
    anchor = {k: theta_init[k].clone() for k in named}
    opt = torch.optim.AdamW(student.vision_model.parameters(), lr=a["lr"], weight_decay=0.0)
    warmup = effective_warmup(a["steps"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(cosine_with_warmup, total=a["steps"],
                                                                     warmup=warmup))
    t_tcr = t_stu = 10.0
    n = len(data.dataset)
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(a["steps"]):
        idx = global_batch_indices(n, a["batch_size"], step, 0)
        images = [im.convert("RGB") for im in data.dataset.select(idx)["image"]]
        pixels = base.image_processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            z_t = teacher(pixels)
        z_s = student(pixels)
        kd = F.kl_div(F.log_softmax(z_s / t_stu, -1), F.log_softmax(z_t / t_tcr, -1), log_target=True,
                      reduction="batchmean") * t_tcr * t_stu
        reg = sum(((p - anchor[k]) ** 2).sum() for k, p in named.items())
        (kd + 0.5 * reg).backward()
        torch.nn.utils.clip_grad_norm_(student.vision_model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: p.detach().contiguous() for k, p in named.items()}, str(out / "model.safetensors"))
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "weights": str(out / "model.safetensors")}


def run_pipeline(a: dict, out: Path) -> dict:
    """Decode + preprocess every training image once, in batches (the input pipeline alone)."""
    from hfdistac.checkpoints import load_base
    from hfdistac.data import DatasetSpec, load_image_data

    base = load_base(a["base"])
    data = load_image_data(DatasetSpec(a["data"]), "train", streaming=False)
    start, cpu_start = time.perf_counter(), time.process_time()
    count = 0
    for batch in data.loader(base.image_processor, a["batch_size"]):
        count += len(batch["pixel_values"])
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start, "images": count}


def worker(kind: str, args_json: str, out: str) -> None:
    a = json.loads(args_json)
    torch.set_num_threads(a["threads"])
    fn = {"hfdistac": run_hfdistac, "hfdistac-nocache": functools.partial(run_hfdistac, cache=False),
          "straightforward": run_straightforward, "pipeline": run_pipeline}[kind]
    result = fn(a, Path(out))
    result["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


# ------------------------------------------------------------------------------------------------ driver
def _spawn(kind: str, a: dict, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, "--args", json.dumps(a), "--out", str(out)],
                          capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _compare(path_a: str, path_b: str, assets: dict) -> dict[str, float]:
    """How far apart the two results are, relative to how far training moved them from θ_init = θ₀ + κτ."""
    from safetensors.torch import load_file

    from hfdistac.checkpoints import read_vision_weights

    a, b = load_file(path_a), load_file(path_b)
    theta0, ft = read_vision_weights(assets["base"]), read_vision_weights(assets["ft"])
    init = {k: theta0[k] + assets["kappa"] * (ft[k] - theta0[k]) for k in a}

    def dist(x, y):
        return math.sqrt(sum(float((x[k].double() - y[k].double()).pow(2).sum()) for k in x))

    return {"diff": dist(a, b), "moved": dist(a, init), "max_abs": max(float((a[k] - b[k]).abs().max()) for k in a)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--args", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--train-images", type=int, default=128, help="8 epochs by default, like a DisTaC run "
                   "(500 x 128 images read from a task's few-thousand-image train split)")
    # One thread: on a small shared CPU, OpenMP threads of concurrent jobs oversubscribe the cores and every
    # small tensor op then waits a scheduler slice (measured: AdamW step 2 s with 2 threads vs 0.03 s with 1).
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", choices=sorted(SIZES), default="small",
                   help="tower size: small (hidden 256, 6 layers, 64 px) or vit-b32 (ViT-B/32's 768 x 12 layers, 224 px)")
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.args, args.out)
        return
    with tempfile.TemporaryDirectory(prefix="bench-condition-") as tmp:
        root = Path(tmp)
        assets = build_assets(root, args.train_images, args.size)
        a = {**assets, "steps": args.steps, "batch_size": args.batch_size, "lr": 1e-5, "kappa": 0.5,
             "threads": args.threads}
        runs: dict[str, list[dict]] = {kind: [] for kind in VARIANTS}
        for r in range(args.repeats):  # interleaved, so drifting machine load hits all alike
            for kind in VARIANTS:
                runs[kind].append(_spawn(kind, a, root / f"{kind}-{r}"))
        cmp = {kind: _compare(runs["straightforward"][0]["weights"], runs[kind][0]["weights"], a)
               for kind in ("hfdistac", "hfdistac-nocache")}

    images = args.steps * args.batch_size
    cpu = {k: statistics.median(x["cpu_seconds"] for x in v) for k, v in runs.items()}
    med = {k: statistics.median(x["seconds"] for x in v) for k, v in runs.items()}
    best = {k: min(x["seconds"] for x in v) for k, v in runs.items()}
    rss = {k: statistics.median(x["max_rss_mib"] for x in v) for k, v in runs.items()}
    hidden, layers, _, image, patch, _ = SIZES[args.size]
    print(f"\nCLIP ViT hidden {hidden}, {layers} layers, {image} px / patch {patch}; {args.train_images} training "
          f"images (80 px parquet), {args.steps} steps x batch {args.batch_size} (= {images / args.train_images:.0f} "
          f"epochs), fp32, 1 process, {args.threads} thread(s); {args.repeats} interleaved runs per variant.\n"
          "CPU seconds (process time: what the work costs, insensitive to other jobs on a shared machine) are the "
          "primary measure; wall-clock median and best are shown beside them.\n")
    print("| variant | CPU s (median) | steps/s (CPU) | images/s (CPU) | wall s median / best | peak RSS (MiB) |")
    print("|:--|--:|--:|--:|--:|--:|")
    labels = {"straightforward": "straightforward Algorithm 1", "hfdistac": "hfdistac run_condition",
              "hfdistac-nocache": "hfdistac run_condition --no-cache-teacher-logits"}
    for kind, label in labels.items():
        print(f"| {label} | {cpu[kind]:.2f} | {args.steps / cpu[kind]:.2f} | {images / cpu[kind]:.1f} | "
              f"{med[kind]:.2f} / {best[kind]:.2f} | {rss[kind]:.0f} |")
    n_pipe = runs["pipeline"][0]["images"]
    print(f"| input pipeline alone (decode + preprocess, {n_pipe} images) | {cpu['pipeline']:.2f} | - | "
          f"{n_pipe / cpu['pipeline']:.0f} | {med['pipeline']:.2f} / {best['pipeline']:.2f} | {rss['pipeline']:.0f} |")
    cache = statistics.median(x["cache_seconds"] for x in runs["hfdistac"])
    for kind in ("hfdistac", "hfdistac-nocache"):
        pairs = [s["cpu_seconds"] / h["cpu_seconds"] for s, h in zip(runs["straightforward"], runs[kind], strict=True)]
        print(f"\n{labels[kind]}: speed-up over the straightforward loop (CPU time) "
              f"{cpu['straightforward'] / cpu[kind]:.2f}x of the medians, per interleaved pair "
              f"{', '.join(f'{p:.2f}' for p in pairs)}; wall clock: {med['straightforward'] / med[kind]:.2f}x of the "
              f"medians, {best['straightforward'] / best[kind]:.2f}x of the best runs. final weights: "
              f"‖θ_straightforward − θ‖ = {cmp[kind]['diff']:.3e} (max |Δ| {cmp[kind]['max_abs']:.1e}) vs "
              f"‖θ − θ_init‖ = {cmp[kind]['moved']:.3e} moved by training")
    print(f"hfdistac's time includes the teacher-logit caching pass ({cache:.2f} s wall).")
    print("all runs (CPU s / wall s): " + "; ".join(
        f"{k}: " + ", ".join(f"{x['cpu_seconds']:.1f}/{x['seconds']:.1f}" for x in v) for k, v in runs.items()))


if __name__ == "__main__":
    main()
