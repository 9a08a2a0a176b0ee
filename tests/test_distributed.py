"""Several processes, one result: how a split's batches and a method's unlabeled images are shared out, how logits
come back, the launch check, and ``hfdistac merge`` under ``accelerate launch`` with two CPU processes against
one process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from hfdistac.cli.main import check_launch
from hfdistac.data import DatasetSpec, load_image_data
from hfdistac.distributed import batch_slices, gather_rows, own_batches
from hfdistac.errors import InputError
from tests.test_distac import _env
from tests.test_merge_cli import write_recipe


def test_own_batches_partition_every_batch_once():
    for n, count in [(1, 2), (7, 2), (8, 3), (10, 4)]:
        parts = [own_batches(n, r, count) for r in range(count)]
        assert sorted(b for p in parts for b in p) == list(range(n))  # each batch once, none left out
        assert all(b % count == r for r, p in enumerate(parts) for b in p)


def test_batch_slices_split_each_batch_contiguously_and_completely():
    sizes = [16, 16, 5, 1]
    for count in (1, 2, 3):
        parts = [batch_slices(sizes, r, count) for r in range(count)]
        for i, size in enumerate(sizes):
            rows = [row for p in parts for row in range(*p[i])]
            assert rows == list(range(size))  # in order, no gap, no overlap
            lengths = [p[i][1] - p[i][0] for p in parts]
            assert max(lengths) - min(lengths) <= 1


def test_gather_rows_in_one_process_orders_by_position():
    x = torch.tensor([[3.0], [1.0], [2.0]])
    y = torch.tensor([30, 10, 20])
    gx, gy = gather_rows([x, y], torch.tensor([2, 0, 1]))
    assert gx.flatten().tolist() == [1.0, 2.0, 3.0] and gy.tolist() == [10, 20, 30]


@pytest.mark.parametrize("limit", [None, 17])
def test_loader_parts_are_the_one_process_batches(tiny, limit):
    data = load_image_data(DatasetSpec(str(tiny.data)), "train", streaming=False)
    from hfdistac.checkpoints import load_base

    processor = load_base(str(tiny.base)).image_processor
    whole = list(data.loader(processor, 5, limit=limit, with_rows=True))
    for count in (2, 3):
        for rank in range(count):
            part = list(data.loader(processor, 5, limit=limit, part=(rank, count), with_rows=True))
            expected = whole[rank::count]
            assert len(part) == len(expected)
            for a, b in zip(part, expected, strict=True):
                assert torch.equal(a["rows"], b["rows"]) and torch.equal(a["labels"], b["labels"])
                assert torch.equal(a["pixel_values"], b["pixel_values"])
    assert torch.cat([b["rows"] for b in whole]).tolist() == list(range(limit or data.num_examples))


def test_loader_parts_of_a_stream_are_the_one_process_batches(tiny):
    stream = load_image_data(DatasetSpec(str(tiny.data)), "train", streaming=True)
    from hfdistac.checkpoints import load_base

    processor = load_base(str(tiny.base)).image_processor
    whole = list(stream.loader(processor, 5, limit=23, with_rows=True))
    part = list(stream.loader(processor, 5, limit=23, part=(1, 2), with_rows=True))
    assert [b["rows"].tolist() for b in part] == [b["rows"].tolist() for b in whole[1::2]]


def test_a_command_leaves_its_process_group_before_the_interpreter_ends(tiny, tmp_path, capsys):
    """The CLI destroys a launch's process group at the end (gloo's threads can abort a process at exit), after a
    success and after an error alike."""
    import torch.distributed as dist

    from hfdistac.cli.main import main

    for i, argv in enumerate([["inspect", str(tiny.ft_a), "--base", str(tiny.base), "--output", str(tmp_path / "ok")],
                              ["inspect", str(tmp_path / "missing"), "--base", str(tiny.base)]]):
        dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / f"store{i}"), 1), rank=0, world_size=1)
        try:
            code = main(argv)
            assert dist.is_initialized() is False, code
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        assert code == (0 if i == 0 else 2), capsys.readouterr().err


def test_a_launch_that_asked_for_several_processes_and_got_one_is_refused():
    one_of_two = {"ACCELERATE_MIXED_PRECISION": "no", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    with pytest.raises(InputError) as e:
        check_launch("merge", one_of_two)
    assert "--multi_gpu" in e.value.hint and "ACCELERATE_USE_CPU=1" in e.value.hint
    check_launch("merge", {**one_of_two, "WORLD_SIZE": "2"})  # really two processes
    check_launch("merge", {"ACCELERATE_MIXED_PRECISION": "no"})  # a plain one-process launch
    check_launch("merge", {})  # no launcher at all
    check_launch("inspect", one_of_two)  # a command that runs in one process anyway


MERGE_ARGS = ["--method", "task_arithmetic,ties,consensus,regmean,regmean_plusplus,samerging", "--calibrate",
              "--alpha-grid", "0.2", "0.5", "0.8", "--batch-size", "5", "--steps", "3", "--batches-per-task", "2",
              "--sam-batch-size", "4", "--regmean-examples", "10", "--no-progress", "--threads", "1"]


@pytest.mark.slow
def test_two_processes_merge_like_one(tiny, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny)
    env = dict(_env(), ACCELERATE_USE_CPU="1")
    one = subprocess.run([sys.executable, "-m", "hfdistac.cli.main", "merge", str(recipe), *MERGE_ARGS, "--output",
                          str(tmp_path / "one")], capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                          "--main_process_port", "0", "-m", "hfdistac.cli.main", "merge", str(recipe), *MERGE_ARGS,
                          "--output", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("wrote ") == 1 and "evaluated on 2 processes" in two.stdout  # the main process prints
    r1, r2 = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("one", "two"))
    assert (r1["processes"], r2["processes"]) == (1, 2)
    assert r1["zero_shot"]["accuracy"] == r2["zero_shot"]["accuracy"]
    assert r1["individual"]["accuracy"] == r2["individual"]["accuracy"]
    for a, b in zip(r1["results"], r2["results"], strict=True):
        method = a["method"]
        assert a["alpha"] == b["alpha"] and a["alpha_curve"] == b["alpha_curve"], method
        assert [t["accuracy"] for t in a["tasks"]] == [t["accuracy"] for t in b["tasks"]], method
        w1, w2 = (load_file(str(tmp_path / d / method / "model.safetensors")) for d in ("one", "two"))
        if method in ("task_arithmetic", "ties", "consensus"):  # data-free: the same weights, bit for bit
            assert all(torch.equal(w1[k], w2[k]) for k in w1), method
            assert [t["ece"] for t in a["tasks"]] == [t["ece"] for t in b["tasks"]], method
            assert a["temperatures"] == b["temperatures"], method
        else:  # Grams and gradients summed over the processes: the same to float rounding
            base = load_file(str(tiny.base / "model.safetensors"))
            tau = torch.cat([(w1[k] - base[k]).flatten() for k in w1])
            diff = torch.cat([(w1[k] - w2[k]).flatten() for k in w1])
            # SAMerging: Adam moves every coefficient by ~lr whatever its gradient's size, so the sign of a
            # near-zero gradient entry, which rounding can flip, shows (measured 9e-4; RegMean 1e-6)
            bound = 1e-2 if method == "samerging" else 1e-4
            assert float(diff.norm() / tau.norm()) < bound, (method, float(diff.norm() / tau.norm()))
            if method == "samerging":
                assert a["loss_history"] == pytest.approx(b["loss_history"], rel=1e-4)
    assert r1["results"][2].get("tall_lambdas") == r2["results"][2].get("tall_lambdas")


@pytest.mark.slow
def test_two_processes_run_like_one(tiny, tmp_path):
    """``hfdistac run`` under accelerate launch: one diagnosis, the flagged tasks spread over the processes, both
    merges evaluated across both; the same table as one process, and a second launch reuses every stage."""
    from tests.test_run import FAST, _recipe

    recipe = _recipe(tmp_path, tiny)
    env = dict(_env(), ACCELERATE_USE_CPU="1")
    one = subprocess.run([sys.executable, "-m", "hfdistac.cli.main", "run", str(recipe), *FAST, "--threads", "1",
                          "--output", str(tmp_path / "one")], capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
              "-m", "hfdistac.cli.main", "run", str(recipe), *FAST, "--output", str(tmp_path / "two")]
    two = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("stages (") == 1  # only the main process prints
    r1, r2 = (json.loads((tmp_path / d / "run.json").read_text()) for d in ("one", "two"))
    assert (r1["processes"], r2["processes"]) == (1, 2)
    assert r1["diagnosis"] == r2["diagnosis"]
    assert list(r1["conditioned"]) == list(r2["conditioned"]) and "ft_long" in r2["conditioned"]
    # three flagged tasks, two processes: each process conditions its own tasks alone (spread), one thread each as
    # in the one-process run, so each result is the one-process result, bit for bit
    assert all(s.get("spread") and not s["reused"] for s in r2["stages"] if s["stage"].startswith("condition"))
    for name, c1 in r1["conditioned"].items():
        assert r2["conditioned"][name]["norm_after"] == c1["norm_after"]
    merge2 = json.loads((tmp_path / "two" / "merges" / "distac" / "report.json").read_text())
    assert merge2["processes"] == 2
    for scenario in ("original", "distac"):  # "original": the same models, so the same numbers exactly
        m1, m2 = (json.loads((tmp_path / d / "merges" / scenario / "report.json").read_text()) for d in ("one", "two"))
        for a, b in zip(m1["results"], m2["results"], strict=True):
            assert a["alpha"] == b["alpha"], (scenario, a["method"])
            if scenario == "original":
                assert [t["accuracy"] for t in a["tasks"]] == [t["accuracy"] for t in b["tasks"]]
    again = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    stages = json.loads((tmp_path / "two" / "run.json").read_text())["stages"]
    assert all(s["reused"] for s in stages), stages


def test_spreading_needs_a_task_per_process_and_a_clean_child_environment():
    from hfdistac.pipeline.spread import child_environment, spreads

    assert not spreads(1, 2) and spreads(2, 2) and spreads(5, 4) and not spreads(3, 1)
    launched = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1",
                "ACCELERATE_USE_CPU": "1", "HF_HOME": "/h", "CUDA_VISIBLE_DEVICES": "4,5"}
    env = child_environment(launched, 1, threads=3)
    assert env == {"HF_HOME": "/h", "CUDA_VISIBLE_DEVICES": "5", "OMP_NUM_THREADS": "3"}  # its own process, GPU 5
    assert child_environment({"HF_HOME": "/h"}, None)["OMP_NUM_THREADS"] == "1"


def test_a_spread_conditioning_that_fails_raises_its_own_error(tiny, tmp_path):
    """The child's user-facing error comes back as the same error (not a log tail), and nothing is left behind."""
    import os

    from hfdistac.errors import HfDistacError
    from hfdistac.pipeline.spread import condition_spread

    out = tmp_path / "cond"
    fields = {"model": str(tiny.ft_a), "base": str(tiny.base), "data": str(tmp_path / "no-such-data"),
              "output": str(out), "steps": 1, "progress": False}
    with pytest.raises(HfDistacError, match="no-such-data"):
        condition_spread([("ft_a", out, fields, False)], lambda f: {}, dict(os.environ), None)
    assert not out.exists() and not list(tmp_path.glob(".cond.spread-*"))
