"""The built-in example suite: layout, formats, the paper's conditions, determinism, caching, and the
README's main job (`inspect` flags the harmful models)."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import yaml

from hfdistac.cli.main import main
from tests._fixtures_suite import SUITE_TASKS


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_layout_and_formats(example_suite):
    import datasets
    from transformers import CLIPModel, CLIPVisionModel

    from hfdistac.hub import card_datasets, infer_base, read_card_metadata, resolve_model

    d, summary = example_suite
    tasks = list(summary.figures["tasks"])
    assert len(tasks) == SUITE_TASKS
    CLIPModel.from_pretrained(d / "base")
    for t in tasks:
        for variant in ("", "-highlr", "-ls"):
            model_dir = d / "models" / f"{t}{variant}"
            CLIPVisionModel.from_pretrained(model_dir)
            meta = read_card_metadata(resolve_model(str(model_dir)))
            assert infer_base(meta, str(model_dir)) == str((d / "base").resolve())
            assert card_datasets(meta) == [str((d / "data" / t).resolve())]
        ds = datasets.load_dataset(str(d / "data" / t))
        assert set(ds) == {"train", "test"}
        assert isinstance(ds["train"].features["label"], datasets.ClassLabel)
        assert isinstance(ds["train"].features["image"], datasets.Image)
        streamed = datasets.load_dataset(str(d / "data" / t), split="test", streaming=True)
        assert isinstance(streamed.features["label"], datasets.ClassLabel)
    for name in ("original", "norm-mismatch", "low-confidence"):
        recipe = yaml.safe_load((d / "recipes" / f"{name}.yaml").read_text())
        assert recipe["format"] == "hfdistac.recipe.v1" and len(recipe["tasks"]) == SUITE_TASKS
        assert all({"name", "model", "dataset"} <= set(t) for t in recipe["tasks"])
    suite = json.loads((d / "suite.json").read_text())
    assert suite["complete"] is True and set(suite["checks"]) == {"a", "b", "c", "d"}


def test_conditions_are_measured_and_reported(example_suite):
    """The four conditions of the paper, with the figures behind them (see suite.json for values)."""
    _, summary = example_suite
    fig = summary.figures
    for key in ("a", "b", "c", "d"):
        assert isinstance(fig["checks"][key]["holds"], bool) and fig["checks"][key]["text"]
    tasks = fig["tasks"].values()
    # (c) is structural (10x learning rate) and must hold on any build
    assert all(t["highlr"]["norm"] >= 3 * t["standard"]["norm"] for t in tasks)
    # (a) fine-tuning helps every task
    assert all(t["standard"]["accuracy"] > t["zero_shot"]["accuracy"] for t in tasks)
    assert "merge (task arithmetic)" in summary.table()


def test_cached_rebuild_is_instant_and_partial_is_rebuilt(example_suite, tmp_path):
    from hfdistac.example_suite import build_example_suite, suite_status

    d, _ = example_suite
    start = time.perf_counter()
    again = build_example_suite(d, num_tasks=SUITE_TASKS, seed=0, progress=False)
    assert again.cached and time.perf_counter() - start < 2.0
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "suite.json").write_text("{}")
    assert suite_status(partial) == "partial"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert suite_status(foreign) == "foreign"


@pytest.mark.slow
def test_same_seed_same_files(example_suite, tmp_path):
    from hfdistac.example_suite import build_example_suite

    d, _ = example_suite
    other = tmp_path / "again"
    build_example_suite(other, num_tasks=SUITE_TASKS, seed=0, progress=False)

    def digest(root):
        out = {}
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.name not in ("suite.json", "README.md"):
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        return out

    assert digest(d) == digest(other)


def test_bad_suite_arguments(capsys, tmp_path):
    code, _, err = run_cli(capsys, "example-suite", tmp_path / "s", "--tasks", "99")
    assert code == 2 and err.startswith("error: --tasks must be between")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("keep me")
    code, _, err = run_cli(capsys, "example-suite", tmp_path / "foreign", "--tasks", "2", "--no-progress")
    assert code == 2 and "not an hfdistac example suite" in err
    assert (tmp_path / "foreign" / "x.txt").read_text() == "keep me"


def test_readme_main_job_flags_the_harmful_models(example_suite, tmp_path, capsys):
    d, summary = example_suite
    code, out, err = run_cli(capsys, "inspect", d / "recipes" / "norm-mismatch.yaml", "--json", tmp_path / "n.json",
                             "--no-progress")
    assert code == 0, err
    report = json.loads((tmp_path / "n.json").read_text())
    mismatch = summary.figures.get("mismatch_task") or next(iter(summary.figures["tasks"]))
    flagged = {m["name"]: m["flags"] for m in report["models"]}
    assert "norm_mismatch" in flagged[mismatch]
    assert all("norm_mismatch" not in f for n, f in flagged.items() if n != mismatch)
    code, out, err = run_cli(capsys, "inspect", d / "recipes" / "low-confidence.yaml", "--json", tmp_path / "l.json",
                             "--no-progress")
    assert code == 0, err
    report = json.loads((tmp_path / "l.json").read_text())
    assert sum("low_confidence" in m["flags"] for m in report["models"]) >= 1
