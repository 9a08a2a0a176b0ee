"""Every user-causable failure ends in one clear line and exit 2, with nothing written; no data loss, no bad
weights, no leaks (issue: reliability and security).

``FAILURES`` is the table of bad inputs: each row builds its inputs, runs the command line, and the test asserts
the exit code, the message and what is on disk afterwards. ``test_no_user_failure_reaches_the_catch_all`` walks
the whole table (``-s`` prints it as Markdown).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hfdistac.cli.main import main
from hfdistac.errors import CheckpointError, InputError, OutputError
from tests._fixtures_hub import DUMMY_TOKEN

FAST = ["--steps", "2", "--batch-size", "8", "--eval-limit", "8", "--no-progress"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _recipe(path: Path, tiny, tasks: list[dict] | None = None) -> Path:
    tasks = tasks or [{"name": n, "model": str(getattr(tiny, n)), "dataset": str(tiny.data)} for n in ("ft_a", "ft_b")]
    path.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "r", "base": str(tiny.base),
                                    "tasks": tasks}))
    return path


def _broken_model(tiny, root: Path, kind: str) -> Path:
    """A copy of ft_a whose model.safetensors is truncated, has a corrupt header, is empty, or holds NaN/Inf."""
    from safetensors.torch import load_file, save_file

    d = root / f"ft-{kind}"
    shutil.copytree(tiny.ft_a, d)
    f = d / "model.safetensors"
    data = f.read_bytes()
    if kind == "truncated":
        f.write_bytes(data[: len(data) // 2])
    elif kind == "header":
        f.write_bytes(b"\xff" * 16 + data[16:])
    elif kind == "empty":
        f.write_bytes(b"")
    else:
        w = load_file(str(f))
        key = next(k for k in w if k.endswith("encoder.layers.0.mlp.fc1.weight"))
        w[key][0, 0] = float("nan") if kind == "nan" else float("inf")
        save_file(w, str(f), metadata={"format": "pt"})
    return d


def _dataset(root: Path, name: str, *, labels=None, corrupt_row: int | None = None, n: int = 12,
             empty_test: bool = False, image_column: str = "image", label_column: str = "label",
             extra_image: bool = False, corrupt_split: str | None = None) -> Path:
    """A tiny parquet dataset (3 classes) with bad labels (written past the ClassLabel's range, as a hand-made
    parquet file can be), one undecodable image (in ``corrupt_split``, or both splits), or an empty test split."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    def png(i: int) -> bytes:
        buf = io.BytesIO()
        PILImage.fromarray(np.full((40, 40, 3), 40 * (i % 5), dtype=np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    def write(path: Path, count: int, corrupt: bool) -> None:
        rows = {image_column: [{"bytes": png(i), "path": None} for i in range(count)],
                label_column: [i % 3 for i in range(count)]}
        if corrupt and corrupt_row is not None and count:
            rows[image_column][corrupt_row] = {"bytes": b"this is not an image", "path": None}
        feats = {image_column: Image(), label_column: ClassLabel(names=["red", "green", "blue"])}
        if extra_image:
            rows = {"thumb": [{"bytes": png(0), "path": None}] * count, **rows}
            feats = {"thumb": Image(), **feats}
        table = Dataset.from_dict(rows, features=Features(feats)).data.table
        if labels is not None:
            bad = pa.array([labels[i % len(labels)] for i in range(count)], type=table.schema.field(label_column).type)
            table = table.set_column(table.schema.get_field_index(label_column), label_column, bad)
        pq.write_table(table, str(path))

    d = root / name
    (d / "data").mkdir(parents=True)
    write(d / "data" / "train-00000-of-00001.parquet", n, corrupt_split in (None, "train"))
    write(d / "data" / "test-00000-of-00001.parquet", 0 if empty_test else n, corrupt_split in (None, "test"))
    return d


# --------------------------------------------------------------------------------------------- the table
@dataclass
class Failure:
    """One bad input: ``build(tiny, tmp)`` returns the argv; the error must contain ``expect``; ``output`` (a
    path relative to tmp) must not exist afterwards."""

    row: str
    what: str
    build: Callable[[object, Path], list]
    expect: str
    output: str | None = "out"


def _cond(model, *extra):
    return lambda tiny, tmp: ["condition", model(tiny, tmp), "--preset", "confidence", "--output", tmp / "out",
                              *FAST, *extra]


FAILURES = [
    # 5. non-finite weights in every reader
    Failure("5", "inspect, NaN in a fine-tuned model", lambda t, p: [
        "inspect", _broken_model(t, p, "nan"), t.ft_b, "--base", t.base, "--output", p / "out"],
        "non-finite weights (NaN or Inf) in 1 tensor(s): vision_model.encoder.layers.0.mlp.fc1.weight"),
    Failure("5", "merge, Inf in a fine-tuned model", lambda t, p: [
        "merge", _recipe(p / "r.yaml", t, [{"name": "a", "model": str(_broken_model(t, p, "inf")),
                                            "dataset": str(t.data)}, {"name": "b", "model": str(t.ft_b),
                                                                      "dataset": str(t.data)}]),
        "--method", "task_arithmetic", "--alpha", "0.3", "--weights-only", "--output", p / "out"],
        "non-finite weights"),
    Failure("5", "card, NaN in the model", lambda t, p: ["card", _broken_model(t, p, "nan"), "--output", p / "out",
                                                         "--no-progress"], "non-finite weights"),
    Failure("5", "condition, NaN in the model", _cond(lambda t, p: _broken_model(t, p, "nan")), "non-finite weights"),
    # 6. a diverged run is not saved
    Failure("6", "condition --lr 1e6", _cond(lambda t, p: t.ft_a, "--lr", "1e6"), "--lr must be > 0 and <= 1"),
    # 7. every option validated up front
    Failure("7", "condition --max-grad-norm nan", _cond(lambda t, p: t.ft_a, "--max-grad-norm", "nan"),
            "--max-grad-norm must be >= 0 (0 = no clipping), got nan"),
    Failure("7", "demo --kappa-grid -1", lambda t, p: ["demo", p / "out", "--kappa-grid", "-1"],
            "--kappa-grid must be > 0"),
    Failure("7", "demo --methods foo", lambda t, p: ["demo", p / "out", "--methods", "foo"],
            "unknown --methods 'foo'"),
    # 8. recipe field types
    Failure("8", "recipe dataset: 42", lambda t, p: [
        "merge", _recipe(p / "r.yaml", t, [{"name": "a", "model": str(t.ft_a), "dataset": 42}]), "--output", p / "out"],
        "key 'dataset' must be a string"),
    Failure("8", "recipe templates: 7", lambda t, p: [
        "inspect", _recipe(p / "r.yaml", t, [{"name": "a", "model": str(t.ft_a), "dataset": str(t.data),
                                              "templates": 7}])], "key 'templates' must be a list of strings", None),
    # 9. truncated, corrupt or empty weights
    *[Failure("9", f"{cmd}, {kind} model.safetensors", build, expect)
      for kind, expect in (("truncated", "truncated or corrupt"), ("header", "truncated or corrupt"),
                           ("empty", "is empty"))
      for cmd, build in (
          ("inspect", lambda t, p, k=kind: ["inspect", _broken_model(t, p, k), t.ft_b, "--base", t.base,
                                            "--output", p / "out"]),
          ("condition", lambda t, p, k=kind: _cond(lambda t2, p2: _broken_model(t2, p2, k))(t, p)),
          ("merge", lambda t, p, k=kind: ["merge", _recipe(p / "r.yaml", t, [
              {"name": "a", "model": str(_broken_model(t, p, k))}, {"name": "b", "model": str(t.ft_b)}]),
              "--weights-only", "--alpha", "0.3", "--output", p / "out"]))],
    # 10. labels out of range, empty splits, an undecodable image
    Failure("10", "condition, label 99", _cond(lambda t, p: t.ft_a, "--data", None), "label 99 at row 0"),
    Failure("10", "condition, label -5", _cond(lambda t, p: t.ft_a, "--data", None), "label -5 at row 0"),
    Failure("10", "evaluate, label -5", lambda t, p: ["evaluate", t.ft_a, "--data", _dataset(p, "neg", labels=[-5]),
                                                      "--no-progress"], "label -5 (row 0)", None),
    Failure("10", "condition, empty test split", _cond(lambda t, p: t.ft_a, "--data", None), "is empty"),
    Failure("10", "evaluate, empty test split", lambda t, p: [
        "evaluate", t.ft_a, "--data", _dataset(p, "empty", empty_test=True), "--no-progress"], "is empty", None),
    Failure("10", "condition, one undecodable image", _cond(lambda t, p: t.ft_a, "--data", None),
            "image at row 5 of split 'train'"),
    Failure("10", "evaluate, one undecodable image", lambda t, p: [
        "evaluate", t.ft_a, "--data", _dataset(p, "corrupt", corrupt_row=5), "--no-progress"],
        "image at row 5 of split 'test'", None),
    # 11. finiteness and range where options are parsed
    Failure("11", "condition --weight-decay nan", _cond(lambda t, p: t.ft_a, "--weight-decay", "nan"),
            "--weight-decay must be >= 0 and <= 1, got nan"),
    Failure("11", "condition --lr 1e38", _cond(lambda t, p: t.ft_a, "--lr", "1e38"), "--lr must be > 0 and <= 1"),
    Failure("11", "merge --density inf", lambda t, p: ["merge", _recipe(p / "r.yaml", t), "--density", "inf"],
            "--density must be > 0 and <= 1, got inf"),
    # 12. unwritable locations, checked before any work
    Failure("12", "condition --output in a read-only place", lambda t, p: [
        "condition", t.ft_a, "--preset", "confidence", "--output", "/sys/hfdistac-out", *FAST],
        "cannot write", None),
    Failure("12", "inspect --json in a read-only place", lambda t, p: [
        "inspect", t.ft_a, t.ft_b, "--base", t.base, "--json", "/sys/hfdistac.json"], "cannot write", None),
    Failure("12", "evaluate --json in a read-only place", lambda t, p: [
        "evaluate", t.ft_a, "--json", "/sys/hfdistac.json", "--no-progress"], "cannot write", None),
    Failure("12", "merge --output in a read-only place", lambda t, p: [
        "merge", _recipe(p / "r.yaml", t), "--weights-only", "--alpha", "0.3", "--output", "/sys/hfdistac-out"],
        "cannot write", None),
    # 13. --config YAML values
    Failure("13", "--config steps: [1, 2]", lambda t, p: _config_run(t, p, {"steps": [1, 2]}),
            "--steps expects an integer, got [1, 2]"),
    Failure("13", "--config lr: fast", lambda t, p: _config_run(t, p, {"lr": "fast"}), "--lr expects a number, got 'fast'"),
    # 14. --image-column / --label-column exist and are checked
    Failure("14", "evaluate --image-column nope", lambda t, p: [
        "evaluate", t.ft_a, "--data", t.data, "--image-column", "nope", "--no-progress"],
        "column 'nope' not in dataset", None),
]


def _config_run(tiny, tmp: Path, values: dict) -> list:
    cfg = tmp / "c.yaml"
    cfg.write_text(yaml.safe_dump({"batch_size": 8, "eval_limit": 8, "progress": False, "steps": 2, **values}))
    return ["condition", tiny.ft_a, "--preset", "confidence", "--output", tmp / "out", "--config", cfg]


_DATASETS = {"condition, label 99": {"labels": [99, 0, 1]}, "condition, label -5": {"labels": [-5, 0, 1]},
             "condition, empty test split": {"empty_test": True},
             "condition, one undecodable image": {"corrupt_row": 5, "corrupt_split": "train"}}


def _argv(case: Failure, tiny, tmp: Path) -> list[str]:
    argv = case.build(tiny, tmp)
    if case.what in _DATASETS:  # condition rows that need a dataset of their own
        argv[argv.index(None)] = _dataset(tmp, "bad", **_DATASETS[case.what])
    return [str(a) for a in argv]


@pytest.mark.parametrize("case", FAILURES, ids=[f"{c.row}-{c.what}" for c in FAILURES])
def test_bad_input_is_one_clear_line(case, tiny, tmp_path, capsys, monkeypatch):
    if case.row == "7":  # a bad option value is refused before any model is looked at
        import hfdistac.hub

        monkeypatch.setattr(hfdistac.hub, "resolve_model",
                            lambda *a, **k: pytest.fail("a model was resolved before the option was checked"))
    code, out, err = run_cli(capsys, *_argv(case, tiny, tmp_path))
    assert code == 2, (out, err)
    lines = err.splitlines()
    first = next((i for i, ln in enumerate(lines) if ln.startswith("error: ")), None)
    assert first is not None and "unexpected" not in err and "Traceback" not in err, err
    tail = [ln for ln in lines[first:] if ln.strip()]
    assert len(tail) <= 2 and all(ln.startswith(("error: ", "hint: ")) for ln in tail), err
    assert case.expect in err, err
    if case.output:
        assert not (tmp_path / case.output).exists()
    assert not list(tmp_path.glob(".*.tmp-*")) and not list(tmp_path.glob(".*.scratch-*"))


def test_no_user_failure_reaches_the_catch_all(tiny, tmp_path, capsys):
    """Walk the whole table in one go (the catch-all 'error: unexpected ...' is for bugs only); with ``-s``
    it prints the table of rows, exit codes and messages."""
    rows = []
    for i, case in enumerate(FAILURES):
        d = tmp_path / f"case{i}"
        d.mkdir()
        code, _, err = run_cli(capsys, *_argv(case, tiny, d))
        first = next((ln for ln in err.splitlines() if ln.startswith("error: ")), err.strip()[:120])
        rows.append((case.row, case.what, code, first))
        assert code == 2 and "unexpected" not in err, (case.what, err)
    print("\n| row | bad input | exit | message |\n|---|---|---:|---|")
    for row, what, code, first in rows:
        print(f"| {row} | {what} | {code} | {first.removeprefix('error: ')[:150]} |")
    print(f"\n{len(rows)} bad-input cases in the table")


# --------------------------------------------------------------------------------------------- security, data loss
def test_push_refuses_a_symlink_and_uploads_nothing(hub_env, tmp_path, capsys):
    secret = tmp_path / "token.txt"
    secret.write_text(DUMMY_TOKEN)
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("# card\n")
    (out / "notes.txt").symlink_to(secret)
    code, _, err = run_cli(capsys, "push", out, "org/symlink-test")
    assert code == 2 and "symbolic link" in err and "notes.txt" in err
    assert not hub_env.server.requests_to("/commit/") and ("model", "org/symlink-test") not in hub_env.server.repos
    (out / "notes.txt").unlink()
    (out / "sub").symlink_to(tmp_path, target_is_directory=True)  # a linked folder is refused as well
    code, _, err = run_cli(capsys, "push", out, "org/symlink-test")
    assert code == 2 and "sub" in err and "symbolic link" in err


def test_example_suite_never_deletes_files_it_did_not_write(tmp_path, capsys):
    from hfdistac.example_suite import build_example_suite
    from tests.test_example_suite import TINY_PLAN

    d = tmp_path / "s"
    d.mkdir()
    (d / "suite.json").write_text('{"mine": true}')
    (d / "other.txt").write_text("keep me")
    code, _, err = run_cli(capsys, "example-suite", d, "--tasks", "2")
    assert code == 2 and "not an hfdistac example suite" in err
    assert (d / "suite.json").read_text() == '{"mine": true}' and (d / "other.txt").read_text() == "keep me"

    suite = tmp_path / "suite"
    build_example_suite(suite, num_tasks=2, seed=0, progress=False, plan=TINY_PLAN, workers=1)
    (suite / "models" / "my-notes.txt").write_text("keep me too")
    with pytest.raises(InputError, match="holds files the example suite did not write"):
        build_example_suite(suite, num_tasks=2, seed=1, progress=False, plan=TINY_PLAN, workers=1)
    assert (suite / "models" / "my-notes.txt").read_text() == "keep me too"
    (suite / "models" / "my-notes.txt").unlink()
    rebuilt = build_example_suite(suite, num_tasks=2, seed=1, progress=False, plan=TINY_PLAN, workers=1)
    assert not rebuilt.cached and rebuilt.figures["seed"] == 1


def test_a_second_run_to_the_same_output_is_refused_while_the_first_runs(tiny, tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "out"
        (tmp_path / ".out.lock").write_text(str(holder.pid))
        code, _, err = run_cli(capsys, "condition", tiny.ft_a, "--preset", "confidence", "--output", out, *FAST)
        assert code == 2 and f"another hfdistac run (pid {holder.pid}) is writing" in err and not out.exists()
        code, _, err = run_cli(capsys, "merge", _recipe(tmp_path / "r.yaml", tiny), "--weights-only", "--alpha",
                               "0.3", "--output", out)
        assert code == 2 and "another hfdistac run" in err
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its stale lock is taken over, and released after the run
    code, _, err = run_cli(capsys, "condition", tiny.ft_a, "--preset", "confidence", "--output", out, *FAST)
    assert code == 0, err
    assert out.is_dir() and not (tmp_path / ".out.lock").exists()


def test_the_final_rename_never_replaces_an_output_that_appeared_meanwhile(tmp_path):
    from hfdistac.outputs import atomic_output_dir

    final = tmp_path / "out"
    with pytest.raises(InputError, match="appeared while this run was writing it"):
        with atomic_output_dir(final) as tmp:
            (tmp / "mine.txt").write_text("second run")
            final.mkdir()
            (final / "theirs.txt").write_text("first run")
    assert [p.name for p in final.iterdir()] == ["theirs.txt"]
    assert not list(tmp_path.glob(".out.tmp-*"))


@pytest.mark.parametrize("create_pr", [False, True])
def test_a_push_whose_answer_was_lost_is_not_repeated(hub_env, tiny, tmp_path, create_pr):
    from hfdistac.hub import push_folder

    server = hub_env.server
    repo = f"org/lost-answer-{int(create_pr)}"
    server.seed_repo(repo, tiny.ft_b)
    before = dict(server.repo(repo).refs)
    server.fail(r"/commit/", after=True, times=1)  # the commit is made, the answer never arrives
    info = push_folder(tiny.ft_a, repo, create_pr=create_pr, retry_delay=0.01)
    refs = server.repo(repo).refs
    if create_pr:
        assert [r for r in refs if r.startswith("refs/pr/")] == ["refs/pr/1"] and info["pr_url"].endswith("/1")
        assert info["commit_sha"] == refs["refs/pr/1"]
    else:
        assert refs["main"] != before["main"] and info["commit_sha"] == refs["main"]
        commits = server.repo(repo).commits
        assert commits[refs["main"]].parent == before["main"]  # exactly one new commit
    assert len(server.requests_to(r"/commit/", method="POST")) == 1
    assert server.repo_files(repo, refs["refs/pr/1"] if create_pr else "main")["model.safetensors"] == \
        (tiny.ft_a / "model.safetensors").read_bytes()


# --------------------------------------------------------------------------------------------- wrong results
def test_condition_refuses_to_save_a_diverged_result():
    from hfdistac.conditioning.config import ConditionConfig
    from hfdistac.conditioning.loop import check_result
    from hfdistac.errors import TrainingError

    cfg = ConditionConfig(model="m", preset="confidence", lr=0.5)
    check_result({"norm_after": 9.0, "norm_before": 1.0, "target_norm": 1.0}, cfg)  # long, but not absurd
    for norm in (1.3e8, float("nan"), float("inf")):
        with pytest.raises(TrainingError, match="diverged.*nothing was written"):
            check_result({"norm_after": norm, "norm_before": 1.0, "target_norm": 1.0}, cfg)


def test_condition_at_an_absurd_learning_rate_writes_nothing(tiny, tmp_path, capsys):
    code, _, err = run_cli(capsys, "condition", tiny.ft_a, "--preset", "confidence", "--output", tmp_path / "out",
                           "--lr", "1", "--steps", "3", "--warmup-steps", "0", "--batch-size", "8", "--eval-limit",
                           "8", "--no-progress", "--max-grad-norm", "0")
    assert code == 2 and ("diverged" in err or "non-finite" in err), err
    assert not (tmp_path / "out").exists()


def test_no_output_with_non_finite_weights_is_ever_written(tmp_path):
    from transformers import CLIPVisionConfig

    from hfdistac.checkpoints import save_vision_checkpoint
    from hfdistac.task_vectors import save_task_vector
    from hfdistac.tensor_files import save_safetensors

    bad = {"vision_model.x": torch.tensor([1.0, float("nan")])}
    with pytest.raises(CheckpointError, match="non-finite.*vision_model.x"):
        save_task_vector(bad, tmp_path / "tv.safetensors")
    with pytest.raises(CheckpointError, match="non-finite"):
        save_vision_checkpoint(tmp_path / "m", CLIPVisionConfig(hidden_size=32, num_attention_heads=2), bad)
    with pytest.raises(CheckpointError, match="non-finite"):
        save_safetensors({"w": torch.tensor([float("inf")])}, tmp_path / "w.safetensors")
    assert not list(tmp_path.rglob("*.safetensors")) and not list(tmp_path.rglob(".*tmp*"))


def test_a_lazy_task_vector_refuses_non_finite_entries(tmp_path):
    from safetensors.torch import save_file

    from hfdistac.task_vectors import TASK_VECTOR_FORMAT, load_task_vector

    save_file({"a": torch.tensor([1.0, float("nan")])}, str(tmp_path / "tv.safetensors"),
              metadata={"format": TASK_VECTOR_FORMAT})
    tv = load_task_vector(tmp_path / "tv.safetensors")
    with pytest.raises(CheckpointError, match="non-finite.*'a'|non-finite.*a"):
        tv["a"]


# --------------------------------------------------------------------------------------------- writing
@pytest.mark.parametrize("code, meaning", [(errno.EROFS, "the file system is read-only"),
                                           (errno.ENOSPC, "no space left on the device")])
def test_write_errors_are_one_line_naming_path_and_errno(tmp_path, monkeypatch, code, meaning):
    from hfdistac import outputs

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Path, "write_text", refuse)
    with pytest.raises(OutputError, match=f"cannot write '.*report.json': {meaning}"):
        outputs.write_json(tmp_path / "report.json", {"a": 1})
    monkeypatch.undo()
    with pytest.raises(OutputError, match=meaning):
        with outputs.atomic_output_dir(tmp_path / "out") as tmp:
            (tmp / "x").write_text("1")
            raise OSError(code, os.strerror(code))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_output_location_is_checked_before_training(tiny, tmp_path, capsys, monkeypatch):
    import hfdistac.conditioning.loop as loop

    monkeypatch.setattr(loop, "_train", lambda *a, **k: pytest.fail("trained although the output is unwritable"))
    code, _, err = run_cli(capsys, "condition", tiny.ft_a, "--preset", "confidence", "--output", "/sys/x/out", *FAST)
    assert code == 2 and "cannot write" in err


# --------------------------------------------------------------------------------------------- left behind
def test_stale_temporary_and_scratch_folders_of_killed_runs_are_removed(tiny, tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / f".out.tmp-{dead.pid}-abcd1234", tmp_path / f".out.scratch-{dead.pid}-abcd1234"]
    alive = tmp_path / f".out.tmp-{os.getppid()}-keepme00"  # a live process's folder is never touched
    for p in [*stale, alive]:
        p.mkdir()
        (p / "model.safetensors").write_bytes(b"x" * 100)
    code, _, err = run_cli(capsys, "merge", _recipe(tmp_path / "r.yaml", tiny), "--weights-only", "--alpha", "0.3",
                           "--method", "task_arithmetic", "--output", tmp_path / "out")
    assert code == 0, err
    assert not any(p.exists() for p in stale) and alive.exists()
    assert not list(tmp_path.glob(".out.scratch-*"))  # the run's own scratch (beside the output) is gone too


def test_merge_scratch_lives_beside_the_output(tiny, tmp_path, monkeypatch):
    from hfdistac.merge_eval import MergeConfig, pipeline

    seen = []
    real = pipeline._merge_and_evaluate

    def spy(config, recipe, base, device, scratch):
        seen.append(scratch)
        return real(config, recipe, base, device, scratch)

    monkeypatch.setattr(pipeline, "_merge_and_evaluate", spy)
    pipeline.run_merge(MergeConfig(recipe=str(_recipe(tmp_path / "r.yaml", tiny)), method="task_arithmetic",
                                   alpha=0.3, weights_only=True, output=str(tmp_path / "out"), progress=False))
    assert seen[0].parent == tmp_path and seen[0].name.startswith(f".out.scratch-{os.getpid()}-")
    assert not seen[0].exists()


def test_identical_runs_write_identical_files(tiny, tmp_path, capsys):
    for name in ("one", "two"):
        code, _, err = run_cli(capsys, "merge", _recipe(tmp_path / "r.yaml", tiny), "--weights-only", "--alpha",
                               "0.3", "--method", "task_arithmetic", "--output", tmp_path / name)
        assert code == 0, err
    for f in ("model.safetensors",):
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes()
    from hfdistac.tensor_files import save_safetensors

    meta = {f"key{i}": str(i) for i in range(20)}
    blobs = [save_safetensors({"w": torch.ones(3)}, tmp_path / f"m{i}.safetensors", meta).read_bytes()
             for i in range(3)]
    assert blobs[0] == blobs[1] == blobs[2]
    header = json.loads(blobs[0][8:8 + int.from_bytes(blobs[0][:8], "little")])
    assert list(header["__metadata__"]) == sorted(meta)


# --------------------------------------------------------------------------------------------- happy paths kept
def test_config_yaml_accepts_numbers_in_scientific_notation(tiny, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 1e-3\nweight_decay: 1E-2\n")  # PyYAML reads both as strings
    code, _, err = run_cli(capsys, "condition", tiny.ft_a, "--preset", "confidence", "--output", tmp_path / "out",
                           "--config", cfg, *FAST)
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["lr"] == 1e-3 and report["weight_decay"] == 1e-2


def test_image_and_label_columns_can_be_named(tiny, tmp_path, capsys):
    d = _dataset(tmp_path, "cols", image_column="picture", label_column="target", extra_image=True)
    code, out, err = run_cli(capsys, "evaluate", tiny.ft_a, "--data", d, "--image-column", "picture",
                             "--json", tmp_path / "m.json", "--no-progress")
    assert code == 0, err
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 12
    recipe = _recipe(tmp_path / "r.yaml", tiny, [{"name": n, "model": str(getattr(tiny, n)), "dataset": str(d),
                                                  "image_column": "picture", "label_column": "target"}
                                                 for n in ("ft_a", "ft_b")])
    code, out, err = run_cli(capsys, "inspect", recipe, "--no-progress")
    assert code == 0, err
