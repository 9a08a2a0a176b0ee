"""Benchmark at the size users work at: ViT-B/32 look-alikes, offline, every stage of hfdistac in one table.

Builds (once, into ``--workdir``):

* a base ``CLIPModel`` with the exact ``openai/clip-vit-base-patch32`` architecture (``CLIPConfig()``'s defaults:
  151 M parameters, random weights), the real-size CLIP BPE tokenizer (49,408 tokens, from the
  ``bpe_simple_vocab_16e6.txt.gz`` inside the open-clip-torch wheel: ``pip download --no-deps open-clip-torch``;
  nothing is installed) and a 224-px ``CLIPImageProcessor``;
* fine-tuned vision towers keyed ``vision_model.*`` as the FusionBench Hub checkpoints are (θ₀ + noise; one of
  them with 5× the norm);
* three datasets at native image sizes: 10 classes at 32 px (SVHN/CIFAR-like), 43 classes at 30–60 px
  (GTSRB-like), 397 classes at ~256×340 px JPEG (SUN397-like); the first two in the Hub's parquet layout, the
  third in ``save_to_disk`` layout.

Then runs each stage in its own process (peak RSS is that process's ``ru_maxrss``; CPU seconds are process
time) and prints one table: load base / fine-tuned, task vector + norms, the zero-shot head of each dataset (and
for the 397-class one the per-class reference loop, with the largest difference), evaluation images/s, one
DisTaC KD step (fp32 and bf16 autocast), ``condition`` (peak RSS), ``merge --method all`` with evaluation on
the 8-task look-alike (peak RSS) and SAMerging, and every merge method's time and peak RSS at T = 2 … 20 tasks
(``benchmarks/bench_merge.py``'s children on task vectors of these shapes).

Usage::

    pip download --no-deps open-clip-torch -d wheels      # once, for the tokenizer's vocabulary
    python benchmarks/bench_real_size.py --workdir /tmp/real --bpe-wheel wheels/open_clip_torch-*.whl
    python benchmarks/bench_real_size.py --workdir /tmp/real --repo ../old-checkout   # the same with another build
    python benchmarks/bench_real_size.py --stages heads kd --threads 2
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("load", "heads", "eval", "kd", "condition", "merge", "samerging", "scaling")
DATASETS = {"digits10": (10, 32, 32, "parquet"), "signs43": (43, 30, 60, "parquet"),
            "scenes397": (397, 256, 340, "save_to_disk")}
MERGE_TASKS = 8


# ================================================================================================ building
def _bpe_vocab(wheel: str) -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary and merges, built from the BPE file of the open-clip-torch wheel (as open_clip does)."""
    import gzip
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        lines = gzip.decompress(z.read("open_clip/bpe_simple_vocab_16e6.txt.gz")).decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_chars = [chr(c) for c in cs]
    vocab = byte_chars + [v + "</w>" for v in byte_chars] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, [" ".join(m) for m in merges]


def build(workdir: Path, wheel: str, n_towers: int) -> dict:
    """The look-alikes (skipped when already there)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer, CLIPVisionModel

    base_dir = workdir / "base"
    if not (base_dir / "model.safetensors").is_file():
        vocab, merges = _bpe_vocab(wheel)
        base_dir.mkdir(parents=True, exist_ok=True)
        (base_dir / "vocab.json").write_text(json.dumps(vocab))
        (base_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        tok = CLIPTokenizer(str(base_dir / "vocab.json"), str(base_dir / "merges.txt"))
        torch.manual_seed(0)
        model = CLIPModel(CLIPConfig())  # openai/clip-vit-base-patch32's architecture
        model.save_pretrained(base_dir)
        tok.save_pretrained(base_dir)
        CLIPImageProcessor(crop_size={"height": 224, "width": 224}, size={"shortest_edge": 224}).save_pretrained(base_dir)
        del model
    vision = None
    for t in range(n_towers):
        d = workdir / "models" / f"ft{t}"
        if (d / "model.safetensors").is_file():
            continue
        if vision is None:
            vision = CLIPVisionModel.from_pretrained(base_dir)
            theta0 = {k: v.clone() for k, v in vision.state_dict().items()}
        g = torch.Generator().manual_seed(100 + t)
        scale = 5e-3 if t == 0 else 1e-3  # ft0: 5x the norm of the others
        vision.load_state_dict({k: v + scale * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                                for k, v in theta0.items()})
        _save_tower(vision, d)
    for name, (classes, lo, hi, layout) in DATASETS.items():
        if not (workdir / "data" / name).exists():
            _dataset(workdir / "data" / name, classes, lo, hi, layout, seed=len(name))
    return {"built": str(workdir)}


def _save_tower(vision, directory: Path) -> None:
    """``save_pretrained``, then keys prefixed ``vision_model.`` (the FusionBench Hub checkpoints' layout)."""
    from safetensors.torch import load_file, save_file

    vision.save_pretrained(directory)
    w = load_file(str(directory / "model.safetensors"))
    save_file({k if k.startswith("vision_model.") else f"vision_model.{k}": v.contiguous() for k, v in w.items()},
              str(directory / "model.safetensors"), metadata={"format": "pt"})


def _dataset(path: Path, classes: int, lo: int, hi: int, layout: str, seed: int, n_train: int = 256,
             n_test: int = 128) -> None:
    import io

    import numpy as np
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    feats = Features({"image": Image(), "label": ClassLabel(names=[f"class {i}" for i in range(classes)])})

    def split(n: int) -> Dataset:
        rows = {"image": [], "label": []}
        for _ in range(n):
            h, w = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
            arr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
            buf = io.BytesIO()
            PILImage.fromarray(arr).save(buf, format="JPEG" if hi > 100 else "PNG", quality=90)
            rows["image"].append({"bytes": buf.getvalue(), "path": None})
            rows["label"].append(int(rng.integers(0, classes)))
        return Dataset.from_dict(rows, features=feats)

    train, test = split(n_train), split(n_test)
    if layout == "save_to_disk":
        DatasetDict({"train": train, "test": test}).save_to_disk(str(path))
    else:
        (path / "data").mkdir(parents=True)
        train.to_parquet(str(path / "data" / "train-00000-of-00001.parquet"))
        test.to_parquet(str(path / "data" / "test-00000-of-00001.parquet"))


# ================================================================================================ stages
def _clock():
    return time.perf_counter(), time.process_time()


def _since(start) -> dict:
    return {"wall_s": time.perf_counter() - start[0], "cpu_s": time.process_time() - start[1]}


def stage_load(w: Path) -> dict:
    from hfdistac.checkpoints import load_base, load_finetuned
    from hfdistac.task_vectors import compute_task_vector, per_layer_norms

    c = _clock()
    base = load_base(str(w / "base"))
    out = {"load base": _since(c)}
    theta0 = base.weights
    c = _clock()
    ft = load_finetuned(str(w / "models" / "ft1"))
    out["load fine-tuned"] = _since(c)
    c = _clock()
    tv = compute_task_vector(theta0, ft.weights)
    tv.norm()
    per_layer_norms(tv)
    out["task vector + norms"] = _since(c)
    return out


def _per_class_head(clip, tokenizer, names, templates):
    """The head as built before prompts were batched across classes: one text-tower call per class."""
    import torch

    rows = []
    with torch.no_grad():
        for name in names:
            enc = tokenizer([t.format(c=name) for t in templates], padding=True, truncation=True, max_length=77,
                            return_tensors="pt")
            out = clip.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            e = out if isinstance(out, torch.Tensor) else out.pooler_output
            e = e.float() / e.float().norm(dim=-1, keepdim=True)
            rows.append(e.mean(0) / e.mean(0).norm())
    return torch.stack(rows)


def stage_heads(w: Path) -> dict:
    from hfdistac.checkpoints import load_base
    from hfdistac.data import DatasetSpec, load_image_data
    from hfdistac.evaluation import head_for_task

    base = load_base(str(w / "base"))
    out = {}
    templates = ["a photo of a {c}.", "a photo of the {c}."]  # SUN397's two
    for name in DATASETS:
        data = load_image_data(DatasetSpec(str(w / "data" / name)), "test")
        c = _clock()
        head = head_for_task(base, data, templates=templates, use_cache=False)
        out[f"head, {len(data.class_names)} classes x 2 templates"] = _since(c)
        if name == "scenes397":
            c = _clock()
            ref = _per_class_head(base.clip, base.tokenizer, head.class_names, templates)
            out["head, 397 classes, per-class loop (reference)"] = _since(c)
            out["head max |batched - per-class|"] = float((head.weight - ref).abs().max())
    return out


def stage_eval(w: Path) -> dict:
    from hfdistac.checkpoints import build_vision_model, load_base, load_finetuned
    from hfdistac.data import DatasetSpec, load_image_data
    from hfdistac.evaluation import evaluate_model, head_for_task

    base = load_base(str(w / "base"))
    data = load_image_data(DatasetSpec(str(w / "data" / "digits10")), "test")
    head = head_for_task(base, data, use_cache=False)
    ft = load_finetuned(str(w / "models" / "ft1"))
    model = build_vision_model(ft.config, ft.weights)
    out = {}
    for mp in ("no", "bf16"):
        c = _clock()
        m = evaluate_model(model, head, data, base.image_processor, batch_size=64, mixed_precision=mp)
        t = _since(c)
        out[f"evaluation ({'fp32' if mp == 'no' else 'bf16 autocast'}), images/s"] = {**t, "images": m["n"],
                                                                                     "rate": m["n"] / t["wall_s"]}
    return out


def stage_kd(w: Path, batch: int = 16, steps: int = 3) -> dict:
    """One DisTaC step (teacher forward, student forward/backward, anchor, clipping, AdamW), images/s."""
    import torch
    import torch.nn.functional as F

    from hfdistac.checkpoints import build_vision_model, load_base, load_finetuned
    from hfdistac.data import DatasetSpec, load_image_data
    from hfdistac.evaluation import autocast_context, head_for_task
    from hfdistac.heads import ZeroShotClassifier

    base = load_base(str(w / "base"))
    data = load_image_data(DatasetSpec(str(w / "data" / "digits10")), "train")
    head = head_for_task(base, data, use_cache=False)
    ft = load_finetuned(str(w / "models" / "ft1"))
    pixels = next(iter(data.loader(base.image_processor, batch)))["pixel_values"]
    teacher = ZeroShotClassifier(build_vision_model(ft.config, ft.weights), head).eval().requires_grad_(False)
    student = ZeroShotClassifier(build_vision_model(ft.config, base.weights), head).train()
    anchor = {k: p.detach().clone() for k, p in student.vision_model.named_parameters()}
    opt = torch.optim.AdamW(student.vision_model.parameters(), lr=1e-5)
    out = {}
    for mp in ("no", "bf16"):
        times = []
        for i in range(steps + 1):
            c = _clock()
            with torch.no_grad(), autocast_context(torch.device("cpu"), mp):
                zt = teacher(pixels).float()
            with autocast_context(torch.device("cpu"), mp):
                zs = student(pixels).float()
            kd = 100 * F.kl_div(F.log_softmax(zs / 10, -1), F.log_softmax(zt / 10, -1), log_target=True,
                                reduction="batchmean")
            reg = sum((p - anchor[k]).pow(2).sum() for k, p in student.vision_model.named_parameters())
            (kd + 0.5 * reg).backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i:  # the first step warms up
                times.append(_since(c))
        med = statistics.median(t["cpu_s"] for t in times)
        out[f"KD step ({'fp32' if mp == 'no' else 'bf16 autocast'}), batch {batch}, images/s"] = {
            "wall_s": statistics.median(t["wall_s"] for t in times), "cpu_s": med,
            "rate": batch / statistics.median(t["wall_s"] for t in times)}
    return out


def stage_condition(w: Path, steps: int = 4) -> dict:
    from hfdistac.distac import ConditionConfig, run_condition

    out_dir = w / "runs" / f"condition-{os.getpid()}"
    c = _clock()
    report = run_condition(ConditionConfig(
        model=str(w / "models" / "ft0"), base=str(w / "base"), data=str(w / "data" / "digits10"),
        reference=[str(w / "models" / f"ft{t}") for t in (1, 2)], steps=steps, batch_size=32, micro_batch_size=8,
        eval_limit=64, output=str(out_dir), overwrite=True, progress=False))
    t = _since(c)
    import hashlib

    digest = hashlib.sha256()
    from safetensors.torch import load_file

    w_out = load_file(str(out_dir / "model.safetensors"))
    for k in sorted(w_out):
        digest.update(w_out[k].numpy().tobytes())
    return {f"condition ({steps} steps x 32 images, micro-batch 8)": {**t, "weights_sha256": digest.hexdigest()[:16],
                                                                     "norm_after": report["norm_after"]}}


def _merge_recipe(w: Path, tasks: int) -> Path:
    import yaml

    names = list(DATASETS)
    recipe = {"format": "hfdistac.recipe.v1", "name": f"lookalike-{tasks}", "base": str(w / "base"), "tasks": [
        {"name": f"t{t}", "model": str(w / "models" / f"ft{t}"), "dataset": str(w / "data" / names[t % 3])}
        for t in range(tasks)]}
    path = w / f"recipe-{tasks}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def stage_merge(w: Path, method: str = "all", wudi_iterations: int = 300) -> dict:
    """``merge`` with evaluation on the 8-task look-alike: 16 validation images x 2 α per method and task, 16 test
    images per task (what is resident does not depend on how many images are scored; the time does)."""
    import dataclasses

    from hfdistac.merge_eval import MergeConfig, run_merge

    extra = {"steps": 4, "batches_per_task": 2} if method == "samerging" else \
        {"wudi_iterations": wudi_iterations} if "wudi_iterations" in {f.name for f in dataclasses.fields(MergeConfig)} \
        else {}  # an older build (--repo) has no WUDI
    c = _clock()
    run_merge(MergeConfig(recipe=str(_merge_recipe(w, MERGE_TASKS)), method=method, val_limit=16, test_limit=16,
                          alpha_grid=[0.3, 0.4], output=str(w / "runs" / f"merge-{method}-{os.getpid()}"),
                          overwrite=True, progress=False, **extra))
    label = f"merge --method all, {MERGE_TASKS} tasks, with evaluation (WUDI {wudi_iterations} it.)" \
        if method == "all" else f"merge --method samerging, {MERGE_TASKS} tasks (4 steps)"
    return {label: _since(c)}


def stage_scaling(w: Path, tasks: list[int], threads: int, wudi_iterations: int,
                  methods: list[str] | None = None) -> dict:
    """Every merge method alone at T tasks (bench_merge.py's children on task vectors of ViT-B/32 shapes)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_merge", Path(__file__).with_name("bench_merge.py"))
    bm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bm)
    out = {}
    tv_dir = w / "task_vectors"
    tv_dir.mkdir(exist_ok=True)
    bm._child(["_generate", str(tv_dir), str(max(tasks)), "0"])
    bm._child(["_grams", str(tv_dir), str(max(tasks)), "0"])
    for t in tasks:
        for method in methods or bm.ALL_METHODS:
            r = bm._child(["_run", str(tv_dir), str(t), method, str(threads), str(wudi_iterations)])
            out[f"{method}, T = {t}"] = {"wall_s": r["merge_s"], "cpu_s": r["merge_cpu_s"], "peak_mb": r["peak_mb"]}
    return out


# ================================================================================================ driver
def _run_stage(stage: str, a: argparse.Namespace) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(Path(a.workdir) / "hf_home"))
    if a.repo:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(a.repo).resolve()), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--child", stage, "--workdir", str(a.workdir), "--threads", str(a.threads),
           "--wudi-iterations", str(a.wudi_iterations), "--scaling-tasks", *map(str, a.scaling_tasks)]
    if a.scaling_methods:
        cmd += ["--scaling-methods", *a.scaling_methods]
    if a.bpe_wheel:
        cmd += ["--bpe-wheel", str(a.bpe_wheel)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(stage: str, a: argparse.Namespace) -> None:
    import torch

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    try:
        from hfdistac import runtime
    except ImportError:  # an older build (--repo) without the module
        runtime = None
    # as the command line does (an older build had release_freed_memory instead)
    setting = getattr(runtime, "tune_allocator", None) or getattr(runtime, "release_freed_memory", None)
    if setting is not None:
        setting()
    w = Path(a.workdir)
    fn = {"load": stage_load, "heads": stage_heads, "eval": stage_eval, "kd": stage_kd, "condition": stage_condition,
          "merge": lambda w: stage_merge(w, "all", a.wudi_iterations), "samerging": lambda w: stage_merge(w, "samerging"),
          "scaling": lambda w: stage_scaling(w, a.scaling_tasks, a.threads, a.wudi_iterations, a.scaling_methods),
          "build": lambda w: build(w, a.bpe_wheel, MERGE_TASKS)}[stage]
    result = fn(w)
    result["_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("bench-real-size"))
    p.add_argument("--bpe-wheel", default=None, help="the open-clip-torch wheel (default: the first in ./wheels)")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--repo", default=None, help="import hfdistac from this checkout instead (e.g. an older build)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per stage (0: torch's default)")
    p.add_argument("--scaling-tasks", type=int, nargs="+", default=[2, 4, 8, 14, 20])
    p.add_argument("--scaling-methods", nargs="+", default=None, help="merge methods of the scaling stage "
                   "(default: all of bench_merge.py's)")
    p.add_argument("--wudi-iterations", type=int, default=300)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child, a)
        return
    a.bpe_wheel = a.bpe_wheel or next(iter(sorted(glob.glob("wheels/open_clip_torch-*.whl"))), None)
    if a.bpe_wheel is None and not (a.workdir / "base" / "vocab.json").is_file():
        raise SystemExit("no open-clip-torch wheel: pip download --no-deps open-clip-torch -d wheels")
    a.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    _run_stage("build", a)
    print(f"look-alikes in {a.workdir} (built or reused in {time.perf_counter() - start:.0f} s); hfdistac from "
          f"{a.repo or 'this checkout'}; torch threads {a.threads or 'default'}\n")
    print("| stage | wall s | CPU s | images/s | peak RSS MB (stage process) | note |")
    print("|:--|--:|--:|--:|--:|:--|", flush=True)
    for stage in a.stages:
        result = _run_stage(stage, a)
        rss = result.pop("_peak_rss_mb")
        for label, r in result.items():
            if not isinstance(r, dict):
                print(f"| {label} | | | | | {_fmt(r)} |")
                continue
            note = ", ".join(f"{k} {_fmt(v)}" for k, v in r.items() if k not in ("wall_s", "cpu_s", "rate", "peak_mb"))
            print(f"| {label} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {_fmt(r['rate']) if 'rate' in r else ''} | "
                  f"{r.get('peak_mb', rss):.0f} | {note} |", flush=True)


if __name__ == "__main__":
    main()
