"""Data loss, by class (issue 30): hfdistac only ever removes a folder it created itself, never one that holds or
lies inside an input of the run, and names from recipes are names, not paths. Each input below is what a careless
or hostile user would give; every test checks that the user's files are still there, byte for byte."""

from __future__ import annotations

import shutil

import pytest
import yaml

from hfdistac.cli.main import main

FAST = ["--steps", "2", "--batch-size", "8", "--eval-split", "none", "--preset", "confidence", "--no-progress"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_condition_never_deletes_a_checkpoint_dir_it_did_not_make(tiny, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    model = tmp_path / "model"
    shutil.copytree(tiny.ft_a, model)
    before = _snapshot(model)
    for target in (mine, model):  # a folder of the user's, and the very model being conditioned
        code, _, err = run_cli(capsys, "condition", model, "--base", tiny.base, "--data", tiny.data, "--output",
                               tmp_path / f"out-{target.name}", "--checkpoint-dir", target, "--checkpoint-every", "1",
                               *FAST)
        assert code == 2 and ("did not write" in err or "an input of the run" in err), err
        assert not (tmp_path / f"out-{target.name}").exists()
    assert (mine / "thesis.tex").read_text() == "years of work" and _snapshot(model) == before
    # with --overwrite too
    code, _, err = run_cli(capsys, "condition", model, "--base", tiny.base, "--data", tiny.data, "--output",
                           tmp_path / "o", "--checkpoint-dir", mine, "--checkpoint-every", "1", "--overwrite", *FAST)
    assert code == 2 and (mine / "thesis.tex").is_file()
    # a checkpoint folder hfdistac makes is removed after success
    code, _, err = run_cli(capsys, "condition", model, "--base", tiny.base, "--data", tiny.data, "--output",
                           tmp_path / "ok", "--checkpoint-dir", tmp_path / "ckpt", "--checkpoint-every", "1", *FAST)
    assert code == 0, err
    assert not (tmp_path / "ckpt").exists() and (tmp_path / "ok" / "report.json").is_file()


def test_an_output_that_holds_or_is_an_input_is_refused_even_with_overwrite(tiny, tmp_path, capsys):
    work = tmp_path / "project"
    for name in ("ft_a", "ft_b", "data"):
        shutil.copytree(getattr(tiny, name), work / name)
    recipe = work / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "p", "base": str(tiny.base), "tasks": [
        {"name": n, "model": f"./{n}", "dataset": "./data"} for n in ("ft_a", "ft_b")]}))
    before = _snapshot(work)
    for output in (work, work / "ft_a", work / "ft_a" / "inside"):
        code, _, err = run_cli(capsys, "merge", recipe, "--method", "task_arithmetic", "--alpha", "0.3",
                               "--weights-only", "--output", output, "--overwrite", "--no-progress")
        assert code == 2 and "an input of the run" in err, err
        code, _, err = run_cli(capsys, "condition", work / "ft_a", "--base", tiny.base, "--data", work / "data",
                               "--output", output, "--overwrite", *FAST)
        assert code == 2 and ("an input of the run" in err or "did not write" in err), err
    assert _snapshot(work) == before


def test_overwrite_replaces_only_an_earlier_hfdistac_output(tiny, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.md").write_text("keep me")
    code, _, err = run_cli(capsys, "condition", tiny.ft_a, "--base", tiny.base, "--data", tiny.data, "--output", mine,
                           "--overwrite", *FAST)
    assert code == 2 and "did not write" in err and (mine / "notes.md").read_text() == "keep me"
    out = tmp_path / "out"
    for _ in range(2):  # an earlier output of hfdistac is replaced, as asked
        code, _, err = run_cli(capsys, "condition", tiny.ft_a, "--base", tiny.base, "--data", tiny.data, "--output",
                               out, "--overwrite", *FAST)
        assert code == 0, err


@pytest.mark.parametrize("name", ["../../escape", "/abs/path", "a/b", ".hidden", "x" * 200, "a|b", "..", "tab\tname"])
def test_names_from_recipes_are_names_not_paths(tiny, tmp_path, capsys, name):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "r", "base": str(tiny.base), "tasks": [
        {"name": name, "model": str(tiny.ft_a)}, {"name": "b", "model": str(tiny.ft_b)}]}))
    code, _, err = run_cli(capsys, "merge", recipe, "--method", "task_arithmetic", "--alpha", "0.3", "--weights-only",
                           "--output", tmp_path / "o", "--no-progress")
    assert code == 2 and "is not a plain name" in err and len(err) < 600, err
    assert not (tmp_path / "o").exists() and not list(tmp_path.parent.glob("*escape*"))


def test_card_bodies_keep_what_users_write_inside_code(tiny, tmp_path):
    """A recipe description holding a code fence and HTML, and a dataset folder whose name holds '|', a backtick
    and a tag: the merge card's recipe block is not closed early, no tag reaches the card outside code, and the
    sources table keeps its columns."""
    import re

    from hfdistac.merge_eval import MergeConfig, run_merge

    hostile = tmp_path / "da|ta`<b>"
    shutil.copytree(tiny.data, hostile)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "format": "hfdistac.recipe.v1", "name": "hostile", "base": str(tiny.base),
        "description": "ends the fence\n```\n<script>alert(1)</script>\n| x | y |\n````",
        "tasks": [{"name": "a", "model": str(tiny.ft_a), "dataset": str(hostile)},
                  {"name": "b", "model": str(tiny.ft_b), "dataset": str(hostile)}]}))
    run_merge(MergeConfig(recipe=str(recipe), method="task_arithmetic", alpha=0.3, output=str(tmp_path / "o"),
                          progress=False))
    card = (tmp_path / "o" / "README.md").read_text()
    body = card.split("---\n", 2)[2]
    fences = re.findall(r"^(`{3,})", body, flags=re.M)
    outside, inside, fence = [], [], None  # walk the body: what is inside a fenced block and what is not
    for line in body.splitlines():
        m = re.match(r"^(`{3,})", line)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None and m and len(m.group(1)) >= len(fence) and line.strip("`") == "":
            fence = None
        else:
            (inside if fence else outside).append(line)
    assert fence is None and len(fences) % 2 == 0
    assert not any("<script>" in ln for ln in outside) and any("<script>" in ln for ln in inside)
    rows = [ln for ln in outside if ln.startswith("| a |") or ln.startswith("| b |")]
    for row in rows:  # unescaped pipes only: the sources table's 5 columns
        assert len(re.findall(r"(?<!\\)\|", re.sub(r"`+[^`]*`+", lambda m: m.group(0).replace("|", ""), row))) >= 6


BOMB = """a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""


@pytest.mark.parametrize("command", ["merge", "condition"])
def test_a_yaml_alias_bomb_is_refused_at_once_in_one_short_line(tmp_path, capsys, command):
    """An alias bomb (a few hundred bytes that expand to 9^7 strings) as a recipe or a --config: refused when read,
    the message one short line; a long value elsewhere is cut, never printed whole."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    argv = ["merge", bomb] if command == "merge" else ["condition", "m", "--config", bomb]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and "aliases" in err and len(err) < 800, err[:300]
    huge = tmp_path / "huge.yaml"
    huge.write_text("format: " + "x" * 5000 + "\nbase: b\ntasks: [{model: m}]\n")
    code, _, err = run_cli(capsys, "merge", huge)
    assert code == 2 and len(err) < 1500 and "more characters" in err, err[:300]


def test_wrong_results_are_refused_not_returned(tiny, tmp_path, capsys):
    """Inputs that used to give a wrong result with exit 0: the same model under two task names, a dataset that
    names two classes alike, and validation rows on which every fine-tuned model scores 0 (normalised accuracy
    undefined: alpha cannot be chosen)."""
    from tests._fixtures_models import make_image_dataset

    twice = tmp_path / "twice.yaml"
    copy = tmp_path / "ft_a_copy"
    shutil.copytree(tiny.ft_a, copy)
    twice.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "t", "base": str(tiny.base), "tasks": [
        {"name": "one", "model": str(tiny.ft_a)}, {"name": "two", "model": str(copy)}]}))
    code, _, err = run_cli(capsys, "merge", twice, "--method", "task_arithmetic", "--alpha", "0.3", "--weights-only",
                           "--output", tmp_path / "o1", "--no-progress")
    assert code == 2 and "'one' and 'two'" in err and "same model" in err, err
    alike = make_image_dataset(tmp_path / "alike", classes=["red_car", "red car", "blue"])  # alike once '_' is ' '
    code, _, err = run_cli(capsys, "evaluate", tiny.ft_a, "--base", tiny.base, "--data", alike, "--no-progress")
    assert code == 2 and "alike" in err and "'red car'" in err, err
    # validation rows labelled with a class no model ever predicts for them: every normaliser scores 0
    zero = make_image_dataset(tmp_path / "zero", n_train=40, n_test=10)
    from datasets import load_dataset

    from hfdistac.checkpoints import read_vision_weights
    from tests._fixtures_models import plain_predictions

    rows = load_dataset("parquet", data_files=str(zero / "data" / "test-00000-of-00001.parquet"), split="train")
    preds_a, _ = plain_predictions(tiny.base, read_vision_weights(tiny.ft_a), zero)
    preds_b, _ = plain_predictions(tiny.base, read_vision_weights(tiny.ft_b), zero)
    wrong = [next(c for c in range(3) if c not in (pa, pb)) for pa, pb in zip(preds_a, preds_b, strict=True)]
    rows.remove_columns("label").add_column("label", wrong, feature=rows.features["label"]).to_parquet(
        str(zero / "data" / "holdout-00000-of-00001.parquet"))
    recipe = tmp_path / "zero.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "z", "base": str(tiny.base), "tasks": [
        {"name": n, "model": str(getattr(tiny, n)), "dataset": str(zero), "val_split": "holdout"}
        for n in ("ft_a", "ft_b")]}))
    code, _, err = run_cli(capsys, "merge", recipe, "--method", "all", "--output", tmp_path / "o2", "--no-progress")
    assert code == 2 and "normalised accuracy" in err and "undefined" in err and "unexpected" not in err, err
    assert not (tmp_path / "o2").exists()


def test_full_clip_never_copies_a_file_from_outside_the_base(tiny, tmp_path, capsys):
    """A base whose tokenizer.json is a link to another file of the machine: --full-clip refuses (the link would
    become a regular file in the output, and `push` would upload it); nothing is written."""
    secret = tmp_path / "secret.txt"
    secret.write_text("a private key")
    base = tmp_path / "base"
    shutil.copytree(tiny.base, base)
    (base / "tokenizer.json").unlink()
    (base / "tokenizer.json").symlink_to(secret)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "f", "base": str(base), "tasks": [
        {"name": n, "model": str(getattr(tiny, n))} for n in ("ft_a", "ft_b")]}))
    code, _, err = run_cli(capsys, "merge", recipe, "--method", "task_arithmetic", "--alpha", "0.3", "--weights-only",
                           "--full-clip", "--output", tmp_path / "o", "--no-progress")
    assert code == 2 and "links outside its model" in err, err
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink() and p.read_bytes() == b"a private key"
                and p != secret]


def test_debug_tracebacks_never_show_the_token(hub_env, capsys, monkeypatch):
    """HFDISTAC_DEBUG=1 prints the whole traceback; a token quoted by a chained exception (an HTTP error deep in
    the chain) is scrubbed from every part of it."""
    import hfdistac.diagnosis
    from hfdistac.errors import HubError
    from tests._fixtures_hub import DUMMY_TOKEN

    def fail(*a, **k):
        try:
            raise ConnectionError(f"request with headers {{'authorization': 'Bearer {DUMMY_TOKEN}'}} failed")
        except ConnectionError as inner:
            raise HubError("the Hub refused the request") from inner

    monkeypatch.setattr(hfdistac.diagnosis, "run_inspect", fail)
    monkeypatch.setenv("HFDISTAC_DEBUG", "1")
    code, _, err = run_cli(capsys, "inspect", "org/model")
    assert code == 2 and "Traceback" in err and "ConnectionError" in err and "the Hub refused" in err
    assert DUMMY_TOKEN not in err and "***" in err


def test_nothing_uploaded_names_a_local_path(hub_env, tiny, tmp_path, capsys):
    """report.json, hfdistac_config.json, recipe.yaml, the card and the safetensors metadata of a merge of local
    models keep their absolute paths locally; what `push` uploads names folders only, and the weights are the
    same bytes."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "paths", "base": str(tiny.base),
                                      "tasks": [{"name": n, "model": str(getattr(tiny, n)), "dataset": str(tiny.data)}
                                                for n in ("ft_a", "ft_b")]}))
    out = tmp_path / "merged"
    code, _, err = run_cli(capsys, "merge", recipe, "--method", "task_arithmetic", "--alpha", "0.3", "--output", out,
                           "--no-progress")
    assert code == 0, err
    assert str(tiny.root) in (out / "report.json").read_text()  # the local output keeps them (useful here)
    code, _, err = run_cli(capsys, "push", out, "org/no-paths")
    assert code == 0, err
    files = hub_env.server.repo_files("org/no-paths")
    for name, data in files.items():
        assert str(tiny.root).encode() not in data and str(tmp_path).encode() not in data, name
    pushed = tmp_path / "pushed.safetensors"
    pushed.write_bytes(files["model.safetensors"])
    with safe_open(str(pushed), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["sources"])[0]["reference"] == "ft_a" and meta["base"] == "base"
    local, remote = load_file(str(out / "model.safetensors")), load_file(str(pushed))
    assert local.keys() == remote.keys() and all(local[k].equal(remote[k]) for k in local)
    assert json.loads(files["report.json"])["base"] == "base"


def test_weights_that_are_devices_or_escape_the_model_are_refused(tiny, tmp_path, capsys):
    """A model.safetensors that links to a device (read forever) or a shard index naming a file outside the
    folder: one clear line, at once; a recipe of 10,000 tasks likewise."""
    import json

    device = tmp_path / "device"
    shutil.copytree(tiny.ft_a, device)
    (device / "model.safetensors").unlink()
    (device / "model.safetensors").symlink_to("/dev/zero")
    escape = tmp_path / "escape"
    shutil.copytree(tiny.ft_a, escape)
    (escape / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "../../secret.safetensors"}}))
    for model in (device, escape):
        code, _, err = run_cli(capsys, "inspect", model, tiny.ft_b, "--base", tiny.base, "--data", "none", "none",
                               "--no-progress")
        assert code == 2 and ("not a plain file name" in err or "links outside" in err), err
    many = tmp_path / "many.yaml"
    many.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "many", "base": str(tiny.base),
                                    "tasks": [{"name": f"t{i}", "model": str(tiny.ft_a)} for i in range(10_000)]}))
    code, _, err = run_cli(capsys, "merge", many, "--alpha", "0.3", "--weights-only", "--output", tmp_path / "o")
    assert code == 2 and "10,000 tasks" in err and not (tmp_path / "o").exists()
