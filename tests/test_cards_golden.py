"""Golden-file tests of the model cards: rendering a fixed input must give exactly the stored text.

Regenerate after an intended template change with ``HFDISTAC_UPDATE_GOLDEN=1 python -m pytest tests/test_cards_golden.py``
(the run rewrites the files and fails; review ``git diff``, then run again without the variable).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("HFDISTAC_UPDATE_GOLDEN"):
        # the switch writes the file and fails: an update is reviewed (git diff) and re-run without it, so the
        # switch can never make a run pass
        path.write_text(text, encoding="utf-8")
        pytest.fail(f"golden file {path.name} rewritten (HFDISTAC_UPDATE_GOLDEN is set): review `git diff`, "
                    "then run again without it")
    assert path.is_file(), f"missing golden file {path}; run with HFDISTAC_UPDATE_GOLDEN=1 once"
    assert text == path.read_text(encoding="utf-8")


def fixed_diagnosis():
    from hfdistac.diagnosis import ModelDiagnosis, classify

    flags, rec = classify(12.0, 6.0, 2.0, 0.01)
    rec["command"] = "hfdistac condition org/svhn-highlr --base openai/clip-vit-base-patch32 --preset norm"
    return ModelDiagnosis(name="svhn-highlr", reference="org/svhn-highlr", revision="a" * 40, norm=12.0,
                          norm_ratio=6.0, target_norm=2.0, dataset="ufldl-stanford/svhn", split="test",
                          num_classes=10, entropy=0.0230, normalized_entropy=0.01, max_prob=0.995, accuracy=96.5,
                          ece=0.012, flags=flags, recommendation=rec)


def test_readiness_section_golden():
    from hfdistac import __version__
    from hfdistac.readiness import render_section

    m = fixed_diagnosis()
    text = render_section(m, base="openai/clip-vit-base-patch32", base_revision="b" * 40, n_references=3,
                          norm_threshold=2.0, entropy_threshold=0.1, command=m.recommendation["command"],
                          plots=[{"title": "Task-vector norm per layer", "path": "hfdistac/per_layer_norms.png"}],
                          limit_text="test split of `ufldl-stanford/svhn` (first 512 images)")
    check_golden("readiness_section.md", text.replace(__version__, "VERSION"))


def test_readiness_card_metadata_loads_back():
    from huggingface_hub import ModelCard

    from hfdistac.cards import render_card
    from hfdistac.readiness import add_metadata

    text = render_card("readiness_card.md.j2", {
        "card_data": add_metadata({}, {"tags": ["hfdistac", "merge-readiness"], "library_name": "transformers",
                                       "base_model": "openai/clip-vit-base-patch32"}),
        "title": "org/model", "base": "openai/clip-vit-base-patch32", "section": "SECTION"})
    card = ModelCard(text)
    assert card.data.base_model == "openai/clip-vit-base-patch32" and "SECTION" in card.text
    check_golden("readiness_card.md", text)


@pytest.mark.parametrize("flags,verdict", [([], "ready"), (["norm_mismatch"], "norm_mismatch"),
                                           (["low_confidence"], "low_confidence"),
                                           (["norm_mismatch", "low_confidence"], "both")])
def test_verdicts(flags, verdict):
    from hfdistac.readiness import verdict_of

    assert verdict_of(flags) == verdict


def fixed_merge_report() -> dict:
    tasks = [{"name": "svhn", "model": "org/svhn", "dataset": "ufldl-stanford/svhn", "dataset_config": "cropped_digits",
              "test_split": "test"},
             {"name": "shape", "model": "/local/models/shape", "dataset": "/local/data/shape", "test_split": "test"}]
    return {
        "recipe": {"format": "hfdistac.recipe.v1", "name": "demo", "base": "openai/clip-vit-base-patch32",
                   "tasks": tasks},
        "base": "openai/clip-vit-base-patch32", "base_revision": "c" * 40,
        "sources": [{"name": "svhn", "reference": "org/svhn", "revision": "d" * 40, "conditioned": True,
                     "normalizer": "org/svhn", "norm": 2.5, "license": "mit"},
                    {"name": "shape", "reference": "/local/models/shape", "revision": "sha256:0123456789abcdef",
                     "conditioned": False, "normalizer": "/local/models/shape", "norm": 2.25, "license": "mit"}],
        "table_markdown": "| method | alpha |\n|:--|--:|\n| TSV-M | 0.6 |",
        "results": [{"method": "tsvm", "pretty_name": "TSV-M", "alpha": 0.6,
                     "alpha_selection": "grid search on the validation split (mean normalised accuracy)",
                     "params": {}, "tasks": [
                         {"name": "svhn", "accuracy": 91.25, "normalized_accuracy": 95.0, "ece": 0.05,
                          "temperature": 1.5, "ece_before": 0.05, "ece_after": 0.02},
                         {"name": "shape", "accuracy": 80.0, "normalized_accuracy": 88.0, "ece": 0.1,
                          "temperature": 0.8, "ece_before": 0.1, "ece_after": 0.03}]}],
    }


def test_merge_card_golden_and_metadata_loads_back():
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from hfdistac.merge_eval import merge_card

    text = merge_card(fixed_merge_report(), repo="org/demo-tsvm")
    card = ModelCard(text)
    assert card.data.base_model == ["org/svhn"]  # local paths never go into metadata
    assert card.data.base_model_relation == "merge" and "tsvm" in card.data.tags
    assert card.data.datasets == ["ufldl-stanford/svhn"] and card.data.license == "mit"
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert [(r.dataset_name, r.dataset_type, r.dataset_config, r.metric_name, r.metric_value) for r in results] == [
        ("ufldl-stanford/svhn", "ufldl-stanford/svhn", "cropped_digits", "accuracy (svhn)", 91.25),
        ("shape", "shape", None, "accuracy (shape)", 80.0)]  # a local dataset: its folder's name
    assert "/local/" not in text and "REPO_OR_DIR" not in text and "github.com/hfdistac" not in text
    assert 'from_pretrained("org/demo-tsvm")' in text
    assert "arxiv.org/abs/2412.00081" in text and "@" in text  # paper link and BibTeX from the registry
    check_golden("merge_card.md", text)


def test_condition_card_golden_and_metadata_loads_back():
    """The DisTaC card template rendered from a fixed report (the e2e tests cover how a run fills it)."""
    from huggingface_hub import ModelCard

    from hfdistac import __version__
    from hfdistac.cards import render_card

    report = {"train_split": "train", "num_train_examples": 480, "preset": "norm", "kappa": 0.181,
              "target_norm": 2.2, "teacher_temperature": 10.0, "student_temperature": 10.0, "beta": 0.5,
              "steps": 500, "lr": 1e-5, "weight_decay": 0.0, "warmup_steps": 200, "batch_size": 128,
              "eval_split": "test", "num_eval_examples": 200, "norm_after_over_target": 1.135,
              "norm_before": 12.17, "norm_rescaled": 2.2, "norm_after": 2.5}
    rows = [{"label": "teacher θ₀ + τ", "norm": 12.17, "accuracy": 32.0, "entropy": 0.73, "ece": 0.3},
            {"label": "naive rescaling θ₀ + 0.181τ", "norm": 2.2, "accuracy": 31.5, "entropy": 1.1, "ece": 0.2},
            {"label": "DisTaC θ₀ + τ′", "norm": 2.5, "accuracy": 39.0, "entropy": 1.16, "ece": 0.1}]
    from hfdistac.cards import accuracy_result

    evals = [accuracy_result("org/shape-data", "shape-data", "test", r["accuracy"], label)
             for r, label in zip(rows, ("teacher", "naive rescaling", "DisTaC"), strict=True)]
    context = {
        "card_data": {"base_model": "org/shape-highlr", "base_model_relation": "finetune", "license": "mit",
                      "library_name": "transformers", "tags": ["hfdistac", "distac", "task-vector", "clip"],
                      "datasets": ["org/shape-data"], "model_name": "shape-highlr-distac", "eval_results": evals,
                      "hfdistac": {"method": "distac", "base": "openai/clip-vit-base-patch32",
                                   "base_revision": "e" * 40, "source": "org/shape-highlr",
                                   "source_revision": "f" * 40}},
        "source": "org/shape-highlr", "source_revision": "f" * 40, "source_is_local": False,
        "base": "openai/clip-vit-base-patch32", "base_revision": "e" * 40, "base_is_local": False,
        "dataset": "org/shape-data", "dataset_revision": "d" * 40, "accuracy_measured": True,
        "repo": "org/shape-highlr-distac",
        "report": report, "rows": rows, "plots": ["per_layer_norms.png", "training_curves.png"],
        "paper_url": "https://arxiv.org/abs/2508.01148",
        "command": "hfdistac condition org/shape-highlr --preset norm --target-norm 2.2",
        "config_yaml": "model: org/shape-highlr\npreset: norm",
        "versions": {"hfdistac": "VERSION", "torch": "2.x", "transformers": "5.x"},
    }
    text = render_card("condition_card.md.j2", context)
    card = ModelCard(text)
    assert card.data.base_model == "org/shape-highlr" and card.data.base_model_relation == "finetune"
    assert card.data.to_dict()["hfdistac"]["base"] == "openai/clip-vit-base-patch32"
    assert [(e.metric_name, e.metric_value, e.dataset_type) for e in card.data.eval_results] == [
        ("accuracy (teacher)", 32.0, "org/shape-data"), ("accuracy (naive rescaling)", 31.5, "org/shape-data"),
        ("accuracy (DisTaC)", 39.0, "org/shape-data")]
    assert card.data.license == "mit" and "REPO_OR_DIR" not in text and "github.com/hfdistac" not in text
    check_golden("condition_card.md", text.replace(__version__, "VERSION"))
