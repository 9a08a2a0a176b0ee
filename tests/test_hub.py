"""hfdistac.hub over real HTTP against the loopback Hub (tests/hub_server.py), plus its offline behaviour."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import traceback
from pathlib import Path

import pytest

from hfdistac import hub
from hfdistac.errors import CheckpointError, HubError, InputError, ReferenceNotFoundError
from tests._fixtures_hub import DUMMY_TOKEN
from tests._fixtures_models import make_base, make_finetuned, make_image_dataset

ALLOWED = {"config.json", "model.safetensors", "README.md", "tokenizer.json", "tokenizer_config.json",
           "preprocessor_config.json"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny base, a fine-tuned model whose card points at ``../base`` and a small parquet dataset."""
    root = tmp_path_factory.mktemp("hubmodels")
    ns = type("Models", (), {})()
    ns.base = make_base(root / "base")
    ns.ft = make_finetuned(ns.base, root / "ft", scale=0.01, seed=1,
                           card={"base_model": "../base", "datasets": ["../data", "org/other-data"],
                                 "license": "mit"})
    ns.data = make_image_dataset(root / "data", n_train=12, n_test=6)
    return ns


def _repo_with_extras(src: Path, dst: Path) -> Path:
    """``src`` plus files resolve_model must NOT download (pickles, other frameworks, unrelated docs)."""
    shutil.copytree(src, dst)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(src.parent / "base" / name, dst)
    (dst / "pytorch_model.bin").write_bytes(b"\x80\x04pickle-bytes")
    (dst / "flax_model.msgpack").write_bytes(b"msgpack")
    (dst / "notes.md").write_text("not needed\n")
    return dst


def _token_free(*texts: str) -> None:
    for text in texts:
        assert DUMMY_TOKEN not in text


# --------------------------------------------------------------------------------------------- references
def test_parse_reference():
    assert hub.parse_reference("org/model") == ("org/model", None)
    assert hub.parse_reference("org/model@v1.0") == ("org/model", "v1.0")
    assert hub.parse_reference("gpt2@refs/pr/3") == ("gpt2", "refs/pr/3")
    for bad in ["", "org/model@", "a/b/c", "org//x"]:
        with pytest.raises(InputError):
            hub.parse_reference(bad)
    with pytest.raises(InputError, match="local path"):
        hub.parse_reference("./models/ft")


def test_missing_local_path_is_not_a_repo_id(tmp_path):
    for ref in [str(tmp_path / "nope"), "./nope-dir", "~/definitely-not-here-hfdistac"]:
        with pytest.raises(ReferenceNotFoundError, match="no such directory"):
            hub.resolve_model(ref)


def test_local_content_hash(models, tmp_path):
    ft = Path(shutil.copytree(models.ft, tmp_path / "ft"))
    first = hub.resolve_model(str(ft))
    assert first.is_local and first.repo_id is None and first.local_dir == ft.resolve()
    assert first.revision.startswith("sha256:") and len(first.revision) == len("sha256:") + 16
    assert hub.resolve_model(str(ft)).revision == first.revision  # stable
    (ft / "README.md").write_text("---\nlicense: mit\n---\nchanged card\n")
    assert hub.resolve_model(str(ft)).revision == first.revision  # only the weights count
    weights = ft / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert hub.resolve_model(str(ft)).revision != first.revision
    assert hub.require_safetensors(first) == [weights]

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(models.ft / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    resolved = hub.resolve_model(str(pickled))
    assert resolved.pickle_only and resolved.revision.startswith("sha256:")
    with pytest.raises(CheckpointError, match="pickle") as err:
        hub.require_safetensors(resolved)
    assert "save_pretrained" in err.value.hint


def test_card_metadata_local_relative_paths(models, tmp_path):
    resolved = hub.resolve_model(str(models.ft))
    meta = hub.read_card_metadata(resolved)
    assert meta["license"] == "mit"
    assert hub.card_base_model(meta) == str(models.base.resolve())
    assert hub.card_datasets(meta) == [str(models.data.resolve()), "org/other-data"]
    assert hub.read_card_metadata(hub.resolve_model(str(models.base))) == {}  # no README
    assert hub.card_base_model({"base_model": ["a/b", "c/d"]}) == "a/b"
    assert hub.card_base_model({}) is None
    assert hub.card_datasets({"datasets": "x/y"}) == ["x/y"]
    assert hub.card_datasets({}) == []


# --------------------------------------------------------------------------------------------- resolving
def test_resolve_hub_id_pins_sha_and_downloads_only_needed_files(hub_env, models, tmp_path):
    server = hub_env.server
    sha = server.seed_repo("org/resolve-me", _repo_with_extras(models.ft, tmp_path / "repo"))
    server.clear()

    resolved = hub.resolve_model("org/resolve-me")
    assert (resolved.repo_id, resolved.revision, resolved.is_local) == ("org/resolve-me", sha, False)
    assert not resolved.pickle_only
    assert {p.name for p in resolved.local_dir.iterdir()} == ALLOWED
    assert resolved.local_dir.is_relative_to(hub_env.cache)  # HF_HOME honoured
    assert resolved.pinned_reference == f"org/resolve-me@{sha}"
    # the revision is resolved once; every download names the commit, never the branch
    assert len(server.requests_to(r"^/api/models/org/resolve-me$", "GET")) == 1
    downloads = server.requests_to(r"/resolve/", "GET")
    assert {r.path.rsplit("/", 1)[-1] for r in downloads} == ALLOWED
    assert all(f"/resolve/{sha}/" in r.path for r in server.requests_to(r"/resolve/"))
    # card metadata of a Hub model: ids stay ids
    meta = hub.read_card_metadata(resolved)
    # a Hub card's local paths are never resolved (against the reader's working directory or anything else):
    # set aside and named in the error that asks for --base / --data
    assert hub.card_base_model(meta) is None and hub.card_datasets(meta) == ["org/other-data"]
    assert meta[hub.LOCAL_PATHS_KEY] == {"base_model": "../base", "datasets": "../data"}
    with pytest.raises(InputError, match=r"base_model: '\.\./base'.*never resolved") as err:
        hub.infer_base(meta, "org/resolve-me")
    assert "--base" in err.value.hint


def test_revision_pinning_branches_and_missing_revision(hub_env, models, tmp_path):
    server = hub_env.server
    repo = Path(shutil.copytree(models.ft, tmp_path / "repo"))
    sha1 = server.seed_repo("org/pinned", repo)
    (repo / "README.md").write_text("---\nlicense: apache-2.0\n---\nv2\n")
    sha2 = server.seed_repo("org/pinned", repo, message="v2")
    server.repo("org/pinned").refs["dev"] = sha1

    assert hub.resolve_model("org/pinned").revision == sha2
    old = hub.resolve_model(f"org/pinned@{sha1}")
    assert old.revision == sha1 and hub.read_card_metadata(old)["license"] == "mit"
    assert hub.resolve_model("org/pinned@dev").revision == sha1
    assert hub.read_card_metadata(hub.resolve_model("org/pinned@main"))["license"] == "apache-2.0"
    with pytest.raises(ReferenceNotFoundError, match="revision not found") as err:
        hub.resolve_model("org/pinned@no-such-branch")
    assert "org/pinned@no-such-branch" in str(err.value)


def test_missing_repo_is_reference_not_found(hub_env):
    with pytest.raises(ReferenceNotFoundError, match="org/does-not-exist") as err:
        hub.resolve_model("org/does-not-exist")
    assert "no such local directory" in str(err.value)
    with pytest.raises(ReferenceNotFoundError):
        hub.resolve_dataset_revision("org/no-dataset")


def test_pickle_only_hub_repo_is_detected_without_downloading_pickles(hub_env, models, tmp_path):
    repo = tmp_path / "pickled"
    repo.mkdir()
    shutil.copy(models.ft / "config.json", repo)
    (repo / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    hub_env.server.seed_repo("org/pickled", repo)
    resolved = hub.resolve_model("org/pickled")
    assert resolved.pickle_only
    assert {p.name for p in resolved.local_dir.iterdir()} == {"config.json"}
    assert not hub_env.server.requests_to(r"pytorch_model\.bin")
    with pytest.raises(CheckpointError, match="pickle"):
        hub.require_safetensors(resolved)


def test_offline_uses_cache_and_fails_fast_otherwise(hub_env, models, tmp_path):
    server = hub_env.server
    sha = server.seed_repo("org/cached", models.ft)
    online = hub.resolve_model("org/cached")
    hub_env.set_offline()
    server.clear()

    offline = hub.resolve_model("org/cached")
    assert (offline.revision, offline.local_dir) == (sha, online.local_dir)
    assert hub.resolve_model(f"org/cached@{sha}").revision == sha
    start = time.monotonic()
    with pytest.raises(HubError) as err:
        hub.resolve_model("org/never-downloaded")
    assert time.monotonic() - start < 2
    assert "offline" in str(err.value) and "HF_HUB_OFFLINE" in err.value.hint
    assert "local directory" in err.value.hint
    assert len(str(err.value).splitlines()) == 1
    assert server.requests == []  # offline means no traffic at all
    with pytest.raises(HubError, match="offline"):
        hub.push_folder(models.ft, "org/offline-push", retry_delay=0.01)


# --------------------------------------------------------------------------------------------- pushing
def test_push_folder_one_commit_with_lfs_and_pull_back(hub_env, models, tmp_path):
    server = hub_env.server
    out = Path(shutil.copytree(models.ft, tmp_path / "out"))
    big = os.urandom(11 * 1024 * 1024)  # > 10 MB: the LFS path
    (out / "task_vector.safetensors").write_bytes(big)
    (out / "plots").mkdir()
    (out / "plots" / "norms.png").write_bytes(b"\x89PNG fake")
    (out / "report.json").write_text('{"ok": true}')

    result = hub.push_folder(out, "org/pushed", commit_message="Add conditioned task vector")
    repo = server.repo("org/pushed")
    assert result["repo_id"] == "org/pushed" and result["pr_url"] is None
    assert result["commit_sha"] == repo.refs["main"]
    assert result["commit_url"].endswith(f"/org/pushed/commit/{result['commit_sha']}")
    assert len(server.requests_to(r"/api/models/org/pushed/commit/", "POST")) == 1  # ONE commit
    assert server.requests_to(r"/info/lfs/objects/batch", "POST")
    assert sum(r.body_size for r in server.requests_to(r"^/lfs-upload/", "PUT")) >= len(big)
    local = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    stored = server.repo_files("org/pushed")
    assert {k: v for k, v in stored.items() if k != ".gitattributes"} == local
    assert repo.commits[result["commit_sha"]].title == "Add conditioned task vector"

    # pull it back with the plain HF clients
    from huggingface_hub import snapshot_download
    from transformers import CLIPVisionModel

    snap = Path(snapshot_download("org/pushed"))
    assert (snap / "task_vector.safetensors").read_bytes() == big
    assert (snap / "plots" / "norms.png").read_bytes() == b"\x89PNG fake"
    model = CLIPVisionModel.from_pretrained("org/pushed")
    assert sum(p.numel() for p in model.parameters()) > 0
    assert hub.resolve_model("org/pushed").revision == result["commit_sha"]

    # a second push to a new branch: main does not move
    (out / "report.json").write_text('{"ok": "v2"}')
    branch = hub.push_folder(out, "org/pushed", revision="v2")
    assert repo.refs["v2"] == branch["commit_sha"] != repo.refs["main"] == result["commit_sha"]
    assert server.repo_files("org/pushed", "v2")["report.json"] == b'{"ok": "v2"}'
    assert hub.resolve_model("org/pushed@v2").revision == branch["commit_sha"]
    _token_free(*(v.decode("latin-1") for v in server.repo_files("org/pushed", "v2").values()))


def test_create_pr_and_card_pr(hub_env, models):
    server = hub_env.server
    main_sha = server.seed_repo("org/pr-target", models.ft)
    result = hub.push_folder(models.ft, "org/pr-target", create_pr=True)
    assert result["pr_url"].endswith("/org/pr-target/discussions/1")
    repo = server.repo("org/pr-target")
    assert repo.refs["main"] == main_sha and repo.refs["refs/pr/1"] == result["commit_sha"]

    card = "---\nlicense: mit\ntags:\n- hfdistac\n---\n\n# merge readiness\n"
    pr = hub.open_card_pr("org/pr-target", card, commit_message="Add merge-readiness card")
    assert pr["pr_url"].endswith("/discussions/2")
    assert server.requests_to(r"^/api/validate-yaml$", "POST")
    before, after = server.repo_files("org/pr-target"), server.repo_files("org/pr-target", "refs/pr/2")
    assert {k for k in after if after[k] != before.get(k)} == {"README.md"}
    assert after["README.md"] == card.encode()
    with pytest.raises(ReferenceNotFoundError, match="org/no-such-model"):
        hub.open_card_pr("org/no-such-model", card)


def test_transient_errors_are_retried(hub_env, models):
    server = hub_env.server
    server.fail(r"/api/models/org/retried/commit/", status=500, times=2)
    server.fail(r"^/api/repos/create$", reset=True, times=1)
    result = hub.push_folder(models.ft, "org/retried", retry_delay=0.01)
    assert [r.status for r in server.requests_to(r"^/api/repos/create$")] == [-1, 200]  # reset, then retried
    assert len(server.requests_to(r"/api/models/org/retried/commit/", "POST")) == 3
    assert server.requests_to(r"/commit/", "POST")[-1].status == 200
    assert result["commit_sha"] == server.repo("org/retried").refs["main"]

    server.fail(r"/api/models/org/retried/commit/", status=503, times=10)
    with pytest.raises(HubError, match="HTTP 503"):
        hub.push_folder(models.ft, "org/retried", retries=2, retry_delay=0.01)


def test_auth_errors_are_one_line_with_hint_and_never_show_the_token(hub_env, models, caplog, capfd):
    from huggingface_hub.utils import logging as hf_logging

    server = hub_env.server
    old_level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_debug()
    caplog.set_level(logging.DEBUG)
    errors = []
    try:
        server.fail(r"^/api/repos/create$", status=401)
        with pytest.raises(HubError) as err:
            hub.push_folder(models.ft, "org/auth", retry_delay=0.01)
        errors.append(err.value)
        assert "401" in str(err.value) and "hf auth login" in err.value.hint and "HF_TOKEN" in err.value.hint

        server.fail(r"/commit/", status=403, times=1)
        with pytest.raises(HubError) as err:
            hub.push_folder(models.ft, "org/auth", retry_delay=0.01)
        errors.append(err.value)
        assert "403" in str(err.value) and "hf auth login" in err.value.hint

        wrong = "hf_wrongTOKENxyz987"
        with pytest.raises(HubError) as err:
            hub.push_folder(models.ft, "org/auth", token=wrong, retry_delay=0.01)
        errors.append(err.value)
        assert wrong not in str(err.value)

        server.fail(r"^/api/models/org/auth$", status=401)
        with pytest.raises(HubError, match="401"):
            hub.resolve_model("org/auth")

        server.fail(r"/commit/", status=500, times=1)
        hub.push_folder(models.ft, "org/auth", retry_delay=0.01)  # retried (and logged) once
    finally:
        hf_logging.set_verbosity(old_level)

    for e in errors:
        assert len(str(e).splitlines()) == 1
    # the server really got the token (so the checks below mean something) ...
    assert any(r.headers.get("authorization") == f"Bearer {DUMMY_TOKEN}" for r in server.requests)
    # ... and it appears nowhere: messages, tracebacks, logs of every library, stderr, files stored on the Hub
    _token_free(*(str(e) for e in errors), *("".join(traceback.format_exception(e)) for e in errors))
    _token_free(caplog.text, *(r.getMessage() for r in caplog.records), capfd.readouterr().err)
    assert "retrying" in caplog.text
    _token_free(*(v.decode("latin-1") for v in server.repo_files("org/auth").values()))

    # even a server that echoes the token in its error message does not get it into our errors or logs
    caplog.clear()
    echo = f"boom for {DUMMY_TOKEN}"
    server.fail(r"/commit/", status=500, times=3, body=f'{{"error": "{echo}"}}', headers={"X-Error-Message": echo})
    with pytest.raises(HubError, match="HTTP 500") as err:
        hub.push_folder(models.ft, "org/auth", retry_delay=0.01)
    assert "boom for" in str(err.value)
    _token_free(str(err.value), *(r.getMessage() for r in caplog.records if r.name.startswith("hfdistac")))


def test_reads_can_require_auth(hub_env, models):
    hub_env.server.seed_repo("org/private-ish", models.ft)
    hub_env.server.require_auth_for_reads = True
    assert hub.resolve_model("org/private-ish").repo_id == "org/private-ish"  # HF_TOKEN is sent
    with pytest.raises(HubError, match="401") as err:
        hub.resolve_model("org/private-ish@main", token=False)
    assert "hf auth login" in err.value.hint


# --------------------------------------------------------------------------------------------- datasets
def test_dataset_streaming_and_revision(hub_env, models):
    import datasets

    sha = hub_env.server.seed_repo("org/colours", models.data, repo_type="dataset")
    assert hub.resolve_dataset_revision("org/colours") == sha
    assert hub.resolve_dataset_revision("org/colours", sha) == sha

    ds = datasets.load_dataset("org/colours", split="train", streaming=True)
    rows = list(ds.take(5))
    assert len(rows) == 5 and rows[0]["image"].size == (40, 40)
    assert ds.features["label"].names == ["red", "green", "blue"]
    assert hub_env.server.requests_to(r"^/datasets/org/colours/resolve/.*\.parquet$", "GET")
    assert all(r.status in (200, 206) for r in hub_env.server.requests_to(r"\.parquet$", "GET"))

    hub_env.set_offline()
    assert hub.resolve_dataset_revision("org/colours") == sha  # from the cache's refs


def _rows(ds) -> list[tuple[int, str]]:
    return [(int(r["label"]), hashlib.sha256(r["image"].convert("RGB").tobytes()).hexdigest()) for r in ds]


def test_validation_rows_are_the_same_local_streamed_and_downloaded(hub_env, tmp_path):
    from hfdistac.data import DatasetSpec, load_split, validation_rows

    data = make_image_dataset(tmp_path / "data", n_train=60, n_test=4)
    hub_env.server.seed_repo("org/colours-val", data, repo_type="dataset")
    local, hub_ref = DatasetSpec(str(data)), DatasetSpec("org/colours-val")
    train = _rows(load_split(local, "train"))
    want = [train[i] for i in validation_rows(len(train))]
    assert 0 < len(want) < len(train)
    for split, expected in (("validation", want), ("train-val", [r for r in train if r not in want])):
        assert _rows(load_split(local, split)) == expected
        assert _rows(load_split(hub_ref, split)) == expected  # streamed (the default for a Hub id)
        assert _rows(load_split(hub_ref, split, streaming=False)) == expected  # downloaded
        assert _rows(load_split(local, split, streaming=True)) == expected


def test_a_dataset_revision_is_resolved_once_and_used_for_every_read(hub_env, models, tmp_path):
    from hfdistac.data import DatasetSpec, dataset_revision, load_split

    sha = hub_env.server.seed_repo("org/colours-pin", models.data, repo_type="dataset")
    spec = DatasetSpec("org/colours-pin")
    before = _rows(load_split(spec, "test"))
    assert dataset_revision(spec) == sha
    other = make_image_dataset(tmp_path / "other", n_train=12, n_test=6, seed=7)
    hub_env.server.seed_repo("org/colours-pin", other, repo_type="dataset")  # main moves on
    assert _rows(load_split(DatasetSpec(str(other)), "test")) != before
    assert dataset_revision(spec) == sha
    assert _rows(load_split(spec, "test")) == before  # still read at the first SHA
    assert hub_env.server.requests_to(rf"^/datasets/org/colours-pin/resolve/{sha}/.*\.parquet$", "GET")


def test_a_local_model_is_hashed_once_per_process_until_it_changes(models, tmp_path, monkeypatch):
    d = tmp_path / "m"
    shutil.copytree(models.ft, d)
    calls = []
    from hfdistac.hub import resolve

    real = resolve._hash_files
    monkeypatch.setattr(resolve, "_hash_files", lambda files, root: calls.append(root) or real(files, root))
    first = hub.resolve_model(str(d)).revision
    for _ in range(5):
        assert hub.resolve_model(str(d)).revision == first
    assert len(calls) == 1
    time.sleep(0.01)
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes())  # same bytes, new mtime
    assert hub.resolve_model(str(d)).revision == first and len(calls) == 2


def test_private_push_creates_a_private_repo(hub_env, models):
    # huggingface_hub 1.x+ sends {"visibility": "private"}; the loopback Hub must honour it as the real one does
    # (it read only "private" before, so --private made a public repo there and no test noticed).
    hub.push_folder(models.ft, "org/private-push", private=True)
    hub.push_folder(models.ft, "org/public-push")
    assert hub_env.server.repo("org/private-push").private
    assert not hub_env.server.repo("org/public-push").private
    assert len(hub_env.server.requests_to(r"^/api/repos/create$", "POST")) == 2  # both through the API


def test_uploads_go_through_plain_lfs_here_and_a_hub_without_xet_gets_a_clear_error(hub_env, models, monkeypatch):
    """Which transfer an upload uses is huggingface_hub's choice inside ``create_commit`` (hfdistac makes one
    commit and never talks LFS or Xet itself): Xet whenever ``hf_xet`` is installed and not disabled, as on the
    real Hub. The loopback Hub serves plain LFS only (Xet's CAS protocol is not reimplemented here), so the
    fixtures set HF_HUB_DISABLE_XET=1, and these tests exercise the LFS path. With Xet left on against a server
    that lacks it, the push fails once, without retries, saying what to set."""
    from huggingface_hub import constants

    hub.push_folder(models.ft, "org/lfs-push")
    assert hub_env.server.requests_to(r"/info/lfs/objects/batch$", "POST")  # the weights went through LFS
    assert not hub_env.server.requests_to(r"xet", None)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "0")
    with pytest.raises(HubError, match="does not accept Xet uploads") as err:
        hub.push_folder(models.ft, "org/xet-push", retry_delay=0.01)
    assert "HF_HUB_DISABLE_XET=1" in err.value.hint
    assert len(hub_env.server.requests_to(r"/xet-write-token/", None)) == 1  # not retried


def test_loopback_hub_reads_visibility_and_private():
    from tests.hub_server import _is_private

    assert _is_private({"visibility": "private"}, False) and not _is_private({"visibility": "public"}, True)
    assert _is_private({"private": True}, False) and not _is_private({}, False)


def test_a_streamed_evaluation_works_offline_afterwards(hub_env, models, tmp_path, capsys, caplog):
    """`evaluate` of a Hub dataset keeps the rows it streamed (the first --limit, at the pinned commit): the same
    command then runs with HF_HUB_OFFLINE=1 and gives the same numbers; a split never read says what is missing.
    The base's 'cannot reach the Hub' message is said once, not once per read."""
    from hfdistac.cli.main import main
    from hfdistac.data import revisions as data_module

    server = hub_env.server
    server.seed_repo("org/eval-base", models.base)
    repo = tmp_path / "ft"
    shutil.copytree(models.ft, repo)
    (repo / "README.md").write_text("---\nbase_model: org/eval-base\ndatasets:\n- org/eval-data\n---\n# ft\n")
    server.seed_repo("org/eval-ft", repo)
    server.seed_repo("org/eval-data", models.data, repo_type="dataset")
    argv = ["evaluate", "org/eval-ft", "--limit", "4", "--json", str(tmp_path / "online.json"), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    online = json.loads((tmp_path / "online.json").read_text())
    hub_env.set_offline(True)
    data_module._REVISIONS.clear()  # as a new process would start
    server.clear()
    argv[argv.index(str(tmp_path / "online.json"))] = str(tmp_path / "offline.json")
    with caplog.at_level(logging.WARNING):
        code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, err
    offline = json.loads((tmp_path / "offline.json").read_text())
    assert {k: offline[k] for k in ("accuracy", "entropy", "n")} == {k: online[k] for k in ("accuracy", "entropy", "n")}
    assert not server.requests_to(r".")  # nothing asked of the Hub
    assert sum("eval-base" in line for line in (err + caplog.text).splitlines()) <= 1
    code = main(["evaluate", "org/eval-ft", "--split", "train", "--limit", "4", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "HF_HUB_OFFLINE" in err and "online" in err, err


def test_a_download_whose_bytes_do_not_match_the_hubs_sha256_is_refused(hub_env, models, tmp_path):
    """The Hub names every LFS file's sha256; weights whose bytes differ (corrupted on the way, a tampered mirror or
    cache) are refused before use, with the file and the fix, and never used."""
    from hfdistac.errors import HubError

    server = hub_env.server
    server.seed_repo("org/tampered", _repo_with_extras(models.ft, tmp_path / "repo"))
    real = (models.ft / "model.safetensors").read_bytes()
    bad = bytearray(real)
    bad[-1] ^= 0xFF  # the same size, one byte changed: a size check cannot see it
    server.tamper("org/tampered", "model.safetensors", bytes(bad))
    with pytest.raises(HubError, match=r"model\.safetensors.*sha256") as err:
        hub.resolve_model("org/tampered")
    assert "delete" in err.value.hint.lower()
    blob = next(p for p in (hub_env.cache).rglob("blobs/*") if p.read_bytes() == bytes(bad))
    assert str(blob) in err.value.hint  # the cached copy to delete, named
    # fixed on the server and the bad copy deleted as the hint says: the next resolution downloads and passes
    server.clear()
    blob.unlink()
    resolved = hub.resolve_model("org/tampered")
    assert (resolved.local_dir / "model.safetensors").read_bytes() == real


def test_a_cached_lfs_file_changed_after_download_is_refused(hub_env, models, tmp_path):
    from hfdistac.errors import HubError

    server = hub_env.server
    server.seed_repo("org/cache-rot", _repo_with_extras(models.ft, tmp_path / "repo"))
    resolved = hub.resolve_model("org/cache-rot")
    weights = (resolved.local_dir / "model.safetensors").resolve()
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01
    weights.write_bytes(bytes(data))  # a new size/time: the check runs again
    with pytest.raises(HubError, match="sha256"):
        hub.resolve_model("org/cache-rot")


def test_a_corrupt_stored_stream_sample_is_read_again_with_a_warning(hub_env, models, caplog):
    """The rows a Hub dataset's stream gives are stored once in hfdistac's cache; a stored file that cannot be read
    (cut short by a full disk, changed) is removed and the stream read again, with a warning."""
    from hfdistac.configs import EvaluateConfig
    from hfdistac.evaluation import run_evaluate

    hub_env.server.seed_repo("org/stream-cache", models.data, repo_type="dataset")
    config = EvaluateConfig(model=str(models.ft), base=str(models.base), data="org/stream-cache", split="test",
                            limit=4, progress=False)
    first = run_evaluate(config)
    stored = list((hub_env.home / "hfdistac" / "streams").rglob("data.arrow"))
    assert len(stored) == 1
    stored[0].write_bytes(stored[0].read_bytes()[:100])
    caplog.clear()
    again = run_evaluate(config)
    assert any("cannot be read" in r.getMessage() and "reading the stream again" in r.getMessage()
               for r in caplog.records)
    assert again["accuracy"] == first["accuracy"] and again["n"] == first["n"] == 4


@pytest.mark.parametrize("breaks", [1, 100])
def test_a_stream_whose_connection_drops_is_retried_a_bounded_number_of_times(hub_env, models, caplog, breaks):
    """A dropped connection while a Hub dataset is streamed: each retry is said, a short outage is survived, and a
    lasting one ends in one clear error within seconds (datasets alone waits 20 x 5 s, silently)."""
    import time

    from hfdistac.configs import EvaluateConfig
    from hfdistac.errors import DataError, ReferenceNotFoundError
    from hfdistac.evaluation import run_evaluate

    repo = f"org/dropping-{breaks}"
    hub_env.server.seed_repo(repo, models.data, repo_type="dataset")
    hub_env.server.fail(r"\.parquet$", reset=True, times=breaks, method="GET")
    config = EvaluateConfig(model=str(models.ft), base=str(models.base), data=repo, split="test", limit=4,
                            progress=False)
    import logging

    said_to = logging.getLogger("hfdistac.progress")  # the command line may have stopped it propagating
    said_to.addHandler(caplog.handler)
    caplog.clear()
    start = time.perf_counter()
    if breaks == 1:
        assert run_evaluate(config)["n"] == 4
    else:
        with pytest.raises((DataError, ReferenceNotFoundError), match="broke off|could not be reached") as err:
            run_evaluate(config)  # opening the stream or reading it: the same kind of line, and the fix
        assert "network" in err.value.hint
    assert time.perf_counter() - start < 40  # measured 15 s (with huggingface_hub's own 5 retries per read: 75 s)
    said_to.removeHandler(caplog.handler)
    said = [r.getMessage() for r in caplog.records if r.name == "hfdistac.progress"]
    assert any("connection broke" in m for m in said), [r.getMessage() for r in caplog.records]


def _connection_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "hub-server-connection" and t.is_alive()]


def test_the_loopback_hub_ends_its_connections_on_stop_and_a_client_hanging_up_prints_nothing(capfd):
    """A handler thread that outlives the server prints a traceback when its client later hangs up; on
    Python 3.11 that races with the main thread's ``ast.parse`` and killed a CI run after every test passed."""
    import http.client
    import socket
    import struct

    from tests.hub_server import HubServer

    before = len(_connection_threads())
    server = HubServer(token=DUMMY_TOKEN).start()
    host, port = server.url.removeprefix("http://").split(":")
    rude = socket.create_connection((host, int(port)), timeout=10)
    rude.sendall(b"GET /api/models/org/none HTTP/1.1\r\nHost: x\r\n")  # headers never finished...
    kept_alive = http.client.HTTPConnection(host, int(port), timeout=10)
    kept_alive.request("GET", "/api/models/org/none")
    # answered, so the server accepted both (in order) and both threads wait; this one stays open (HTTP/1.1)
    assert kept_alive.getresponse().read()
    rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    rude.close()  # ...and the connection reset
    deadline = time.monotonic() + 10
    while len(_connection_threads()) > before + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(_connection_threads()) == before + 1  # the reset connection's thread ended
    server.stop()
    assert len(_connection_threads()) == before  # the kept-alive one too
    kept_alive.close()
    assert capfd.readouterr().err == ""
    assert server.unhandled == []
