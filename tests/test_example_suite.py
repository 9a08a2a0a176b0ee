"""The built-in example suite: layout and formats, the paper's four conditions, determinism, caching."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from hfdistac.errors import InputError
from hfdistac.example_suite import SuitePlan, build_example_suite, suite_status
from tests._fixtures_suite import SUITE_SEED, SUITE_TASKS, suite_plan

# A plan small enough to build in seconds: for the determinism, caching and atomicity tests (the figures
# it produces mean nothing).
TINY_PLAN = SuitePlan(n_train=20, n_test=10, pretrain_per_task=8, pretrain_steps=3, pretrain_batch=32,
                      finetune_steps=2, finetune_batch=8)


def _front_matter(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def _suite(example_suite) -> dict:
    return json.loads((example_suite / "suite.json").read_text())


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "suite.json"}


# ---------------------------------------------------------------------------------------------- layout


def test_layout(example_suite):
    fig = _suite(example_suite)
    assert fig["complete"] is True and fig["num_tasks"] == SUITE_TASKS and fig["seed"] == SUITE_SEED
    names = fig["task_names"]
    assert len(names) == SUITE_TASKS
    assert (example_suite / "README.md").is_file()
    for sub in ("config.json", "model.safetensors", "tokenizer_config.json", "tokenizer.json",
                "preprocessor_config.json", "README.md"):
        assert (example_suite / "base" / sub).is_file(), sub
    for n in names:
        for variant in ("", "-highlr", "-ls"):
            d = example_suite / "models" / f"{n}{variant}"
            assert (d / "config.json").is_file() and (d / "model.safetensors").is_file() and (d / "README.md").is_file()
        for split in ("train", "holdout", "test"):
            assert (example_suite / "data" / n / "data" / f"{split}-00000-of-00001.parquet").is_file()
    assert suite_status(example_suite) == "complete"


def test_models_load_and_match_base(example_suite):
    from safetensors import safe_open
    from transformers import AutoImageProcessor, CLIPImageProcessor, CLIPModel, CLIPTokenizer, CLIPVisionModel

    from hfdistac.heads import build_head

    base = CLIPModel.from_pretrained(example_suite / "base")
    tok = CLIPTokenizer.from_pretrained(example_suite / "base")
    CLIPImageProcessor.from_pretrained(example_suite / "base")
    name = _suite(example_suite)["task_names"][0]
    vm = CLIPVisionModel.from_pretrained(example_suite / "models" / name)
    for variant in ("", "-highlr", "-ls"):  # every model folder loads its processor, as Hub models do
        processor = AutoImageProcessor.from_pretrained(example_suite / "models" / f"{name}{variant}")
        assert processor.to_dict() == CLIPImageProcessor.from_pretrained(example_suite / "base").to_dict()
    assert set(vm.state_dict()) == set(base.vision_model.state_dict())
    with safe_open(str(example_suite / "models" / name / "model.safetensors"), framework="pt") as f:
        assert all(k.startswith("vision_model.") for k in f.keys())
    # the suite's tokenizer keeps every class-name word one token
    head = build_head(base, tok, ["red colours", "saltire glyphs"], ["a photo of a {c}."])
    assert head.weight.shape[0] == 2
    from hfdistac.example_suite import TASKS

    for task in TASKS:
        for c in task.classes:  # "a", "photo", "of", "a", the class's words, "."
            assert len(tok.tokenize(f"a photo of a {c}.")) == 5 + len(c.split()), c


def test_datasets_load_with_class_labels(example_suite, tmp_path):
    import datasets
    from datasets import ClassLabel, load_dataset

    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0
    fig = _suite(example_suite)
    name = fig["task_names"][0]
    # a cache of its own: datasets 5.x keys a carded directory's cache by its name and card only, so a smaller
    # suite another test loaded would be read back here (hfdistac's own loader avoids it: data/splits.py)
    ds = load_dataset(str(example_suite / "data" / name), cache_dir=str(tmp_path / "datasets-cache"))
    assert set(ds) == {"train", "holdout", "test"}
    plan = fig["plan"]
    n_val = round(plan["val_fraction"] * plan["n_train"])
    assert ds["holdout"].num_rows == n_val and ds["train"].num_rows == plan["n_train"] - n_val
    feat = ds["train"].features["label"]
    assert isinstance(feat, ClassLabel) and feat.names == fig["tasks"][name]["classes"]
    assert ds["test"].num_rows == fig["plan"]["n_test"]
    img = ds["test"][0]["image"]
    assert img.size == (fig["plan"]["image_size"],) * 2
    stream = load_dataset(str(example_suite / "data" / name), split="train", streaming=True)
    assert isinstance(stream.features["label"], ClassLabel)
    assert next(iter(stream))["label"] in range(feat.num_classes)


def test_cards_and_recipes(example_suite):
    fig = _suite(example_suite)
    names = fig["task_names"]
    for n in names:
        for variant in ("", "-highlr", "-ls"):
            d = example_suite / "models" / f"{n}{variant}"
            meta = _front_matter(d / "README.md")
            own = meta["hfdistac"]
            assert "base_model" not in meta and "datasets" not in meta  # the Hub takes repo ids only there
            assert own["base"] == "../../base" and own["datasets"] == [f"../../data/{n}"]
            assert (d / own["base"]).resolve() == (example_suite / "base").resolve()
            assert (d / own["datasets"][0]).resolve().is_dir()
            assert meta["license"] and "hfdistac" in meta["tags"]
            assert own["distac_lr"] == fig["plan"]["distac_lr"]  # the rate inspect's command names
        assert _front_matter(example_suite / "data" / n / "README.md")["license"]
    mismatch = fig["mismatch_task"]
    expected = {"original": {n: f"../models/{n}" for n in names},
                "norm-mismatch": {n: f"../models/{n}{'-highlr' if n == mismatch else ''}" for n in names},
                "low-confidence": {n: f"../models/{n}-ls" for n in names}}
    for rname, models in expected.items():
        path = example_suite / "recipes" / f"{rname}.yaml"
        doc = yaml.safe_load(path.read_text())
        assert doc["format"] == "hfdistac.recipe.v1" and doc["name"] == rname and doc["description"]
        assert (path.parent / doc["base"]).resolve() == (example_suite / "base").resolve()
        assert [t["name"] for t in doc["tasks"]] == names
        for t in doc["tasks"]:
            assert t["model"] == models[t["name"]]
            assert (path.parent / t["model"]).is_dir() and (path.parent / t["dataset"]).is_dir()
            assert t["train_split"] == "train" and t["val_split"] == "holdout" and t["test_split"] == "test"
            assert "normalizer" not in t  # each scenario is normalised by its own source models


# ---------------------------------------------------------------------------------------------- conditions


def test_the_conditions_hold(example_suite):
    """(a)-(c) hold on the session's small suite, and its label-smoothed models are less sure and merge worse;
    the entropy ratio of (d), (e) and (f) are properties of the default build (REPRODUCTION.md), whose values
    test_entropy_and_ls_cost_checks_are_what_they_say checks."""
    fig = _suite(example_suite)
    checks = fig["checks"]
    assert all(checks[k]["holds"] for k in "abc"), "\n" + "\n".join(c["text"] for c in checks.values())
    assert fig["conditions_hold"] == all(c["holds"] for c in checks.values())
    tasks, merges = fig["tasks"], fig["merges"]
    plan = fig["plan"]
    for t in tasks.values():  # (a)
        assert t["standard"]["accuracy"] >= t["zero_shot"]["accuracy"] + plan["min_gain_points"]
        assert t["zero_shot"]["accuracy"] > t["chance"]  # the base model's zero-shot heads work
    zs = sum(t["zero_shot"]["accuracy"] for t in tasks.values()) / len(tasks)
    assert merges["original"]["mean_accuracy"] > zs  # (b)
    orig = merges["original"]["mean_normalized_accuracy"]
    assert all(t["highlr"]["norm"] >= 3 * t["standard"]["norm"] for t in tasks.values())  # (c)
    assert merges["norm-mismatch"]["mean_normalized_accuracy"] < orig
    h_std = sum(t["standard"]["entropy"] for t in tasks.values())
    h_ls = sum(t["ls"]["entropy"] for t in tasks.values())
    assert h_ls > 1.5 * h_std and checks["d"]["entropy_ratio"] == pytest.approx(h_ls / h_std, abs=0.006)
    assert merges["low-confidence"]["mean_normalized_accuracy"] < orig
    assert checks["d"]["holds"] == (h_ls / h_std >= plan["min_entropy_ratio"])


def test_entropy_and_ls_cost_checks_are_what_they_say(example_suite, tmp_path):
    """(e) from the per-task entropies; (f) re-measured through `hfdistac evaluate` on a written θ₀ + 0.3 τ_ls."""
    import shutil

    from safetensors.torch import load_file, save_file
    from transformers import CLIPModel

    from hfdistac.configs import EvaluateConfig
    from hfdistac.evaluation import run_evaluate

    fig = _suite(example_suite)
    tasks, e, f = fig["tasks"], fig["checks"]["e"], fig["checks"]["f"]
    mean = {k: sum(t[k]["entropy"] for t in tasks.values()) / len(tasks) for k in ("zero_shot", "standard", "ls")}
    assert e["entropy_zero_shot"] == pytest.approx(mean["zero_shot"], abs=1e-4)
    assert e["holds"] == (mean["standard"] < mean["ls"] < mean["zero_shot"])
    name, others = fig["task_names"][0], fig["task_names"][1:]
    theta0 = {f"vision_model.{k}": v for k, v in CLIPModel.from_pretrained(example_suite / "base").vision_model
              .state_dict().items()}
    ls = load_file(str(example_suite / "models" / f"{name}-ls" / "model.safetensors"))
    assert set(ls) <= set(theta0)
    model = tmp_path / "added"
    shutil.copytree(example_suite / "models" / f"{name}-ls", model)
    save_file({k: (theta0[k] + f["alpha"] * (ls[k] - theta0[k])).contiguous() for k in ls},
              str(model / "model.safetensors"), metadata={"format": "pt"})
    changes = []
    for other in others:
        acc = run_evaluate(EvaluateConfig(model=str(model), base=str(example_suite / "base"),
                                          data=str(example_suite / "data" / other), split="test", progress=False))
        changes.append(acc["accuracy"] - tasks[other]["zero_shot"]["accuracy"])
    assert f["points"][name] == pytest.approx(sum(changes) / len(changes), abs=0.05)
    assert f["holds"] == (f["mean_points"] >= -fig["plan"]["max_ls_cost_points"])


def test_base_logit_scale_is_the_plans_and_sets_zero_shot_confidence(tmp_path):
    """The base is saved with the plan's logit scale (the default's, not the pretraining one), and the recorded
    zero-shot entropy is that of CLIP's own zero-shot logits at that scale, computed here with transformers alone."""
    import math

    import torch
    from datasets import load_dataset
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    example_suite = tmp_path / "suite"
    build_example_suite(example_suite, num_tasks=2, seed=0, progress=False, plan=TINY_PLAN)
    fig = _suite(example_suite)
    assert SuitePlan().logit_scale == fig["plan"]["logit_scale"]
    plan = fig["plan"]
    assert plan["logit_scale"] != plan["pretrain_logit_scale"]
    clip = CLIPModel.from_pretrained(example_suite / "base").eval()
    assert float(clip.logit_scale.detach().exp()) == pytest.approx(plan["logit_scale"], rel=1e-5)
    name = fig["task_names"][0]
    ds = load_dataset(str(example_suite / "data" / name), split="test")
    tok = CLIPTokenizer.from_pretrained(example_suite / "base")
    pixels = CLIPImageProcessor.from_pretrained(example_suite / "base")(list(ds["image"]), return_tensors="pt")
    texts = tok([f"a photo of a {c}." for c in fig["tasks"][name]["classes"]], padding=True, return_tensors="pt")
    with torch.no_grad():
        img = torch.nn.functional.normalize(clip.get_image_features(**pixels).pooler_output, dim=-1)
        txt = torch.nn.functional.normalize(clip.get_text_features(**texts).pooler_output, dim=-1)
    logp = (plan["logit_scale"] * img @ txt.T).log_softmax(-1)
    entropy = float(-(logp.exp() * logp).sum(-1).mean())
    assert entropy == pytest.approx(fig["tasks"][name]["zero_shot"]["entropy"], abs=2e-3)
    logp100 = (plan["pretrain_logit_scale"] * img @ txt.T).log_softmax(-1)  # the scale matters: not a no-op
    assert not math.isclose(entropy, float(-(logp100.exp() * logp100).sum(-1).mean()), abs_tol=2e-3)


def test_recorded_norms_match_the_files(example_suite):
    """The norms in suite.json are those of the task vectors computed from the written checkpoints."""
    from safetensors.torch import load_file
    from transformers import CLIPModel

    from hfdistac.task_vectors import compute_task_vector, global_norm

    fig = _suite(example_suite)
    base = CLIPModel.from_pretrained(example_suite / "base").vision_model
    theta0 = {f"vision_model.{k}": v for k, v in base.named_parameters()}
    name = fig["task_names"][0]
    for variant, suffix in (("standard", ""), ("highlr", "-highlr")):
        ft = load_file(str(example_suite / "models" / f"{name}{suffix}" / "model.safetensors"))
        ft = {k: v for k, v in ft.items() if k in theta0}
        norm = global_norm(compute_task_vector({k: v.detach() for k, v in theta0.items()}, ft))
        assert norm == pytest.approx(fig["tasks"][name][variant]["norm"], rel=1e-3)


# ---------------------------------------------------------------------------------------------- build mechanics


def test_cached_second_call_does_no_work(example_suite, monkeypatch):
    """A complete suite is reused: nothing is trained, no file is rewritten."""
    import hfdistac.example_suite.build as build

    before = {p: p.stat().st_mtime_ns for p in example_suite.rglob("*") if p.is_file()}
    monkeypatch.setattr(build, "_build_into", lambda *a, **k: pytest.fail("a complete suite was rebuilt"))
    summary = build_example_suite(example_suite, num_tasks=SUITE_TASKS, seed=SUITE_SEED, progress=False,
                                  plan=suite_plan())
    assert summary.cached and summary.figures == _suite(example_suite)
    assert {p: p.stat().st_mtime_ns for p in example_suite.rglob("*") if p.is_file()} == before
    table = summary.table()
    assert "zero-shot" in table and "norm-mismatch" in table and "(d)" in table and "(f)" in table


def test_deterministic_same_seed_same_files(tmp_path):
    a = build_example_suite(tmp_path / "a", num_tasks=2, seed=3, progress=False, plan=TINY_PLAN)
    b = build_example_suite(tmp_path / "b", num_tasks=2, seed=3, progress=False, plan=TINY_PLAN)
    ha, hb = _hashes(a.directory), _hashes(b.directory)
    assert ha == hb and any(k.endswith("model.safetensors") for k in ha) and any(k.endswith(".parquet") for k in ha)
    fa, fb = a.figures, b.figures
    assert fa["tasks"] == fb["tasks"] and fa["merges"] == fb["merges"]
    c = build_example_suite(tmp_path / "c", num_tasks=2, seed=4, progress=False, plan=TINY_PLAN)
    hc = _hashes(c.directory)
    assert hc["models/digits/model.safetensors"] != ha["models/digits/model.safetensors"]
    assert hc["data/digits/data/train-00000-of-00001.parquet"] != ha["data/digits/data/train-00000-of-00001.parquet"]


def test_partial_directory_is_detected_and_rebuilt(tmp_path):
    d = tmp_path / "suite"
    build_example_suite(d, num_tasks=2, seed=0, progress=False, plan=TINY_PLAN)
    fig = json.loads((d / "suite.json").read_text())
    # simulate a build interrupted before its completion marker
    fig["complete"] = False
    (d / "suite.json").write_text(json.dumps(fig))
    (d / "models" / "digits" / "model.safetensors").unlink()
    assert suite_status(d) == "partial"
    summary = build_example_suite(d, num_tasks=2, seed=0, progress=False, plan=TINY_PLAN)
    assert not summary.cached and suite_status(d) == "complete"
    assert (d / "models" / "digits" / "model.safetensors").is_file()
    # a marker alone (an old-style partial build) is partial too
    e = tmp_path / "other"
    e.mkdir()
    (e / ".hfdistac-example-suite").write_text("x")
    assert suite_status(e) == "partial"


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    from hfdistac.example_suite import training

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "finetune_vision", boom)
    with pytest.raises(KeyboardInterrupt):  # inline fine-tuning (one worker)
        build_example_suite(tmp_path / "suite", num_tasks=2, progress=False, plan=TINY_PLAN, workers=1)
    assert not (tmp_path / "suite").exists()
    assert not list(tmp_path.glob(".suite.tmp-*"))


def test_failed_worker_process_stops_the_build(tmp_path, monkeypatch):
    import sys

    from hfdistac.example_suite import build

    def failing(work, index, count):
        return [sys.executable, "-c", f"import sys; print('worker {index} broke'); sys.exit(3)"]

    monkeypatch.setattr(build, "_worker_command", failing)
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 3.*worker \d broke"):
        build_example_suite(tmp_path / "suite", num_tasks=2, progress=False, plan=TINY_PLAN, workers=2)
    assert not (tmp_path / "suite").exists()
    assert not list(tmp_path.glob(".suite.tmp-*"))


def test_worker_processes_do_not_change_the_files(tmp_path):
    one = build_example_suite(tmp_path / "one", num_tasks=2, seed=1, progress=False, plan=TINY_PLAN, workers=1)
    two = build_example_suite(tmp_path / "two", num_tasks=2, seed=1, progress=False, plan=TINY_PLAN, workers=2)
    assert _hashes(one.directory) == _hashes(two.directory)
    assert one.figures["tasks"] == two.figures["tasks"]
    assert not (two.directory / ".work").exists()


def test_mismatch_task_and_other_settings(tmp_path):
    d = tmp_path / "suite"
    build_example_suite(d, num_tasks=2, seed=0, mismatch_task="glyphs", progress=False, plan=TINY_PLAN)
    doc = yaml.safe_load((d / "recipes" / "norm-mismatch.yaml").read_text())
    assert [t["model"] for t in doc["tasks"]] == ["../models/digits", "../models/glyphs-highlr"]
    # other settings on a complete suite: rebuilt, not reused
    s = build_example_suite(d, num_tasks=2, seed=0, progress=False, plan=TINY_PLAN)
    assert not s.cached and s.figures["mismatch_task"] == "digits"


@pytest.mark.parametrize("kwargs", [{"num_tasks": 1}, {"num_tasks": 9}, {"seed": -1},
                                    {"mismatch_task": "nope"}, {"num_tasks": 2, "mismatch_task": "colours"}])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(InputError):
        build_example_suite(tmp_path / "s", progress=False, plan=TINY_PLAN, **kwargs)


def test_refuses_foreign_directory(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an hfdistac example suite"):
        build_example_suite(tmp_path, num_tasks=2, progress=False, plan=TINY_PLAN)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_suite_config_fields_have_help():
    import dataclasses

    from hfdistac.example_suite import SuiteConfig

    for f in dataclasses.fields(SuiteConfig):
        assert f.metadata.get("help")
