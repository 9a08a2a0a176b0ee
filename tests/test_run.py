"""`hfdistac run`: diagnose → condition what is flagged → merge with and without DisTaC → Table 1 → publish, on the
tiny fixtures; every stage reused on a second run; the demo's steps are the same chain."""

from __future__ import annotations

import json

import pytest
import yaml

from hfdistac.cli.main import main

FAST = ["--method", "task_arithmetic,ties", "--condition-steps", "2", "--condition-batch-size", "8",
        "--condition-lr", "1e-3", "--inspect-limit", "16", "--no-progress"]


def _recipe(tmp_path, tiny):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "tiny-run", "base": str(tiny.base),
                                    "tasks": [{"name": n, "model": str(getattr(tiny, n)), "dataset": str(tiny.data)}
                                              for n in ("ft_a", "ft_b", "ft_long")]}))
    return path


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def first_run(tiny, tmp_path_factory):
    import time

    from hfdistac import RunConfig, run_pipeline

    tmp = tmp_path_factory.mktemp("run")
    recipe = _recipe(tmp, tiny)
    cfg = RunConfig(recipe=str(recipe), output=str(tmp / "out"), method="task_arithmetic,ties", condition_steps=2,
                    condition_batch_size=8, condition_lr=1e-3, inspect_limit=16, progress=False)
    start = time.perf_counter()
    report = run_pipeline(cfg)
    return tmp, recipe, cfg, report, time.perf_counter() - start


def test_run_conditions_the_flagged_task_and_tabulates_both_merges(first_run):
    tmp, _, _, report, _ = first_run
    out = tmp / "out"
    assert "ft_long" in report["conditioned"] and "norm_mismatch" in report["diagnosis"]["ft_long"]["flags"]
    assert {p.name for p in out.iterdir()} >= {"inspect", "conditioned", "merges", "recipe.conditioned.yaml",
                                               "run.json", "table.md", "README.md", "hfdistac_config.json"}
    conditioned = yaml.safe_load((out / "recipe.conditioned.yaml").read_text())
    task = next(t for t in conditioned["tasks"] if t["name"] == "ft_long")
    assert task["model"] == report["conditioned"]["ft_long"]["output"] and task["normalizer"].endswith("ft_long")
    # the table is the merges' own numbers, method by method, with and without DisTaC
    for scenario in ("original", "distac"):
        merged = json.loads((out / "merges" / scenario / "report.json").read_text())
        for r in merged["results"]:
            row = report["table"][r["method"]][scenario]
            assert row["mean_normalized_accuracy"] == r["mean_normalized_accuracy"] and row["alpha"] == r["alpha"]
            assert row["tasks"] == {t["name"]: {"accuracy": t["accuracy"], "normalized_accuracy":
                                                t["normalized_accuracy"]} for t in r["tasks"]}
    # the conditioned task's settings are inspect's recommendation: kappa to the others' mean norm
    others = [report["diagnosis"][n]["norm"] for n in ("ft_a", "ft_b")]
    c = report["conditioned"]["ft_long"]
    assert c["kappa"] == pytest.approx(sum(others) / 2 / report["diagnosis"]["ft_long"]["norm"], rel=1e-4)
    table = (out / "table.md").read_text()
    assert "+ DisTaC mean norm. acc." in table and "ft_long" in table
    assert "## What was flagged" in (out / "README.md").read_text()


def test_a_second_run_reuses_every_stage_and_overwrite_redoes_them(first_run, capsys):
    import time

    from hfdistac import run_pipeline

    tmp, _, cfg, report, first_seconds = first_run
    start = time.perf_counter()
    again = run_pipeline(cfg)
    seconds = time.perf_counter() - start
    assert all(s["reused"] for s in again["stages"]) and len(again["stages"]) == len(report["stages"])
    assert again["table"] == report["table"] and again["conditioned"] == report["conditioned"]
    assert seconds < first_seconds
    from dataclasses import replace

    redone = run_pipeline(replace(cfg, overwrite=True))
    assert not any(s["reused"] for s in redone["stages"])


def test_run_refuses_an_output_it_did_not_create_and_unknown_tasks(tiny, tmp_path, capsys):
    recipe = _recipe(tmp_path, tiny)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "run", recipe, "--output", mine, *FAST)
    assert code == 2 and "not an hfdistac run's output" in err and (mine / "notes.txt").read_text() == "mine"
    code, _, err = run_cli(capsys, "run", recipe, "--output", tmp_path / "o", "--condition", "nope", *FAST)
    assert code == 2 and "'nope' is not a task" in err
    code, _, err = run_cli(capsys, "run", recipe, "--output", tiny.root, *FAST)
    assert code == 2 and "an input of the run" in err


def test_run_without_distac_merges_as_is(tiny, tmp_path, capsys):
    recipe = _recipe(tmp_path, tiny)
    code, out, err = run_cli(capsys, "run", recipe, "--output", tmp_path / "o", "--no-distac", *FAST)
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "run.json").read_text())
    assert report["conditioned"] == {} and not (tmp_path / "o" / "merges" / "distac").exists()
    assert "mean norm. acc." in out


def test_run_pushes_merges_and_conditioned_vectors_whose_cards_link_each_other(hub_env, first_run):
    from dataclasses import replace

    from hfdistac import run_pipeline

    _, _, cfg, _, _ = first_run
    report = run_pipeline(replace(cfg, push_to="org/tiny-run"))
    pushed = report["pushed"]
    assert set(pushed["merges"].values()) == {"org/tiny-run-task-arithmetic", "org/tiny-run-ties"}
    assert pushed["conditioned"] == {n: f"org/tiny-run-{n.replace('_', '-')}-distac" for n in report["conditioned"]}
    assert "ft_long" in pushed["conditioned"]
    for repo in [*pushed["merges"].values(), *pushed["conditioned"].values()]:
        files = hub_env.server.repo_files(repo)
        card = files["README.md"].decode()
        assert "## Part of an hfdistac run" in card
        others = [r for r in [*pushed["merges"].values(), *pushed["conditioned"].values()] if r != repo]
        assert all(f"`{r}`" in card for r in others)
    assert "model.safetensors" in hub_env.server.repo_files("org/tiny-run-ties")
    assert "task_vector.safetensors" in hub_env.server.repo_files("org/tiny-run-ft-long-distac")
    assert pushed["collection"] is None  # the loopback Hub has no collections: said so, the cards still link
