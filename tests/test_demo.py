"""`hfdistac demo` end to end on the session's example suite."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path

import pytest

from hfdistac.cli.main import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_demo_end_to_end_on_the_session_suite(example_suite, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    code, out, err = run_cli(capsys, "demo", "demo", "--suite", os.path.relpath(example_suite), "--condition-steps", "10",
                             "--mismatch-tasks", "digits", "textures", "--kappa-grid", "0.5", "1", "--no-progress",
                             "--workers", "2")
    assert code == 0, err
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    summary = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert summary["workers"] == 2 and not (tmp_path / "demo" / ".jobs").exists()
    # the steps' CPU seconds by kind, measured in the worker processes
    assert set(summary["step_cpu_s"]) == {"norm_mismatch_condition", "condition", "merge", "sweep_merge"}
    assert all(v > 0 for v in summary["step_cpu_s"].values()) and "steps' CPU" in out
    # the steps are most of what the two worker processes did (the rest: starting Python, importing torch)
    assert 0.3 * workers_cpu < sum(summary["step_cpu_s"].values()) <= workers_cpu + 1, workers_cpu
    table = summary["table"]
    assert list(table) == ["original", "norm mismatch", "norm mismatch + DisTaC", "low confidence",
                           "low confidence + DisTaC"]
    assert summary["methods"] == ["task_arithmetic", "ties", "consensus", "tsvm"]  # the paper's Table 1
    for scenario in table.values():
        assert {"zero-shot", "individual", "task_arithmetic", "ties", "consensus", "tsvm"} <= set(scenario)
    # norm mismatch: one run per task named, the scenario's numbers their mean
    runs = summary["norm_mismatch_runs"]
    assert [r["task"] for r in runs] == ["digits", "textures"] and all(r["flagged"] == [r["task"]] for r in runs)
    for scenario in ("norm mismatch", "norm mismatch + DisTaC"):
        for method in summary["methods"]:
            per_run = [r["table"][scenario][method]["mean_normalized_accuracy"] for r in runs]
            assert table[scenario][method]["mean_normalized_accuracy"] == pytest.approx(sum(per_run) / 2, abs=1e-3)
    # each scenario normalised by its own source models: the individual rows differ
    individual = {s: table[s]["individual"]["mean_accuracy"] for s in table}
    assert individual["original"] != individual["low confidence"]
    assert individual["low confidence"] == individual["low confidence + DisTaC"]
    # alpha chosen on the suite's holdout split, TIES at the paper-equivalent density
    merge_cfg = json.loads((tmp_path / "demo" / "merges" / "original" / "hfdistac_config.json").read_text())
    assert merge_cfg["density"] == summary["ties_density"]["density"] != 0.2
    recipe = (tmp_path / "demo" / "recipes" / "norm-mismatch-digits.yaml").read_text()
    assert "val_split: holdout" in recipe and "digits-highlr" in recipe
    monkeypatch.chdir(Path(example_suite).parent)  # the demo's recipes work from any directory
    from hfdistac.recipe import load_recipe

    for name in ("norm-mismatch-digits", "norm-mismatch-digits-distac", "low-confidence-distac"):
        for task in load_recipe(tmp_path / "demo" / "recipes" / f"{name}.yaml").tasks:
            assert Path(task.model).is_absolute() and Path(task.model).is_dir(), (name, task.model)
    monkeypatch.chdir(tmp_path)
    # inspect's command carries the suite's fine-tuning rate (from the model card), as the demo uses
    flagged = next(m for m in summary["diagnoses"]["norm-mismatch-digits"]["models"] if m["flags"])
    assert "--lr 1e-05" in flagged["recommendation"]["command"]
    md = (tmp_path / "demo" / "table1.md").read_text()
    assert "· 78.0" in md and "· 15.6" in md and "recovered" in md  # the paper's numbers beside ours
    assert "Task Arithmetic" in out and "run by run" in out
    assert (tmp_path / "demo" / "kappa_sweep.png").is_file() and len(summary["kappa_sweep"]) == 4
    for cond in (tmp_path / "demo" / "conditioned").iterdir():
        assert {"model.safetensors", "task_vector.safetensors", "report.json", "README.md"} <= \
            {p.name for p in cond.iterdir()}
    assert {c.name for c in (tmp_path / "demo" / "conditioned").iterdir()} >= {"digits-highlr", "textures-highlr"}

    # the same steps in this one process (one thread, like each worker) give the same numbers
    code, _, err = run_cli(capsys, "demo", "inline", "--suite", example_suite, "--condition-steps", "10",
                           "--mismatch-tasks", "digits", "--kappa-grid", "1", "--no-progress", "--workers", "1")
    assert code == 0, err
    inline = json.loads((tmp_path / "inline" / "demo.json").read_text())
    assert inline["workers"] == 1
    for scenario in ("original", "low confidence", "low confidence + DisTaC"):
        assert inline["table"][scenario] == table[scenario], scenario
    assert inline["norm_mismatch_runs"][0] == runs[0]
    assert inline["kappa_sweep"] == [r for r in summary["kappa_sweep"] if r["multiple"] == 1]
    assert inline["conditioned"] == [
        {**c, "output": c["output"].replace(str(tmp_path / "demo"), str(tmp_path / "inline"))}
        for c in summary["conditioned"] if c["scenario"] in ("norm-mismatch-digits", "low-confidence")]


def test_demo_resumes_from_the_reports_it_left(example_suite, tmp_path, capsys):
    """A second run reads every step's report (nothing is recomputed) and writes the same table."""
    args = ["demo", tmp_path / "demo", "--suite", example_suite, "--condition-steps", "2", "--mismatch-tasks",
            "digits", "--kappa-grid", "1", "--methods", "task_arithmetic", "--no-progress"]
    assert run_cli(capsys, *args)[0] == 0
    first = json.loads((tmp_path / "demo" / "demo.json").read_text())
    reports = sorted((tmp_path / "demo").rglob("report.json"))
    stamps = {p: p.stat().st_mtime_ns for p in reports}
    (tmp_path / "demo" / ".jobs" / "claims").mkdir(parents=True)  # left by an interrupted run
    (tmp_path / "demo" / ".jobs" / "claims" / "0").touch()
    assert run_cli(capsys, *args)[0] == 0
    second = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert second["table"] == first["table"] and second["kappa_sweep"] == first["kappa_sweep"]
    assert {p: p.stat().st_mtime_ns for p in reports} == stamps


def test_table1_beside_the_paper_and_recovery():
    from hfdistac.demo import SCENARIO_NAMES, recovery, table1_markdown

    values = [80.0, 70.0, 78.0, 60.0, 70.0]
    table = {s: {"task_arithmetic": {"mean_accuracy": v, "mean_normalized_accuracy": v},
                 "zero-shot": {"mean_accuracy": 50.0, "mean_normalized_accuracy": 52.0},
                 "individual": {"mean_accuracy": 96.0, "mean_normalized_accuracy": 100.0}}
             for s, v in zip(SCENARIO_NAMES, values, strict=True)}
    assert recovery(table, "task_arithmetic", "norm mismatch") == {"drop": 10.0, "recovered_points": 8.0,
                                                                   "recovered_percent": 80.0}
    assert recovery(table, "task_arithmetic", "low confidence")["recovered_percent"] == 50.0
    md = table1_markdown(table, ["task_arithmetic"], runs=8)
    assert "80.0 (80.0) · 78.0" in md and "10.0 · 6.2" in md and "80 % · 103 %" in md and "8 run(s)" in md


def test_paper_equivalent_ties_density_for_vit_b32():
    from transformers import CLIPConfig

    from hfdistac.demo import paper_equivalent_density

    d = paper_equivalent_density(CLIPConfig())  # transformers' default CLIPConfig is ViT-B/32's shape
    assert d["density"] == pytest.approx(0.172, abs=5e-4)


def test_demo_refuses_unknown_mismatch_tasks(example_suite, tmp_path, capsys):
    code, _, err = run_cli(capsys, "demo", tmp_path / "demo", "--suite", example_suite, "--mismatch-tasks", "shape")
    assert code == 2 and "'shape'" in err and "digits" in err


def test_demo_refuses_an_incomplete_suite(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "suite.json").write_text("{}")
    code, _, err = run_cli(capsys, "demo", tmp_path / "demo", "--suite", tmp_path / "half")
    assert code == 2 and "not a complete example suite" in err
