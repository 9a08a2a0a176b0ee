"""Every file hfdistac reads may be truncated, empty, random bytes, not UTF-8, of the wrong dtype or out of range,
and any output may hit a full disk or a too-long name: each ends in one line naming the file and the fix (exit 2),
never in the "unexpected" catch-all. A cache hfdistac wrote itself is rebuilt, with a warning."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from hfdistac.cli.main import main

ALIAS_BOMB = ("a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
              "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nbase_model: *e\n")


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_clean_line(code, err):
    assert code == 2, err
    assert "unexpected" not in err and "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith(("error: ", "hint: "))]
    assert lines and lines[0].startswith("error: ") and len(lines) <= 2, err
    return lines[0]


def _model(tiny, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(tiny.ft_a, d)
    return d


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _ints(path):
    w = load_file(str(path))
    save_file({k: (v * 1000).to(torch.int32) for k, v in w.items()}, str(path))


# what is broken → (how, expected words of the error)
MODEL_FILES = {
    "weights truncated": (lambda d: _truncate(d / "model.safetensors"), "truncated or corrupt"),
    "weights empty": (lambda d: (d / "model.safetensors").write_bytes(b""), "is empty"),
    "weights random bytes": (lambda d: (d / "model.safetensors").write_bytes(os.urandom(4096)), "truncated or corrupt"),
    "weights of integers": (lambda d: _ints(d / "model.safetensors"), "must be floating point"),
    "config not JSON": (lambda d: (d / "config.json").write_text("{oops"), "not valid JSON"),
    "config not UTF-8": (lambda d: (d / "config.json").write_bytes(b"\xff\xfe\x00x"), "not UTF-8"),
    "config empty": (lambda d: (d / "config.json").write_bytes(b""), "not valid JSON"),
    "config a list": (lambda d: (d / "config.json").write_text("[1, 2]"), "not a JSON object"),
    "config values of the wrong type": (
        lambda d: (d / "config.json").write_text(json.dumps({**json.loads((d / "config.json").read_text()),
                                                             "hidden_size": "big"})), "invalid values"),
    "card not UTF-8": (lambda d: (d / "README.md").write_bytes(b"---\nbase_model: \xff\xfe\n---\n"), "not UTF-8"),
    "card YAML alias bomb": (lambda d: (d / "README.md").write_text(f"---\n{ALIAS_BOMB}---\n"), "aliases"),
    "card YAML broken": (lambda d: (d / "README.md").write_text("---\nbase_model: [\n---\n"), "invalid YAML"),
}


@pytest.mark.parametrize("what", list(MODEL_FILES))
def test_a_broken_model_file_is_one_line_naming_it(what, tiny, tmp_path, capsys):
    d = _model(tiny, tmp_path)
    corrupt, words = MODEL_FILES[what]
    corrupt(d)
    args = ["inspect", d, "--data", tiny.data, "--no-progress"]
    if not what.startswith("card"):
        args += ["--base", tiny.base]
    line = _one_clean_line(*run_cli(capsys, *args)[::2])
    assert words in line and str(d) in line, line


def _adapter(tiny, tmp_path, change=None, raw=None, truncate=False):
    peft = pytest.importorskip("peft")
    from transformers import CLIPVisionModel

    d = tmp_path / "lora"
    model = peft.get_peft_model(CLIPVisionModel.from_pretrained(tiny.base),
                                peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    model.save_pretrained(d)
    cfg = d / "adapter_config.json"
    if raw is not None:
        cfg.write_bytes(raw)
    elif change:
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), **change}))
    if truncate:
        _truncate(d / "adapter_model.safetensors", 0.1)
    return d


@pytest.mark.parametrize("what, kwargs, words", [
    ("rank 0", {"change": {"r": 0}}, "whole number >= 1"),
    ("rank a string", {"change": {"r": "8"}}, "whole number >= 1"),
    ("rank in a pattern negative", {"change": {"rank_pattern": {"q_proj": -2}}}, "whole number >= 1"),
    ("alpha a string", {"change": {"lora_alpha": "big"}}, "not a number"),
    ("config not JSON", {"raw": b"{oops"}, "cannot read adapter_config.json"),
    ("config not UTF-8", {"raw": b"\xff\xfe{}"}, "cannot read adapter_config.json"),
    ("weights truncated", {"truncate": True}, "truncated or corrupt"),
])
def test_a_broken_adapter_is_one_line(what, kwargs, words, tiny, tmp_path, capsys):
    d = _adapter(tiny, tmp_path, **kwargs)
    line = _one_clean_line(*run_cli(capsys, "inspect", d, "--base", tiny.base, "--data", tiny.data,
                                    "--no-progress")[::2])
    assert words in line, line


@pytest.mark.parametrize("what, content, words", [
    ("templates not UTF-8", b"\xff\xfe{c}", "not UTF-8"),
    ("templates empty", b"", "no templates"),
    ("templates JSON not a list", b'{"a": 1}', "not a list"),
    ("templates JSON broken", b"[oops", "not valid JSON"),
])
def test_a_broken_templates_file_is_one_line(what, content, words, tiny, tmp_path, capsys):
    path = tmp_path / ("t.json" if "JSON" in what else "t.txt")
    path.write_bytes(content)
    line = _one_clean_line(*run_cli(capsys, "evaluate", tiny.ft_a, "--base", tiny.base, "--data", tiny.data,
                                    "--templates", path)[::2])
    assert words in line and str(path) in line, line


@pytest.mark.parametrize("content, words", [(b"\xff\xfe\xfa", "not UTF-8"), (b"", "holds 0 name"),
                                            (b"x" * (2 << 20), "at most")])
def test_a_broken_class_names_file_is_one_line(content, words, tiny, tmp_path, capsys):
    path = tmp_path / "classes.txt"
    path.write_bytes(content)
    line = _one_clean_line(*run_cli(capsys, "condition", tiny.ft_a, "--base", tiny.base, "--data", tiny.data,
                                    "--class-names", path, "--steps", "1", "--output", tmp_path / "out")[::2])
    assert words in line, line


# random bytes drawn from a fixed seed: every collection (each pytest-xdist worker's too) sees the same cases
@pytest.mark.parametrize("content", [b"", random.Random(0).randbytes(600), b"- a\n- b\n", b"tasks: 5\nbase: x\n",
                                     ALIAS_BOMB.encode(), b"\xff\xfe: 1"])
def test_a_broken_recipe_or_config_file_is_one_line(content, tiny, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(content)
    _one_clean_line(*run_cli(capsys, "merge", recipe, "--alpha", "0.3", "--weights-only")[::2])
    _one_clean_line(*run_cli(capsys, "merge", "--config", recipe)[::2])


def test_a_broken_dataset_file_is_one_line(tiny, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny.data, data)
    _truncate(data / "data" / "test-00000-of-00001.parquet", 0.2)
    line = _one_clean_line(*run_cli(capsys, "evaluate", tiny.ft_a, "--base", tiny.base, "--data", data)[::2])
    assert "corrupted" in line or "parquet" in line, line


@pytest.mark.parametrize("command", ["condition", "merge"])
def test_an_output_name_too_long_or_the_current_folder_is_one_line(command, tiny, tmp_path, capsys, monkeypatch):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "t", "base": str(tiny.base),
                                      "tasks": [{"name": "a", "model": str(tiny.ft_a)},
                                                {"name": "b", "model": str(tiny.ft_b)}]}))
    args = ["condition", tiny.ft_a, "--base", tiny.base, "--data", tiny.data, "--steps", "1"] if command == "condition" \
        else ["merge", recipe, "--alpha", "0.3", "--weights-only"]
    line = _one_clean_line(*run_cli(capsys, *args, "--output", tmp_path / ("x" * 300))[::2])
    assert "300 bytes" in line and "at most" in line, line
    monkeypatch.chdir(tmp_path)
    line = _one_clean_line(*run_cli(capsys, *args, "--output", ".")[::2])
    assert "'.'" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]  # nothing written


def test_a_full_disk_while_merging_is_one_line_and_leaves_nothing(tiny, tmp_path, capsys, monkeypatch):
    from hfdistac import tensor_files

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "t", "base": str(tiny.base),
                                      "tasks": [{"name": "a", "model": str(tiny.ft_a)},
                                                {"name": "b", "model": str(tiny.ft_b)}]}))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tensor_files, "_write_safetensors", full)
    line = _one_clean_line(*run_cli(capsys, "merge", recipe, "--alpha", "0.3", "--weights-only", "--output",
                                    tmp_path / "out")[::2])
    assert "no space left" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


# ------------------------------------------------------------------------------ hfdistac's own caches
def test_corrupt_head_and_evaluation_caches_are_rebuilt_with_a_warning(tiny, tmp_path, capsys, caplog, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))  # this test's caches only

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "t", "base": str(tiny.base),
                                      "tasks": [{"name": n, "model": str(getattr(tiny, n)), "dataset": str(tiny.data)}
                                                for n in ("ft_a", "ft_b")]}))
    args = ["merge", recipe, "--method", "task_arithmetic", "--alpha-grid", "0.3", "--no-progress"]
    code, first, _ = run_cli(capsys, *args)
    assert code == 0
    cache = constants.HF_HOME
    from pathlib import Path

    evals = sorted((Path(cache) / "hfdistac" / "evals").glob("*.json"))
    heads = sorted((Path(cache) / "hfdistac" / "heads").glob("*.safetensors"))
    assert evals and heads
    for i, f in enumerate(evals):
        f.write_bytes([b"", b"{not json", b'{"accuracy": "lots"}', b'{"accuracy": 250}'][i % 4])
    for f in heads:
        _truncate(f, 0.3)
    caplog.clear()
    code, again, err = run_cli(capsys, *args)
    assert code == 0, err
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert warned.count("ignoring unreadable cached evaluation") == len(evals) and "cached head" in warned
    assert again == first  # the same table: rebuilt, not misread
    assert all(json.loads(f.read_text())["accuracy"] >= 0 for f in evals)  # written again


def test_a_corrupt_checkpoint_is_never_half_restored_on_resume(tiny, tmp_path, capsys, caplog):
    out, ck = tmp_path / "out", tmp_path / "ck"
    common = ["condition", tiny.ft_a, "--base", tiny.base, "--data", tiny.data, "--steps", "4", "--batch-size", "8",
              "--checkpoint-every", "1", "--checkpoint-dir", ck, "--eval-limit", "8", "--no-progress"]
    import hfdistac.conditioning.loop as loop

    save = loop.save_checkpoint

    def save_then_stop(directory, step, *args, **kwargs):
        out = save(directory, step, *args, **kwargs)
        if step == 3:
            raise KeyboardInterrupt  # the run is stopped after its third checkpoint
        return out

    loop.save_checkpoint = save_then_stop
    try:
        code, _, err = run_cli(capsys, *common, "--output", out)
    finally:
        loop.save_checkpoint = save
    assert code == 130, err
    steps = sorted(ck.glob("step-*"))
    assert [p.name for p in steps] == ["step-000003"]  # the newest is kept
    _truncate(steps[0] / "optimizer.safetensors", 0.3)  # and it is broken
    caplog.clear()
    code, _, err = run_cli(capsys, *common, "--resume", "--output", out)
    assert code == 0, err
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "cannot be read" in warned and "starting from step 0" in warned, warned
    fresh = tmp_path / "fresh"
    assert run_cli(capsys, "condition", tiny.ft_a, "--base", tiny.base, "--data", tiny.data, "--steps", "4",
                   "--batch-size", "8", "--eval-limit", "8", "--no-progress", "--output", fresh)[0] == 0
    a, b = (json.loads((d / "report.json").read_text()) for d in (out, fresh))
    # a clean start, not a half-restored state (which ends 2e-5 away, relatively); equal up to float rounding, since kernels
    # may round differently from one run to the next on some CPUs
    assert a["steps"] == 4 and a["norm_after"] == pytest.approx(b["norm_after"], rel=1e-6, abs=0)
