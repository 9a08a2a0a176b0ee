"""Publishing over real HTTP against the loopback Hub: `hfdistac card`, `hfdistac push`, merge --push-to."""

from __future__ import annotations

import shutil

import pytest
import yaml
from huggingface_hub import ModelCard

from hfdistac.cli.main import main
from hfdistac.readiness import END, START, add_metadata, merge_section
from tests._fixtures_hub import DUMMY_TOKEN


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_merge_section_is_inserted_once_and_replaced_on_rerun():
    text = "# My model\n\nSome words.\n"
    once = merge_section(text, f"{START}\nv1\n{END}")
    twice = merge_section(once, f"{START}\nv2\n{END}")
    assert twice.count(START) == 1 and "v2" in twice and "v1" not in twice and twice.startswith("# My model")


def test_add_metadata_never_overwrites():
    meta = {"license": "mit", "tags": ["vision"], "base_model": "org/base"}
    out = add_metadata(meta, {"license": "apache-2.0", "tags": ["hfdistac", "vision"], "base_model": "x/y",
                              "library_name": "transformers"})
    assert out == {"license": "mit", "tags": ["vision", "hfdistac"], "base_model": "org/base",
                   "library_name": "transformers"}


def test_card_open_pr_keeps_existing_card(hub_env, tiny, tmp_path, capsys):
    server = hub_env.server
    server.seed_repo("org/base-for-card", tiny.base)
    src = tmp_path / "ft"
    shutil.copytree(tiny.ft_long, src)
    (src / "README.md").write_text("---\nlicense: mit\nbase_model: org/base-for-card\ntags:\n- vision\n---\n\n"
                                   "# Long fine-tune\n\nOur own words about it.\n")
    main_sha = server.seed_repo("org/long-ft", src)
    code, out, err = run_cli(capsys, "card", "org/long-ft", "--data", tiny.data, "--reference", tiny.ft_a, tiny.ft_b,
                             "--open-pr", "--no-progress")
    assert code == 0, err
    assert "norm mismatch" in out and "hfdistac condition org/long-ft" in out
    repo = server.repo("org/long-ft")
    assert repo.refs["main"] == main_sha  # a PR, not a commit on main
    pr_files = server.repo_files("org/long-ft", "refs/pr/1")
    card_text = pr_files["README.md"].decode()
    assert "Our own words about it." in card_text and card_text.count(START) == 1
    card = ModelCard(card_text)
    assert card.data.license == "mit" and card.data.base_model == "org/base-for-card"
    assert card.data.tags == ["vision", "hfdistac", "merge-readiness"]
    assert {"hfdistac/per_layer_norms.png", "hfdistac/reliability.png", "hfdistac/merge_readiness.json"} <= set(pr_files)
    changed = {k for k, v in pr_files.items() if server.repo_files("org/long-ft").get(k) != v}
    assert changed == {"README.md", "hfdistac/per_layer_norms.png", "hfdistac/reliability.png",
                       "hfdistac/merge_readiness.json"}
    assert len(server.requests_to(r"/api/models/org/long-ft/commit/", "POST")) == 1
    for content in pr_files.values():
        assert DUMMY_TOKEN.encode() not in content
    assert DUMMY_TOKEN not in out + err


def test_card_without_existing_card_writes_a_whole_one(tiny, tmp_path, capsys):
    src = tmp_path / "bare"
    shutil.copytree(tiny.ft_a, src)
    (src / "README.md").unlink()
    code, out, err = run_cli(capsys, "card", src, "--base", tiny.base, "--data", tiny.data, "--output",
                             tmp_path / "card", "--no-progress")
    assert code == 0, err
    text = (tmp_path / "card" / "README.md").read_text()
    card = ModelCard(text)
    assert "hfdistac" in card.data.tags and START in text
    assert "no reference task vectors" in text


def test_card_and_inspect_readmes_name_local_paths_by_folder_name(tiny, tmp_path, capsys):
    """One rule for every card: `card` and `inspect --output` READMEs (and the card's merge_readiness.json, which
    is uploaded with it) name local models, bases and datasets by their folder name, the suggested `hfdistac
    condition` command included."""
    src = tmp_path / "ft_long"  # without its own card (whose metadata the card would keep as the author wrote it)
    shutil.copytree(tiny.ft_long, src)
    (src / "README.md").unlink()
    code, _, err = run_cli(capsys, "card", src, "--base", tiny.base, "--data", tiny.data, "--reference",
                           tiny.ft_a, tiny.ft_b, "--output", tmp_path / "card", "--no-progress")
    assert code == 0, err
    code, out, err = run_cli(capsys, "inspect", tiny.ft_long, tiny.ft_a, tiny.ft_b, "--base", tiny.base, "--data",
                             tiny.data, tiny.data, tiny.data, "--output", tmp_path / "inspect", "--no-progress")
    assert code == 0, err
    assert str(tiny.root) in out  # the terminal shows the paths as given: the user runs that command here
    texts = {"card README": (tmp_path / "card" / "README.md").read_text(),
             "merge_readiness.json": (tmp_path / "card" / "hfdistac" / "merge_readiness.json").read_text(),
             "inspect README": (tmp_path / "inspect" / "README.md").read_text()}
    for what, text in texts.items():
        assert str(tiny.root) not in text and str(tmp_path) not in text, what
    assert "hfdistac condition ft_long --base base --preset " in texts["card README"]
    assert "hfdistac condition ft_long --base base --preset " in texts["inspect README"]
    assert " --data data" in texts["card README"]
    assert "split of `data`" in texts["card README"]


def test_card_open_pr_on_local_path_is_refused(tiny, capsys):
    code, _, err = run_cli(capsys, "card", tiny.ft_a, "--open-pr")
    assert code == 2 and err.startswith("error: --open-pr needs a Hub model id")


def test_push_merge_output_as_pr_and_merge_pulled_models(hub_env, tiny, tmp_path, capsys):
    """Push fine-tuned models, merge them *by repo id* from the server, push the merge as a PR."""
    server = hub_env.server
    server.seed_repo("org/tiny-base", tiny.base)
    for name in ("ft_a", "ft_b"):
        server.seed_repo(f"org/{name}", getattr(tiny, name))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "hub", "base": "org/tiny-base",
                                      "tasks": [{"name": n, "model": f"org/{n}", "dataset": str(tiny.data)}
                                                for n in ("ft_a", "ft_b")]}))
    code, out, err = run_cli(capsys, "merge", recipe, "--method", "task_arithmetic", "--alpha-grid", "0", "0.5",
                             "--output", tmp_path / "merged", "--no-progress")
    assert code == 0, err
    server.seed_repo("org/merged", tmp_path / "merged")  # an existing repo to propose a PR to
    code, out, err = run_cli(capsys, "push", tmp_path / "merged", "org/merged", "--create-pr",
                             "--commit-message", "TA merge")
    assert code == 0, err
    assert "discussions/1" in out  # the pull request's address is printed
    files = server.repo_files("org/merged", "refs/pr/1")
    assert {"README.md", "model.safetensors", "config.json", "report.json", "results.md", "recipe.yaml",
            "hfdistac_config.json"} <= set(files)
    card = ModelCard(files["README.md"].decode())
    assert card.data.base_model == ["org/ft_a", "org/ft_b"] and card.data.base_model_relation == "merge"
    assert "task_arithmetic" in card.data.tags
    from huggingface_hub.repocard_data import model_index_to_eval_results

    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    # both tasks are scored on one local dataset: one dataset entry (named by its folder), a metric per task
    assert {r.metric_name for r in results} == {"accuracy (ft_a)", "accuracy (ft_b)"}
    assert {(r.dataset_type, r.dataset_name) for r in results} == {("data", "data")}
    for content in files.values():
        assert DUMMY_TOKEN.encode() not in content


def test_push_command_errors(tmp_path, capsys, hub_env):
    code, _, err = run_cli(capsys, "push", tmp_path / "missing", "org/x")
    assert code == 2 and "not a directory" in err
    (tmp_path / "d").mkdir()
    code, _, err = run_cli(capsys, "push", tmp_path / "d", "org/x")
    assert code == 2 and "no README.md" in err
    (tmp_path / "d" / "README.md").write_text("# x\n")
    hub_env.server.fail(r"^/api/repos/create$", status=401, times=5)
    code, _, err = run_cli(capsys, "push", tmp_path / "d", "org/x")
    assert code == 2 and "hf auth login" in err and DUMMY_TOKEN not in err


@pytest.mark.parametrize("command", ["card", "push", "merge"])
def test_help(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "examples:" in capsys.readouterr().out


def test_conditioned_vector_round_trip_through_the_hub(hub_env, tiny, tmp_path, capsys):
    """condition --push-to, pull it back by repo id as a merge task (its task_vector.safetensors), merge with
    other tasks from the same server, push the merge as a PR; the token appears in no stored file."""
    server = hub_env.server
    server.seed_repo("org/rt-base", tiny.base)
    server.seed_repo("org/rt-b", tiny.ft_b)
    code, out, err = run_cli(capsys, "condition", tiny.ft_long, "--base", "org/rt-base", "--data", tiny.data,
                             "--preset", "norm", "--target-norm", "1.8", "--steps", "4", "--batch-size", "16",
                             "--lr", "1e-3", "--eval-limit", "12", "--output", tmp_path / "cond",
                             "--push-to", "org/rt-long-distac", "--no-progress")
    assert code == 0, err
    pushed = server.repo_files("org/rt-long-distac")
    assert {"task_vector.safetensors", "model.safetensors", "report.json", "README.md"} <= set(pushed)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "rt", "base": "org/rt-base", "tasks": [
        {"name": "long", "model": "org/rt-long-distac", "normalizer": str(tiny.ft_long), "dataset": str(tiny.data)},
        {"name": "b", "model": "org/rt-b", "dataset": str(tiny.data)}]}))
    code, out, err = run_cli(capsys, "merge", recipe, "--method", "tsvm", "--alpha-grid", "0.5", "--output",
                             tmp_path / "merged", "--no-progress")
    assert code == 0, err
    import json as _json

    report = _json.loads((tmp_path / "merged" / "report.json").read_text())
    assert [s["conditioned"] for s in report["sources"]] == [True, False]
    server.seed_repo("org/rt-merged", tmp_path / "merged")
    code, out, err = run_cli(capsys, "push", tmp_path / "merged", "org/rt-merged", "--create-pr")
    assert code == 0, err
    files = server.repo_files("org/rt-merged", "refs/pr/1")
    card = ModelCard(files["README.md"].decode())
    assert card.data.base_model == ["org/rt-long-distac", "org/rt-b"] and "tsvm" in card.data.tags
    for repo, rev in (("org/rt-long-distac", "main"), ("org/rt-merged", "refs/pr/1")):
        for content in server.repo_files(repo, rev).values():
            assert DUMMY_TOKEN.encode() not in content


def test_run_merge_library_call_pushes_with_push_to(hub_env, tiny, tmp_path):
    """``run_merge(MergeConfig(push_to=...))`` does all of the command's job, the push included."""
    from hfdistac.merge_eval import MergeConfig, run_merge

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "lib", "base": str(tiny.base),
                                      "tasks": [{"name": n, "model": str(getattr(tiny, n)), "dataset": str(tiny.data)}
                                                for n in ("ft_a", "ft_b")]}))
    report = run_merge(MergeConfig(recipe=str(recipe), method="task_arithmetic", alpha=0.3, weights_only=True,
                                   output=str(tmp_path / "out"), push_to="org/lib-merge", progress=False))
    assert report["pushed"]["repo_id"] == "org/lib-merge" and report["pushed"]["commit_sha"]
    files = hub_env.server.repo_files("org/lib-merge")
    assert {"README.md", "model.safetensors", "config.json", "report.json", "hfdistac_config.json"} <= set(files)


def test_local_condition_pushed_then_merged_against_the_hub_copy_of_its_base(hub_env, tiny, tmp_path, capsys):
    """Conditioned against a local base, pushed, merged against the same base bytes pulled from the Hub: the base
    is identified by its vision weights' content (not a local file hash vs a Hub commit SHA), so it merges; a
    base with other weights is still refused, naming both identities."""
    import json

    from hfdistac.checkpoints import vision_weights_identity

    server = hub_env.server
    server.seed_repo("org/id-base", tiny.base)
    server.seed_repo("org/id-b", tiny.ft_b)
    code, _, err = run_cli(capsys, "condition", tiny.ft_long, "--base", tiny.base, "--data", tiny.data, "--preset",
                           "norm", "--target-norm", "1.8", "--steps", "2", "--batch-size", "16", "--eval-split", "none",
                           "--output", tmp_path / "cond", "--push-to", "org/id-long-distac", "--no-progress")
    assert code == 0, err
    report = json.loads((tmp_path / "cond" / "report.json").read_text())
    assert report["base_revision"].startswith("sha256:")  # a local base: its files' hash ...
    assert report["base_vision_identity"] == vision_weights_identity(tiny.base)  # ... and its content identity
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "id", "base": "org/id-base", "tasks": [
        {"name": "long", "model": "org/id-long-distac", "dataset": str(tiny.data)},
        {"name": "b", "model": "org/id-b", "dataset": str(tiny.data)}]}))
    code, _, err = run_cli(capsys, "merge", recipe, "--method", "task_arithmetic", "--weights-only", "--alpha", "0.3",
                           "--output", tmp_path / "merged", "--no-progress")
    assert code == 0, err
    other = tmp_path / "other-base"  # same architecture, other weights
    shutil.copytree(tiny.base, other)
    from safetensors.torch import load_file, save_file

    w = load_file(str(other / "model.safetensors"))
    first = next(k for k in sorted(w) if "vision_model" in k and w[k].is_floating_point())
    w[first] = w[first] + 1.0
    save_file(w, str(other / "model.safetensors"), metadata={"format": "pt"})
    recipe.write_text(recipe.read_text().replace("base: org/id-base", f"base: {other}"))
    code, _, err = run_cli(capsys, "merge", recipe, "--method", "task_arithmetic", "--weights-only", "--alpha", "0.3",
                           "--output", tmp_path / "merged2", "--no-progress")
    assert code == 2 and report["base_vision_identity"] in err and vision_weights_identity(other) in err, err


def test_vision_identity_ignores_layout_and_sees_content(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    from hfdistac.checkpoints import vision_weights_identity

    w = load_file(str(tiny.ft_a / "model.safetensors"))
    d = tmp_path / "relaid"
    d.mkdir()
    shutil.copy(tiny.ft_a / "config.json", d / "config.json")
    flipped = {(k.removeprefix("vision_model.") if k.startswith("vision_model.") else "vision_model." + k): v
               for k, v in w.items()}  # the other key layout, other file bytes
    save_file(flipped, str(d / "model.safetensors"), metadata={"format": "pt", "note": "other header"})
    assert (d / "model.safetensors").read_bytes() != (tiny.ft_a / "model.safetensors").read_bytes()
    assert vision_weights_identity(d) == vision_weights_identity(tiny.ft_a)
    assert vision_weights_identity(tiny.ft_b) != vision_weights_identity(tiny.ft_a)


def test_push_names_the_destination_repo_in_the_usage_code(hub_env, tiny, tmp_path, capsys):
    """A local output's card names its folder in the usage code; `hfdistac push DIR REPO` uploads it naming REPO
    (the local card is left as it is); a method's folder pushed on its own loses its ``subfolder=``."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "tiny", "base": str(tiny.base),
                                      "tasks": [{"name": n, "model": str(getattr(tiny, n))} for n in ("ft_a", "ft_b")]}))
    out = tmp_path / "colour-merge"
    code, _, err = run_cli(capsys, "merge", recipe, "--method", "task_arithmetic,ties", "--alpha", "0.3",
                           "--weights-only", "--output", out, "--no-progress")
    assert code == 0, err
    local = (out / "ties" / "README.md").read_text()
    assert 'from_pretrained("tiny-' in local or 'from_pretrained("colour-merge' in local
    code, _, err = run_cli(capsys, "push", out, "org/whole-merge")
    assert code == 0, err
    files = hub_env.server.repo_files("org/whole-merge")
    card = files["ties/README.md"].decode()
    assert 'from_pretrained("org/whole-merge", subfolder="ties")' in card
    assert "colour-merge" not in card.split("## How to use")[1].split("## Recipe")[0]
    assert (out / "ties" / "README.md").read_text() == local  # the local folder is unchanged
    code, _, err = run_cli(capsys, "push", out / "ties", "org/ties-alone")
    assert code == 0, err
    card = hub_env.server.repo_files("org/ties-alone")["README.md"].decode()
    assert 'from_pretrained("org/ties-alone")' in card and "subfolder=" not in card


def test_merge_card_has_one_result_group_per_task_dataset(tiny, tmp_path):
    """Tasks on different local datasets: each task's accuracy sits under its own dataset in the model-index (the
    Hub groups results by dataset type, so typing every local dataset by its builder merged them into the first
    task's group)."""
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from hfdistac.merge_eval import MergeConfig, run_merge

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "two", "base": str(tiny.base), "tasks": [
        {"name": "colours", "model": str(tiny.ft_a), "dataset": str(tiny.data)},
        {"name": "letters", "model": str(tiny.ft_b), "dataset": str(tiny.data5)}]}))
    report = run_merge(MergeConfig(recipe=str(recipe), method="task_arithmetic", alpha=0.3, output=str(tmp_path / "o"),
                                   progress=False))
    card = ModelCard((tmp_path / "o" / "README.md").read_text())
    model_index = card.data.to_dict()["model-index"]
    assert len(model_index[0]["results"]) == 2  # two result groups, one per dataset
    _, results = model_index_to_eval_results(model_index)
    rows = {r.metric_name: (r.dataset_type, r.dataset_name, r.metric_value) for r in results}
    accs = {t["name"]: round(t["accuracy"], 4) for t in report["results"][0]["tasks"]}
    assert rows == {"accuracy (colours)": ("data", "data", accs["colours"]),
                    "accuracy (letters)": ("data5", "data5", accs["letters"])}


def test_conditioned_card_names_local_sources_by_folder_and_by_the_hub_id_they_know(tiny, tmp_path):
    """A local source and base: the card's metadata names them by the Hub id their copies know (a Hub-cache path,
    config.json's _name_or_path) and otherwise by folder name, never by path, and never as a reference that
    could be resolved."""
    import json

    from hfdistac.distac import ConditionConfig, run_condition

    base = tmp_path / "hub" / "models--openai--clip-tiny" / "snapshots" / ("a" * 40)
    shutil.copytree(tiny.base, base)
    known = tmp_path / "my-colour"
    shutil.copytree(tiny.ft_a, known)
    (known / "README.md").unlink()
    cfg = json.loads((known / "config.json").read_text())
    (known / "config.json").write_text(json.dumps({**cfg, "_name_or_path": "org/colour-model"}))
    unknown = tmp_path / "plain-colour"
    shutil.copytree(tiny.ft_a, unknown)
    (unknown / "README.md").unlink()
    metas = {}
    for src in (known, unknown):
        run_condition(ConditionConfig(model=str(src), base=str(base), data=str(tiny.data), preset="confidence",
                                      steps=1, batch_size=8, eval_split="none", output=str(tmp_path / f"{src.name}-out"),
                                      progress=False))
        metas[src.name] = ModelCard((tmp_path / f"{src.name}-out" / "README.md").read_text()).data.to_dict()
    m = metas["my-colour"]
    assert m["base_model"] == "org/colour-model" and m["base_model_relation"] == "finetune"
    assert m["hfdistac"]["source"] == "org/colour-model" and m["hfdistac"]["base"] == "openai/clip-tiny"
    m = metas["plain-colour"]
    assert m["base_model"] == "openai/clip-tiny"  # the source knows no id of its own: the base is the parent
    assert m["hfdistac"]["source_name"] == "plain-colour" and "source" not in m["hfdistac"]
    for m in metas.values():
        assert str(tmp_path) not in yaml.safe_dump(m)


def test_a_hub_cards_local_paths_are_never_resolved_against_the_working_directory(hub_env, tiny, tmp_path,
                                                                                   capsys, monkeypatch):
    """The example suite's cards name ``../../base`` and ``../../data/colour``. Uploaded, those paths would resolve
    against wherever the reader runs: here a folder with a base at ../../base exists, and it is not used; the
    error names the card's field and the option to give."""
    repo = tmp_path / "repo"
    shutil.copytree(tiny.ft_a, repo)
    (repo / "README.md").write_text("---\nbase_model: ../../base\ndatasets:\n- ../../data/colour\n"
                                    "hfdistac:\n  base: ../../base\n---\n\n# colour\n")
    hub_env.server.seed_repo("org/suite-colour", repo)
    shutil.copytree(tiny.base, tmp_path / "base")  # what ../../base means from tmp_path/a/b
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    code, _, err = run_cli(capsys, "condition", "org/suite-colour", "--output", tmp_path / "out", "--steps", "1")
    assert code == 2 and "base_model: '../../base'" in err and "never resolved" in err and "--base" in err, err
    code, _, err = run_cli(capsys, "condition", "org/suite-colour", "--base", tiny.base, "--output", tmp_path / "out",
                           "--steps", "1")
    assert code == 2 and "datasets: '../../data/colour'" in err and "--data" in err, err
    assert not (tmp_path / "out").exists()


def test_example_suite_push_round_trip_by_hub_ids(hub_env, example_suite, tmp_path, capsys):
    """`example-suite DIR --push-to NAMESPACE` (library form): base, datasets and models become repos whose cards
    name each other by Hub id; a pushed model is then conditioned by its Hub id alone (base and data from its
    card, the data streamed from the Hub), and the Hub recipes merge."""
    from hfdistac.example_suite.publish import push_suite
    from hfdistac.example_suite.publish import repo_ids as suite_repo_ids

    suite = tmp_path / "suite"
    shutil.copytree(example_suite, suite)
    before = {p.relative_to(suite): p.read_bytes() for p in suite.rglob("*") if p.is_file()}
    pushed = push_suite(suite, "suiteorg", progress=False)
    task = json_load(suite / "suite.json")["task_names"][0]
    ids = suite_repo_ids("suiteorg", json_load(suite / "suite.json")["task_names"])
    assert pushed["repos"] == ids and set(pushed["commits"]) == set(ids.values())
    server = hub_env.server
    card = ModelCard(server.repo_files(ids[f"models/{task}-highlr"])["README.md"].decode())
    assert card.data.base_model == ids["base"] and card.data.datasets == [ids[f"data/{task}"]]
    assert card.data.to_dict()["hfdistac"]["base"] == ids["base"]
    assert "../../" not in str(card)
    assert "data/train-00000-of-00001.parquet" in server.repo_files(ids[f"data/{task}"], repo_type="dataset")
    # the local suite: unchanged but for the Hub recipes, which its manifest now lists
    after = {p.relative_to(suite): p.read_bytes() for p in suite.rglob("*") if p.is_file()}
    added = set(after) - set(before)
    assert {p.parent.as_posix() for p in added} == {"recipes/hub-suiteorg"}
    from hfdistac.example_suite.build import MARKER

    assert all(after[p] == before[p] for p in before if p.name != MARKER)
    assert {f"recipes/hub-suiteorg/{n}" for n in ("original.yaml", "norm-mismatch.yaml")} <= set(
        (suite / MARKER).read_text().splitlines())
    recipe = yaml.safe_load((suite / "recipes" / "hub-suiteorg" / "norm-mismatch.yaml").read_text())
    assert recipe["base"] == ids["base"] and all(t["model"].startswith("suiteorg/") for t in recipe["tasks"])
    # the round trip: a pushed model by its id alone
    code, _, err = run_cli(capsys, "condition", ids[f"models/{task}-highlr"], "--steps", "1", "--batch-size", "8",
                           "--num-images", "16", "--eval-split", "none", "--output", tmp_path / "cond",
                           "--no-progress")
    assert code == 0, err
    report = json_load(tmp_path / "cond" / "report.json")
    assert report["base"] == ids["base"] and report["dataset"] == ids[f"data/{task}"]
    code, _, err = run_cli(capsys, "merge", suite / "recipes" / "hub-suiteorg" / "original.yaml", "--method",
                           "task_arithmetic", "--alpha", "0.3", "--weights-only", "--output", tmp_path / "merged",
                           "--no-progress")
    assert code == 0, err


def json_load(path):
    import json

    return json.loads(path.read_text())
