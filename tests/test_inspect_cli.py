"""`hfdistac inspect` / `evaluate` and the CLI's error handling, on the tiny fixtures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hfdistac.cli.main import build_parser, main
from hfdistac.diagnosis import LOW_CONFIDENCE, NORM_MISMATCH, classify, norm_statistics
from tests._fixtures_models import plain_accuracy


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_norm_statistics_and_classification_by_hand():
    stats = norm_statistics([1.0, 1.0, 2.0, 8.0])
    assert stats[3] == (pytest.approx(8.0), pytest.approx(4 / 3))  # median of others 1, mean (1+1+2)/3
    flags, rec = classify(8.0, 8.0, 4 / 3, 0.01)
    assert flags == [NORM_MISMATCH]
    assert rec["preset"] == "norm" and rec["kappa"] == pytest.approx(1 / 6)
    assert (rec["teacher_temperature"], rec["student_temperature"]) == (10.0, 10.0)
    flags, rec = classify(1.0, 1.0, 1.0, 0.4)
    assert flags == [LOW_CONFIDENCE] and rec["kappa"] == 1.0 and rec["target_norm"] is None
    assert (rec["teacher_temperature"], rec["student_temperature"]) == (1.0, 10.0)
    flags, rec = classify(8.0, 8.0, 4 / 3, 0.4)
    assert flags == [NORM_MISMATCH, LOW_CONFIDENCE] and rec["preset"] == "both"
    assert rec["kappa"] == pytest.approx(1 / 6) and rec["teacher_temperature"] == 1.0
    assert classify(1.0, 1.5, 1.0, 0.05) == ([], {"action": "none", "reason": "ready to merge"})


def test_condition_command_takes_the_rate_a_card_names():
    from hfdistac.diagnosis import card_distac_lr, condition_command

    assert card_distac_lr({"hfdistac": {"distac_lr": 3e-4}}) == 3e-4
    assert card_distac_lr({"hfdistac": {"distac_lr": "fast"}}) is None and card_distac_lr({}) is None
    rec = {"action": "distac", "preset": "norm", "target_norm": 1.25, "lr": 3e-4}
    assert condition_command("m", "b", rec, "d") == ("hfdistac condition m --base b --preset norm --target-norm 1.25 "
                                                     "--lr 0.0003 --data d")


def test_inspect_flags_the_long_vector(tiny, tmp_path, capsys):
    code, out, err = run_cli(capsys, "inspect", tiny.ft_a, tiny.ft_b, tiny.ft_c, tiny.ft_long, "--base", tiny.base,
                             "--data", "none", "none", "none", "none", "--json", tmp_path / "d.json",
                             "--output", tmp_path / "out", "--no-progress")
    assert code == 0, err
    report = json.loads((tmp_path / "d.json").read_text())
    by_name = {m["name"]: m for m in report["models"]}
    assert by_name["ft_long"]["flags"] == [NORM_MISMATCH]
    assert all(by_name[n]["flags"] == [] for n in ("ft_a", "ft_b", "ft_c"))
    assert by_name["ft_long"]["norm_ratio"] > 4
    rec = by_name["ft_long"]["recommendation"]
    others = [by_name[n]["norm"] for n in ("ft_a", "ft_b", "ft_c")]
    assert rec["target_norm"] == pytest.approx(sum(others) / 3)
    assert "hfdistac condition" in rec["command"] and "--preset norm" in rec["command"]
    for key in ("name", "reference", "revision", "norm", "norm_ratio", "flags", "recommendation"):
        assert key in by_name["ft_a"]
    assert by_name["ft_a"]["revision"].startswith("sha256:")
    assert "ft_long" in out and "norm_mismatch" in out
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["README.md", "hfdistac_config.json", "norm_ratio.png", "per_layer_norms.png", "report.json"]
    from huggingface_hub import ModelCard

    from hfdistac.cli.cmd_push import PushConfig  # what `hfdistac push` checks before it uploads

    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert "hfdistac" in card.data.tags and "ft_long" in card.text and "norm_mismatch" in card.text
    PushConfig(directory=str(tmp_path / "out"), repo="org/diagnosis")


def test_inspect_with_data_infers_base_and_dataset_from_cards(tiny, tmp_path, capsys):
    code, out, err = run_cli(capsys, "inspect", tiny.ft_a, tiny.ft_b, "--json", tmp_path / "d.json", "--no-progress",
                             "--output", tmp_path / "out")
    assert code == 0, err
    report = json.loads((tmp_path / "d.json").read_text())
    m = report["models"][0]
    assert m["dataset"] == str(tiny.data) and m["num_classes"] == 3
    for key in ("entropy", "max_prob", "accuracy", "ece", "normalized_entropy"):
        assert m[key] is not None
    assert 0 <= m["normalized_entropy"] <= 1
    assert (tmp_path / "out" / "entropy.png").is_file()


def test_evaluate_command(tiny, tmp_path, capsys):
    code, out, err = run_cli(capsys, "evaluate", tiny.ft_a, "--json", tmp_path / "m.json", "--no-progress")
    assert code == 0, err
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n"] == 24 and m["split"] == "test"
    assert m["accuracy"] == pytest.approx(plain_accuracy(tiny.base, tiny.ft_a, tiny.data))  # counted again here


@pytest.mark.parametrize("case", ["missing_path", "offline_hub_id", "not_clip", "mismatch", "pickle_only",
                                  "no_image_column", "class_count", "bad_threshold"])
def test_bad_input_is_one_line_and_nonzero(tiny, tmp_path, capsys, case, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out_dir = tmp_path / "out"
    common = ["--output", out_dir, "--no-progress"]
    if case == "missing_path":
        argv = ["inspect", tmp_path / "does-not-exist", "--base", tiny.base, *common]
    elif case == "offline_hub_id":
        argv = ["inspect", "someone/clip-that-is-not-cached", "--base", tiny.base, *common]
    elif case == "not_clip":
        d = tmp_path / "bert"
        d.mkdir()
        (d / "config.json").write_text('{"model_type": "bert"}')
        (d / "model.safetensors").write_bytes((tiny.ft_a / "model.safetensors").read_bytes())
        argv = ["inspect", d, "--base", tiny.base, *common]
    elif case == "mismatch":
        argv = ["inspect", tiny.ft_a, "--base", tiny.other_base, *common]
    elif case == "pickle_only":
        d = tmp_path / "pickled"
        d.mkdir()
        (d / "config.json").write_text((tiny.ft_a / "config.json").read_text())
        (d / "pytorch_model.bin").write_bytes(b"not unpickled")
        argv = ["inspect", d, "--base", tiny.base, *common]
    elif case == "no_image_column":
        from datasets import Dataset

        d = tmp_path / "noimg"
        (d / "data").mkdir(parents=True)
        Dataset.from_dict({"x": [1, 2]}).to_parquet(str(d / "data" / "test-00000-of-00001.parquet"))
        argv = ["inspect", tiny.ft_a, "--base", tiny.base, "--data", d, *common]
    elif case == "class_count":
        # evaluating with labels beyond the head's classes
        from datasets import ClassLabel, Dataset, Features, Image, Value
        from PIL import Image as PILImage

        d = tmp_path / "badlabels"
        (d / "data").mkdir(parents=True)
        img = PILImage.new("RGB", (32, 32))
        Dataset.from_dict({"image": [img, img], "label": [0, 7], "cls": [0, 1]},
                          features=Features({"image": Image(), "label": Value("int64"),
                                             "cls": ClassLabel(names=["a", "b"])})
                          ).to_parquet(str(d / "data" / "test-00000-of-00001.parquet"))
        argv = ["inspect", tiny.ft_a, "--base", tiny.base, "--data", d, *common]
        # the ClassLabel column names 2 classes, but we ask for the integer column as labels
        argv = ["evaluate", tiny.ft_a, "--base", tiny.base, "--data", d, "--no-progress"]
        monkeypatch.setattr("hfdistac.data.images.detect_columns", lambda f, i=None, lab=None: ("image", "label"))
        monkeypatch.setattr("hfdistac.data.images.class_names", lambda f, lab: ["a", "b"])
    else:
        argv = ["inspect", tiny.ft_a, "--base", tiny.base, "--norm-threshold", "0.5", *common]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[0].startswith("error: ") and "Traceback" not in err
    assert len(lines) <= 2
    assert not out_dir.exists()


def test_unknown_option_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as e:
        main(["inspect", "x", "--no-such-option"])
    assert e.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("command", [None, "inspect", "evaluate"])
def test_help_has_examples(command, capsys):
    parser = build_parser()
    with pytest.raises(SystemExit) as e:
        parser.parse_args([command, "--help"] if command else ["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "usage: hfdistac" in text
    if command:
        assert "examples:" in text


def test_every_registered_command_has_help_with_examples(capsys):
    from hfdistac.cli.main import _commands

    for cmd in _commands():
        with pytest.raises(SystemExit):
            build_parser().parse_args([cmd.name, "--help"])
        text = capsys.readouterr().out
        assert "examples:" in text, cmd.name
        # a shell continuation ends its line: a backslash inside a line means two example lines were joined
        joined = [ln for ln in text.split("examples:")[1].splitlines() if "\\" in ln.rstrip()[:-1]]
        assert not joined, (cmd.name, joined)


@pytest.mark.parametrize("command, field", [("merge", "recipe"), ("evaluate", "model"), ("condition", "model"),
                                            ("card", "model"), ("inspect", "models"), ("push", "directory")])
def test_config_file_may_give_the_positional(command, field, tmp_path):
    """``--config FILE.yaml`` gives any option, the positional included; an argument still overrides it, and a
    required positional given neither way is one clear error."""
    import yaml

    from hfdistac.cli.args import config_from_args
    from hfdistac.errors import InputError

    for name in ("from-config", "from-argument"):  # push checks that its folder is an output folder
        (tmp_path / name).mkdir()
        (tmp_path / name / "README.md").write_text("# x\n")
    value, given = str(tmp_path / "from-config"), str(tmp_path / "from-argument")
    parser = build_parser()
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({field: [value] if field == "models" else value,
                                        **({"repo": "org/x"} if command == "push" else {})}))
    ns = parser.parse_args([command, "--config", str(cfg_file)])
    got = getattr(config_from_args(ns._command.config_cls, ns, ns.config), field)
    assert got == ([value] if field == "models" else value)
    ns = parser.parse_args([command, given, "--config", str(cfg_file)])
    got = getattr(config_from_args(ns._command.config_cls, ns, ns.config), field)
    assert got == ([given] if field == "models" else given)
    if command != "condition":  # condition may take its model from --recipe/--task instead
        ns = parser.parse_args([command])
        with pytest.raises(InputError, match="is required") as e:
            config_from_args(ns._command.config_cls, ns, None)
        assert f"'{field}:'" in e.value.hint


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "hfdistac.cli.main", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("hfdistac ")


def test_norms_alone_need_no_image_processor_but_data_does(tiny, tmp_path, capsys):
    """`inspect` of norms only reads weights: a base without preprocessor_config.json is fine; a command that
    reads images says exactly what is missing."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny.base, base)
    (base / "preprocessor_config.json").unlink()
    code, out, err = run_cli(capsys, "inspect", tiny.ft_a, tiny.ft_b, tiny.ft_long, "--base", base, "--data", "none",
                             "none", "none", "--no-progress")  # the cards name a dataset: norms only here
    assert code == 0, err
    assert "norm_mismatch" in out
    code, _, err = run_cli(capsys, "evaluate", tiny.ft_a, "--base", base, "--data", tiny.data, "--no-progress")
    assert code == 2 and "no image processor config" in err and "preprocessor_config.json" in err
