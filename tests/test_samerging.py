"""SAMerging / layer-wise AdaMerging: exact coefficient gradient, ASAM re-merge vs the released bug, descent,
clamp, and `hfdistac merge --method samerging` end to end on the tiny fixtures."""

from __future__ import annotations

import json

import pytest
import torch

from hfdistac.errors import InputError
from hfdistac.heads import Head
from hfdistac.merging import MERGE_METHODS
from hfdistac.merging.samerging import (
    CoefficientObjective,
    SAMergingData,
    SAMergingParams,
    SAMergingTask,
    asam_perturbation,
    sam_gradients,
    samerging_merge,
)

T_TASKS = 3


@pytest.fixture(scope="module")
def problem():
    """A random tiny vision tower θ₀, three task vectors, random heads and pixel batches (no files)."""
    from transformers import CLIPVisionConfig

    from hfdistac.checkpoints import build_vision_model, vision_state

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                           image_size=16, patch_size=8, projection_dim=8)
    base = vision_state(build_vision_model(cfg))
    tvs = [{k: 0.05 * torch.randn_like(v) for k, v in base.items()} for _ in range(T_TASKS)]
    tasks = []
    for t in range(T_TASKS):
        w = torch.nn.functional.normalize(torch.randn(3 + t, 8), dim=-1)
        head = Head(w, torch.randn(8, 16) / 4, 10.0, [f"c{i}" for i in range(3 + t)], ["{c}"])
        tasks.append(SAMergingTask(f"task{t}", head, [torch.randn(4, 3, 16, 16) for _ in range(3)]))
    return cfg, base, tvs, tasks


def make_data(problem, **kw):
    cfg, base, _, tasks = problem
    return SAMergingData(base=base, vision_config=cfg, tasks=tasks, **kw)


def objective_for(problem, objective="kd"):
    obj = CoefficientObjective(problem[2], make_data(problem), objective=objective, batch_size=4,
                               batches_per_task=3)
    if objective == "kd":
        obj.cache_teacher_logits()
    return obj


@pytest.mark.parametrize("objective", ["kd", "entropy"])
def test_coefficient_gradient_equals_plain_autograd(problem, objective):
    obj = objective_for(problem, objective)
    _, base, tvs, _ = problem
    lam = 0.3 + 0.2 * torch.randn(T_TASKS, len(obj.keys))
    batch = obj.batch([0, 1, 2])
    loss, grad = obj.loss_and_grad(lam, *batch)

    # Reference: Λ as an autograd leaf, θ(Λ) built inside the graph, functional_call, backward.
    leaf = lam.clone().requires_grad_()
    weights = [(base[k] + sum(leaf[t, i] * tvs[t][k] for t in range(T_TASKS))).reshape(-1)
               for i, k in enumerate(obj.keys)]
    ref_loss = obj.loss_from_weights(weights, *batch)
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-4, atol=1e-6)
    assert grad.abs().sum() > 0


def test_teacher_logits_are_the_fine_tuned_models(problem):
    from hfdistac.checkpoints import build_vision_model

    obj = objective_for(problem)
    cfg, base, tvs, tasks = problem
    teacher = build_vision_model(cfg, {k: base[k] + tvs[1][k] for k in base})
    with torch.no_grad():
        expected = tasks[1].head.logits(teacher(pixel_values=tasks[1].batches[2]).pooler_output)
    torch.testing.assert_close(obj.teacher_logits[1][2], expected, rtol=1e-5, atol=1e-5)
    # at Λ = one-hot of the task, the merged model is that task's teacher: its KL term vanishes
    lam = torch.zeros(T_TASKS, len(obj.keys))
    lam[1] = 1.0
    pixels, sizes, targets = obj.batch([0, 2, 0])
    with torch.no_grad():
        pooled = obj._forward(obj.merged_weights(lam), pixels)
    torch.testing.assert_close(tasks[1].head.logits(pooled.split(sizes)[1]), targets[1], rtol=1e-5, atol=1e-5)


def test_asam_perturbation_formula():
    lam = torch.tensor([[0.0, 0.5], [-1.0, 2.0]])
    g = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    eps = asam_perturbation(lam, g, 0.07)
    expected = 0.07 * lam**2 * g / torch.linalg.vector_norm(lam.abs() * g)
    torch.testing.assert_close(eps, expected)
    assert eps[0, 0] == 0  # no perturbation where Λ = 0 ...
    assert torch.equal(asam_perturbation(torch.zeros(2, 2), g, 0.07), torch.zeros(2, 2))  # ... nor at Λ ≡ 0


def test_sam_second_gradient_differs_when_remerging_and_equals_without(problem):
    obj = objective_for(problem)
    lam = torch.full((T_TASKS, len(obj.keys)), 0.3) + 0.1 * torch.randn(T_TASKS, len(obj.keys))
    batch = obj.batch([1, 0, 2])
    _, g1, g2 = sam_gradients(obj, lam, batch, rho=0.5, remerge=True)
    assert not torch.allclose(g1, g2, rtol=1e-3, atol=1e-7)
    # the remerged gradient is the gradient at Λ + ε
    _, g_at = obj.loss_and_grad(lam + asam_perturbation(lam, g1, 0.5), *batch)
    torch.testing.assert_close(g2, g_at)
    # the released code: the second pass reuses the unperturbed merged weights, so it is plain Adam
    _, r1, r2 = sam_gradients(obj, lam, batch, rho=0.5, remerge=False)
    torch.testing.assert_close(r1, g1)
    torch.testing.assert_close(r2, r1)


@pytest.mark.parametrize("remerge", [True, False])
def test_a_few_steps_reduce_the_distillation_loss(problem, remerge):
    result: dict = {}
    tau = samerging_merge(problem[2], steps=30, lr=5e-2, init=0.3, remerge_sam=remerge,
                          batches_per_task=1, batch_size=4, data=make_data(problem), result=result)
    hist = result["loss_history"]
    assert len(hist) == 31 and hist[-1] < 0.8 * hist[0]
    coef = result["coefficients"]
    assert coef.shape == (T_TASKS, len(result["parameter_names"]))
    assert result["task_names"] == ["task0", "task1", "task2"]
    # the returned vector is Σ_t Λ[t,l] τ_{t,l}
    k = result["parameter_names"][5]
    expected = sum(coef[t, 5] * problem[2][t][k] for t in range(T_TASKS))
    torch.testing.assert_close(tau[k], expected, rtol=1e-5, atol=1e-7)
    assert result["params"]["sam_rho"] == 0.07 and result["params"]["weight_decay"] == 5e-4


def test_adamerging_entropy_objective_clamps_to_unit_interval(problem):
    result: dict = {}
    samerging_merge(problem[2], objective="entropy", steps=15, lr=0.5, batches_per_task=2, batch_size=4,
                    data=make_data(problem), result=result)
    coef = result["coefficients"]
    assert coef.min() >= 0.0 and coef.max() <= 1.0
    assert ((coef == 0.0) | (coef == 1.0)).any()  # lr 0.5 pushes some onto the bounds
    assert result["params"]["init"] == 0.3 and result["params"]["sam_rho"] == 0.0
    assert result["params"]["clamp"] == [0.0, 1.0]
    # kd never clamps: the same large lr leaves [0, 1]
    kd: dict = {}
    samerging_merge(problem[2], steps=15, lr=0.5, batches_per_task=2, batch_size=4, data=make_data(problem),
                    result=kd)
    assert kd["coefficients"].min() < 0.0 or kd["coefficients"].max() > 1.0


def test_registry_entry_and_validation(problem):
    method = MERGE_METHODS["samerging"]
    assert method.needs_data and not method.uses_alpha
    assert method.paper_url == "https://arxiv.org/abs/2512.21288"
    assert SAMergingParams().resolved()["steps"] == 1000
    assert SAMergingParams(objective="entropy").resolved()["steps"] == 500
    with pytest.raises(InputError, match="needs data"):
        method(problem[2])
    with pytest.raises(InputError, match="objective"):
        method(problem[2], objective="ce", data=make_data(problem))
    with pytest.raises(InputError, match="sam_rho"):
        SAMergingParams(sam_rho=-1.0)
    with pytest.raises(InputError, match="2 task vectors but data for 3"):
        method(problem[2][:2], steps=1, data=make_data(problem))


def test_merge_cli_samerging_writes_coefficients_and_heatmap(tiny, tmp_path, capsys):
    from safetensors import safe_open

    from hfdistac.cli.main import main
    from tests.test_merge_cli import write_recipe

    recipe = write_recipe(tmp_path / "r.yaml", tiny)
    out = tmp_path / "out"
    code = main([str(a) for a in ("merge", recipe, "--method", "samerging", "--steps", "5", "--init", "0.3",
                                  "--batches-per-task", "2", "--sam-batch-size", "8", "--output", out,
                                  "--no-progress", "--test-limit", "8", "--val-limit", "8")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "SAMerging" in captured.out
    with safe_open(str(out / "coefficients.safetensors"), framework="pt") as f:
        meta = f.metadata()
        coef = f.get_tensor("coefficients")
    assert json.loads(meta["task_names"]) == ["ft_a", "ft_b", "ft_c"]
    names = json.loads(meta["parameter_names"])
    assert coef.shape == (3, len(names)) and names[0].startswith("vision_model.")
    assert (out / "coefficients.png").stat().st_size > 1000
    card = (out / "README.md").read_text()
    assert "coefficients.png" in card and "SAMerging" in card
    report = json.loads((out / "report.json").read_text())
    res = report["results"][0]
    assert res["alpha"] == 1.0 and res["params"]["steps"] == 5 and len(res["loss_history"]) == 6
    assert res["params"]["remerge_sam"] is True


def test_merge_config_rejects_bad_samerging_options(tiny, tmp_path):
    from hfdistac.merge_eval import MergeConfig

    recipe = str(tmp_path / "r.yaml")
    with pytest.raises(InputError, match="--objective"):
        MergeConfig(recipe=recipe, method="samerging", objective="ce")
    with pytest.raises(InputError, match="--steps"):
        MergeConfig(recipe=recipe, method="samerging", steps=0)
    with pytest.raises(InputError, match="needs data"):
        MergeConfig(recipe=recipe, method="samerging", weights_only=True, alpha=0.3)


def _distributed_worker(rank: int, world: int, port: int, problem, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        cfg, base, tvs, tasks = problem
        # process r holds batch r of every task (its shard)
        shard = [SAMergingTask(t.name, t.head, [t.batches[rank]]) for t in tasks]
        result: dict = {}
        samerging_merge(tvs, steps=4, init=0.3, lr=1e-2, batches_per_task=1, batch_size=4,
                        data=SAMergingData(base=base, vision_config=cfg, tasks=shard), result=result)
        torch.save({"rank": dist.get_rank(), "coefficients": result["coefficients"]}, f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # neither process leaves while the other still talks to it (gloo aborts then)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_data_parallel_all_reduce_equals_one_process_on_the_union(problem, tmp_path):
    """Two gloo processes, one shard each: Λ stays identical and equals one process on both shards' union."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_distributed_worker, args=(2, port, problem, str(tmp_path)), nprocs=2, join=True)
    outs = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [o["rank"] for o in outs] == [0, 1]
    assert torch.equal(outs[0]["coefficients"], outs[1]["coefficients"])
    cfg, base, tvs, tasks = problem
    union = [SAMergingTask(t.name, t.head, [torch.cat(t.batches[:2])]) for t in tasks]
    single: dict = {}
    samerging_merge(tvs, steps=4, init=0.3, lr=1e-2, batches_per_task=1, batch_size=8,
                    data=SAMergingData(base=base, vision_config=cfg, tasks=union), result=single)
    torch.testing.assert_close(single["coefficients"], outs[0]["coefficients"], rtol=1e-5, atol=1e-6)


def test_streamed_task_vectors_and_task_passes_give_the_same_coefficients(problem, tmp_path):
    """Re-reading the task vectors from disk gives the same result bit for bit; one pass per task the same up
    to float summation order."""
    from hfdistac.task_vectors import TaskVector, load_task_vector, save_task_vector

    _, _, tvs, _ = problem
    lazy = [load_task_vector(save_task_vector(TaskVector(tv), tmp_path / f"t{i}.safetensors"))
            for i, tv in enumerate(tvs)]
    params = dict(steps=3, batches_per_task=3, batch_size=4, init=0.3)
    base = MERGE_METHODS["samerging"](lazy, data=make_data(problem, stream_task_vectors=False), **params)
    streamed = MERGE_METHODS["samerging"](lazy, data=make_data(problem, stream_task_vectors=True), **params)
    per_task = MERGE_METHODS["samerging"](lazy, data=make_data(problem, tasks_per_pass=1), **params)
    assert all(torch.equal(base[k], streamed[k]) for k in base)
    diff = sum(float((base[k] - per_task[k]).pow(2).sum()) for k in base) ** 0.5
    assert diff <= 1e-4 * sum(float(base[k].pow(2).sum()) for k in base) ** 0.5
