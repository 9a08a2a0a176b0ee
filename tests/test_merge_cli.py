"""`hfdistac merge` end to end on the tiny fixtures: table, outputs, alpha selection, calibration, errors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from hfdistac.cli.main import main
from hfdistac.merge_eval import fit_temperature
from tests._fixtures_models import plain_accuracy


def write_recipe(path, tiny, tasks=None, base=None):
    tasks = tasks or [{"name": n, "model": str(getattr(tiny, n)), "dataset": str(tiny.data)}
                      for n in ("ft_a", "ft_b", "ft_c")]
    path.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "tiny", "base": str(base or tiny.base),
                                    "tasks": tasks}))
    return path


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_merge_all_methods_writes_table_and_outputs(tiny, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny)
    code, out, err = run_cli(capsys, "merge", recipe, "--method", "all", "--output", tmp_path / "out",
                             "--no-progress", "--alpha-grid", "0", "0.5", "1")
    assert code == 0, err
    for row in ("zero-shot", "individual", "Task Arithmetic", "TIES-Merging", "Consensus TA", "TSV-M"):
        assert row in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [r["method"] for r in report["results"]] == ["task_arithmetic", "ties", "consensus", "tsvm", "average",
                                                        "iso_c", "iso_cts", "wudi", "regmean", "regmean_plusplus"]
    for method in ("task_arithmetic", "ties", "consensus", "tsvm", "average"):
        d = tmp_path / "out" / method
        files = {p.name for p in d.iterdir()}
        assert {"config.json", "model.safetensors", "preprocessor_config.json", "report.json", "results.md",
                "recipe.yaml", "README.md", "hfdistac_config.json"} <= files
        r = json.loads((d / "report.json").read_text())
        for key in ("method", "alpha", "alpha_grid", "tasks", "mean_accuracy", "mean_normalized_accuracy"):
            assert key in r
        assert {"name", "accuracy", "normalized_accuracy", "ece"} <= set(r["tasks"][0])
    ta = next(r for r in report["results"] if r["method"] == "task_arithmetic")
    assert ta["alpha"] in (0.0, 0.5, 1.0) and len(ta["alpha_curve"]) == 3
    best = max(c["mean_normalized_accuracy"] for c in ta["alpha_curve"])
    assert ta["alpha"] == min(c["alpha"] for c in ta["alpha_curve"] if c["mean_normalized_accuracy"] == best)
    cons = next(r for r in report["results"] if r["method"] == "consensus")
    assert len(cons["tall_lambdas"]) == 3 and all(lam in (0.2, 0.3, 0.4, 0.5, 0.6) for lam in cons["tall_lambdas"])
    avg = next(r for r in report["results"] if r["method"] == "average")
    assert avg["alpha"] == 1.0


def test_merged_weights_are_base_plus_alpha_tau(tiny, tmp_path, capsys):
    from safetensors.torch import load_file

    from hfdistac.checkpoints import read_vision_weights

    recipe = write_recipe(tmp_path / "r.yaml", tiny)
    code, _, err = run_cli(capsys, "merge", recipe, "--method", "task_arithmetic", "--alpha", "0.3", "--weights-only",
                           "--output", tmp_path / "out", "--no-progress")
    assert code == 0, err
    merged = load_file(str(tmp_path / "out" / "model.safetensors"))
    base = read_vision_weights(tiny.base)
    fts = [read_vision_weights(getattr(tiny, n)) for n in ("ft_a", "ft_b", "ft_c")]
    k = "vision_model.encoder.layers.1.mlp.fc1.weight"
    expected = base[k] + 0.3 * sum(f[k] - base[k] for f in fts)
    torch.testing.assert_close(merged[k], expected, rtol=1e-5, atol=1e-6)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "task_arithmetic" in card and "0.3" in card


def test_calibration_fits_temperatures_and_stores_them_with_heads(tiny, tmp_path, capsys):
    from hfdistac.heads import load_head

    recipe = write_recipe(tmp_path / "r.yaml", tiny)
    code, out, err = run_cli(capsys, "merge", recipe, "--method", "tsvm", "--calibrate", "--output", tmp_path / "out",
                             "--no-progress", "--alpha-grid", "0.5")
    assert code == 0, err
    r = json.loads((tmp_path / "out" / "report.json").read_text())
    res = r["results"][0]
    assert set(res["temperatures"]) == {"ft_a", "ft_b", "ft_c"}
    assert all("ece_before" in t and "ece_after" in t for t in res["tasks"])
    head = load_head(tmp_path / "out" / "heads" / "ft_a.safetensors")
    assert head.temperature == pytest.approx(res["temperatures"]["ft_a"])
    assert "ECE before" in out


def test_calibration_lowers_ece_of_an_over_confident_model():
    """calibrate() fits T on the validation rows and scores the test rows at logits / T: on a model 4x over-
    confident (validation and test drawn alike, neither seen by the other) ECE falls well below its value before,
    and the number reported is the ECE of the test logits divided by the fitted T."""
    from hfdistac.merge_eval.scoring import calibrate
    from hfdistac.metrics import expected_calibration_error

    g = torch.Generator().manual_seed(0)

    def draw(n):
        true = torch.randn(n, 5, generator=g) * 3
        return true * 4.0, torch.multinomial(torch.softmax(true, -1), 1, generator=g).squeeze(1)

    val, test = draw(2000), draw(2000)
    task = type("Task", (), {"name": "t", "val": object()})()
    merged = type("Merged", (), {"tasks": [task],
                                 "evaluate_all": lambda self, split: {"logits": {"t": val}}})()
    before = expected_calibration_error(*test)
    result = {"tasks": [{"name": "t", "ece": before}]}
    calibrate(merged, result, {"t": test})
    row = result["tasks"][0]
    assert row["temperature"] == pytest.approx(fit_temperature(*val))
    assert row["ece_after"] == pytest.approx(expected_calibration_error(test[0] / row["temperature"], test[1]))
    assert row["ece_after"] < 0.25 * row["ece_before"] and result["mean_ece_after"] == row["ece_after"]


def test_fit_temperature_recovers_a_known_temperature():
    torch.manual_seed(0)
    true_logits = torch.randn(4000, 5) * 3
    labels = torch.distributions.Categorical(logits=true_logits).sample()
    t = fit_temperature(true_logits * 4.0, labels)  # over-confident by 4x
    assert t == pytest.approx(4.0, rel=0.15)


def test_conditioned_vector_with_another_base_is_refused(tiny, tmp_path, capsys):
    from hfdistac.task_vectors import TaskVector, save_task_vector

    cond = tmp_path / "cond"
    cond.mkdir()
    (cond / "config.json").write_text((tiny.ft_a / "config.json").read_text())
    (cond / "model.safetensors").write_bytes((tiny.ft_a / "model.safetensors").read_bytes())
    save_task_vector(TaskVector({"x": torch.zeros(1)}), cond / "task_vector.safetensors",
                     {"base_revision": "sha256:0000000000000000"})
    recipe = write_recipe(tmp_path / "r.yaml", tiny, tasks=[
        {"name": "a", "model": str(cond)}, {"name": "b", "model": str(tiny.ft_b)}])
    code, _, err = run_cli(capsys, "merge", recipe, "--weights-only", "--alpha", "0.3", "--method", "task_arithmetic")
    assert code == 2 and "base revision" in err


@pytest.mark.parametrize("case", ["mismatched_base", "missing_model", "no_test_split", "unknown_method",
                                  "alpha_range", "density_range", "missing_recipe", "weights_only_without_alpha"])
def test_merge_bad_input(tiny, tmp_path, capsys, case):
    out_dir = tmp_path / "out"
    args = ["--output", out_dir, "--no-progress"]
    recipe = write_recipe(tmp_path / "r.yaml", tiny)
    if case == "mismatched_base":
        recipe = write_recipe(tmp_path / "r.yaml", tiny, base=tiny.other_base)
        argv = ["merge", recipe, "--method", "task_arithmetic", "--alpha", "0.3", "--weights-only", *args]
    elif case == "missing_model":
        recipe = write_recipe(tmp_path / "r.yaml", tiny, tasks=[{"name": "x", "model": str(tmp_path / "gone")}])
        argv = ["merge", recipe, "--alpha", "0.3", "--weights-only", *args]
    elif case == "no_test_split":
        recipe = write_recipe(tmp_path / "r.yaml", tiny, tasks=[
            {"name": "a", "model": str(tiny.ft_a), "dataset": str(tiny.data), "test_split": "holdout"}])
        argv = ["merge", recipe, "--method", "task_arithmetic", *args]
    elif case == "unknown_method":
        argv = ["merge", recipe, "--method", "dare", *args]
    elif case == "alpha_range":
        argv = ["merge", recipe, "--alpha", "11", *args]
    elif case == "density_range":
        argv = ["merge", recipe, "--method", "ties", "--density", "1.5", *args]
    elif case == "missing_recipe":
        argv = ["merge", tmp_path / "nope.yaml", *args]
    else:
        argv = ["merge", recipe, "--weights-only", *args]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[0].startswith("error: ") and len(lines) <= 2 and "Traceback" not in err
    if case == "unknown_method":
        assert "task_arithmetic" in err and "tsvm" in err
    assert not out_dir.exists()


def test_merged_output_evaluates_without_base(tiny, tmp_path, capsys):
    """The merged card records hfdistac.base, so `evaluate` finds θ₀ without --base."""
    recipe = write_recipe(tmp_path / "r.yaml", tiny)
    code, _, err = run_cli(capsys, "merge", recipe, "--method", "average", "--output", tmp_path / "out",
                           "--no-progress")
    assert code == 0, err
    code, out, err = run_cli(capsys, "evaluate", tmp_path / "out", "--data", tiny.data, "--json",
                             tmp_path / "m.json", "--no-progress")
    assert code == 0, err
    import json as _json

    m = _json.loads((tmp_path / "m.json").read_text())
    assert m["base"] == str(tiny.base)
    # the merge's own weights, counted again here: θ = θ₀ + 1·mean(τ) for averaging
    assert m["accuracy"] == pytest.approx(plain_accuracy(tiny.base, tmp_path / "out", tiny.data))


def test_merge_says_how_many_forward_passes_and_how_long(tiny, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny)
    code, out, err = run_cli(capsys, "merge", recipe, "--method", "task_arithmetic", "--alpha-grid", "0", "0.5", "1",
                             "--no-progress")
    assert code == 0, err
    # 3 tasks x (24 test + 5 validation images): zero-shot 72, individual 15 + 72, alpha search 3 x 15, test 72
    assert "about 276 image forward passes" in err and "--alpha-grid" in err and "--val-limit" in err
    assert "images/s on the first evaluation; the whole evaluation will take about" in err


def test_full_clip_outputs_run_in_the_zero_shot_pipeline(tiny, tmp_path):
    """--full-clip: merge and condition write a full CLIPModel (new vision tower, the base's text tower,
    projections, tokenizer, processor) that transformers' zero-shot pipeline runs as it is."""
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import pipeline

    from hfdistac.conditioning import ConditionConfig, run_condition
    from hfdistac.merge_eval import MergeConfig, run_merge

    recipe = write_recipe(tmp_path / "r.yaml", tiny)
    merged = tmp_path / "merged"
    run_merge(MergeConfig(recipe=str(recipe), method="task_arithmetic", alpha=0.3, weights_only=True,
                          output=str(merged), full_clip=True, progress=False))
    conditioned = tmp_path / "conditioned"
    run_condition(ConditionConfig(model=str(tiny.ft_a), base=str(tiny.base), data=str(tiny.data), steps=2,
                                  batch_size=8, eval_split="none", output=str(conditioned), full_clip=True,
                                  progress=False))
    base = load_file(str(tiny.base / "model.safetensors"))
    image = Image.new("RGB", (40, 40), (220, 30, 30))
    for out in (merged, conditioned):
        weights = load_file(str(out / "model.safetensors"))
        assert {k for k in base if not k.endswith("position_ids")} <= set(weights)
        assert all(torch.equal(weights[k], base[k]) for k in base if k.startswith(("text_model.", "text_projection")))
        assert not all(torch.equal(weights[k], base[k]) for k in base if k.startswith("vision_model.encoder"))
        scores = pipeline("zero-shot-image-classification", model=str(out))(image, candidate_labels=["red", "blue"])
        assert {s["label"] for s in scores} == {"red", "blue"} and abs(sum(s["score"] for s in scores) - 1) < 1e-5
        card = (out / "README.md").read_text()
        assert "zero-shot-image-classification" in card
        # the usage code loads what the folder holds: a CLIPModel, never the vision tower class alone
        assert "CLIPModel.from_pretrained(" in card and "CLIPVisionModel" not in card.split("## How to use")[1]


def test_recipe_val_split_chooses_alpha_and_methods_may_be_listed(tiny, tmp_path, capsys):
    """``val_split`` names the split alpha is chosen on (here: test, so the curve at the chosen alpha equals
    the test result); ``--method a,b`` compares just those methods, one folder each."""
    tasks = [{"name": n, "model": str(getattr(tiny, n)), "dataset": str(tiny.data), "val_split": "test"}
             for n in ("ft_a", "ft_b")]
    recipe = write_recipe(tmp_path / "r.yaml", tiny, tasks=tasks)
    code, _, err = run_cli(capsys, "merge", recipe, "--method", "ties,task_arithmetic", "--output", tmp_path / "out",
                           "--no-progress", "--alpha-grid", "0", "0.5", "1", "--val-limit", "0")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [r["method"] for r in report["results"]] == ["task_arithmetic", "ties"]
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"task_arithmetic", "ties"}
    for r in report["results"]:
        chosen = next(c for c in r["alpha_curve"] if c["alpha"] == r["alpha"])
        assert chosen["mean_normalized_accuracy"] == pytest.approx(r["mean_normalized_accuracy"], abs=1e-6)
    code, _, err = run_cli(capsys, "merge", recipe, "--method", "ties,nope")
    assert code == 2 and "'ties,nope'" in err and "separated by commas" in err


def test_coarse_to_fine_searches_every_other_value_then_the_neighbours_of_the_best():
    """On the default 21-value grid: 11 coarse values (ends included) and the two neighbours of the best, 13
    evaluations; the same α as the full grid on a single-peaked curve (checked against a plain argmax written
    here, ties to the smaller α), and a curve whose peak falls between coarse points and is missed shows why the
    default stays the full grid unless the demo's merges agree."""
    from hfdistac.merge_eval.config import DEFAULT_ALPHA_GRID
    from hfdistac.merge_eval.selection import coarse_to_fine

    def full_choice(f):
        best = max(DEFAULT_ALPHA_GRID, key=lambda a: (round(f(a), 9), -a))
        return best

    for peak in (0.0, 0.15, 0.3, 0.35, 0.55, 0.8, 1.0):
        f = lambda a, p=peak: 80 - 50 * (a - p) ** 2  # noqa: E731
        seen: list[float] = []
        curve = coarse_to_fine(DEFAULT_ALPHA_GRID, lambda a, f=f, seen=seen: seen.append(a) or
                               {"alpha": a, "mean_normalized_accuracy": f(a), "mean_accuracy": 0.0})
        assert len(seen) == len(set(seen)) <= 13
        assert max(curve, key=lambda c: (round(c["mean_normalized_accuracy"], 9), -c["alpha"]))["alpha"] == \
            full_choice(f)
    spike = lambda a: 90.0 if a == 0.45 else 50.0 + a  # noqa: E731 - a narrow peak between coarse points 0.4 and 0.5
    curve = coarse_to_fine(DEFAULT_ALPHA_GRID, lambda a: {"alpha": a, "mean_normalized_accuracy": spike(a),
                                                           "mean_accuracy": 0.0})
    assert max(curve, key=lambda c: c["mean_normalized_accuracy"])["alpha"] != full_choice(spike) == 0.45


def test_merge_reports_the_search_and_an_alpha_at_the_edge(tiny, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny)
    code, _, err = run_cli(capsys, "merge", recipe, "--method", "task_arithmetic", "--alpha-search", "coarse-to-fine",
                           "--output", tmp_path / "out", "--no-progress", "--val-limit", "8", "--test-limit", "8")
    assert code == 0, err
    res = json.loads((tmp_path / "out" / "report.json").read_text())["results"][0]
    assert res["alpha_search"] == "coarse-to-fine" and res["alpha_evaluations"] == len(res["alpha_curve"]) <= 13
    assert res["alpha_at_edge"] == (res["alpha"] == 1.0)


def test_a_merge_resolves_each_model_reference_once(tiny, tmp_path, monkeypatch):
    """Files, identity, card and license of a model come from one resolution per run (a merge used to resolve the
    same reference up to five times); a new run resolves again (a local model may have changed in between)."""
    from collections import Counter

    from hfdistac.hub import resolve
    from hfdistac.merge_eval import MergeConfig, run_merge

    calls: Counter = Counter()
    real = resolve._resolve
    monkeypatch.setattr(resolve, "_resolve", lambda ref, *a: calls.update([str(ref)]) or real(ref, *a))
    recipe = write_recipe(tmp_path / "r.yaml", tiny)
    config = MergeConfig(recipe=str(recipe), method="task_arithmetic,tsvm", alpha_grid=[0.3], output=str(tmp_path / "o"),
                         progress=False, calibrate=True)
    run_merge(config)
    refs = {str(tiny.base), *(str(getattr(tiny, n)) for n in ("ft_a", "ft_b", "ft_c"))}
    assert set(calls) == refs and all(n == 1 for n in calls.values()), calls
    run_merge(MergeConfig(**{**config.__dict__, "overwrite": True}))
    assert all(n == 2 for n in calls.values()), calls
