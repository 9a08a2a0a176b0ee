"""The core numbers against independent derivations: each test computes the expected value a second way (by
hand on a few numbers, with autograd, or with a plain loop written here) and never with the code under test.

``benchmarks/mutation_check.py`` breaks each guarded line in a copy of the repository and shows that these
tests then fail; re-run it after changing one of the guarded computations.

| computation | test |
|:--|:--|
| DisTaC optimiser steps (KD + β‖θ − θ_init‖², clip, AdamW, schedule) | ``test_condition_equals_a_plain_algorithm_1_loop`` |
| the anchor gradient under an fp16 loss scaler | ``test_anchor_gradient_is_scaled_like_the_kd_gradients`` |
| SAMerging's ASAM step (gradient at Λ + ε) | ``test_samerging_steps_with_the_gradient_at_the_perturbed_point`` |
| normalised accuracy and its mean | ``test_normalized_accuracy_by_hand``, ``test_merge_report_normalises_by_the_individual_models`` |
| α chosen on the validation rows | ``test_alpha_is_chosen_on_the_validation_split_not_the_test_split`` |
| accuracy, entropy, NLL, ECE, reliability bins | ``test_classification_metrics_by_hand`` |
| κ from the other tasks' norms | ``test_kappa_is_the_mean_of_the_others_not_the_median`` |
| pickles are never unpickled | ``test_a_real_pickle_is_never_unpickled`` (local, adapter, Hub) |
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml


# ------------------------------------------------------------------------------------------------ DisTaC
def _schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to the peak, then half a cosine to 0 (METHOD.md §1), written out again here."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def _plain_algorithm_1(tiny, *, kappa: float, beta: float, steps: int, batch_size: int, lr: float, warmup: int,
                       t_tcr: float, t_stu: float, clip: float = 1.0) -> dict[str, torch.Tensor]:
    """Algorithm 1 of arXiv 2508.01148 as the paper writes it, one full batch per step: the teacher's forward,
    the student's forward, KD + β‖θ − θ_init‖² through autograd, global-norm clipping, torch's plain (unfused)
    AdamW with weight decay 0, the schedule above. Only the data order, the frozen head and the image
    preprocessing come from hfdistac (they are inputs of the algorithm, not the algorithm)."""
    from hfdistac.checkpoints import VISION_PREFIX, build_vision_model, load_base, load_finetuned
    from hfdistac.data import DatasetSpec, load_image_data
    from hfdistac.distac import global_batch_indices
    from hfdistac.evaluation import head_for_task

    base, ft = load_base(str(tiny.base)), load_finetuned(str(tiny.ft_long))
    data = load_image_data(DatasetSpec(str(tiny.data)), "train", streaming=False)
    head = head_for_task(base, data)
    theta0 = {k: v.float() for k, v in base.weights.items()}
    theta_init = {k: theta0[k] + kappa * (ft.weights[k].float() - theta0[k]) for k in theta0}
    teacher = build_vision_model(base.vision_config, ft.weights).eval().requires_grad_(False)
    student = build_vision_model(base.vision_config, theta_init)
    named = {VISION_PREFIX + k: p for k, p in student.named_parameters()}
    anchor = {k: theta_init[k].clone() for k in named}
    opt = torch.optim.AdamW(list(named.values()), lr=lr, weight_decay=0.0, foreach=False, fused=False)
    n = len(data.dataset)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * _schedule(step, steps, warmup)
        idx = global_batch_indices(n, batch_size, step, 0)
        images = [im.convert("RGB") for im in data.dataset.select(idx)["image"]]
        pixels = base.image_processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            z_t = head.logits(teacher(pixel_values=pixels).pooler_output)
        z_s = head.logits(student(pixel_values=pixels).pooler_output)
        p_t = torch.softmax(z_t / t_tcr, -1)
        kd = (p_t * (torch.log(p_t) - torch.log_softmax(z_s / t_stu, -1))).sum(-1).mean() * t_tcr * t_stu
        reg = sum(((p - anchor[k]) ** 2).sum() for k, p in named.items())
        opt.zero_grad()
        (kd + beta * reg).backward()
        torch.nn.utils.clip_grad_norm_(list(named.values()), clip)
        opt.step()
    return {k: p.detach().clone() for k, p in named.items()}


def _relative_distance(a: dict, b: dict, start: dict) -> float:
    """‖a − b‖ / ‖b − start‖: how far two runs end apart, relative to how far they moved.

    The attention key biases are left out: their gradient is exactly zero in exact arithmetic (adding a constant
    to every key shifts each query's logits by one constant, which softmax ignores), so Adam, which divides
    each coordinate's step by its own gradient's size, moves them by a full step of float noise in both runs.
    """
    keys = [k for k in b if not k.endswith("self_attn.k_proj.bias")]
    num = math.sqrt(sum(float((a[k] - b[k]).double().pow(2).sum()) for k in keys))
    den = math.sqrt(sum(float((b[k] - start[k]).double().pow(2).sum()) for k in keys))
    return num / den


@pytest.mark.parametrize("micro_batch, cache", [(None, True), (8, False)], ids=["one-batch-cached", "accumulated"])
def test_condition_equals_a_plain_algorithm_1_loop(tiny, tmp_path, micro_batch, cache):
    """README / CONDITIONING.md: hfdistac's loop (fused AdamW, the anchor's gradient added by hand, cached
    teacher logits, gradient accumulation) computes Algorithm 1. Four steps at a rate where the anchor and the
    clip both bind: the weights equal the plain loop's to float rounding, and the same loop without the anchor
    (β = 0) ends much farther away, so the comparison can tell."""
    from safetensors.torch import load_file

    from hfdistac.checkpoints import read_vision_weights
    from hfdistac.distac import ConditionConfig, run_condition

    settings = dict(kappa=0.4, beta=2.0, steps=4, batch_size=16, lr=1e-3, warmup=2, t_tcr=10.0, t_stu=10.0)
    report = run_condition(ConditionConfig(
        model=str(tiny.ft_long), base=str(tiny.base), data=str(tiny.data), kappa=settings["kappa"], preset="norm",
        beta=settings["beta"], steps=settings["steps"], batch_size=settings["batch_size"],
        micro_batch_size=micro_batch, lr=settings["lr"], warmup_steps=settings["warmup"], seed=0,
        eval_split="none", cache_teacher_logits=cache, log_every=1, output=str(tmp_path / "out"), progress=False))
    assert report["teacher_temperature"] == 10.0 and report["student_temperature"] == 10.0
    assert all(h["grad_norm"] > 1.0 for h in report["history"])  # the clip binds at every step
    ours = load_file(str(tmp_path / "out" / "model.safetensors"))
    theta0 = read_vision_weights(tiny.base)
    ft = read_vision_weights(tiny.ft_long)
    start = {k: theta0[k] + settings["kappa"] * (ft[k] - theta0[k]) for k in theta0}

    plain = _plain_algorithm_1(tiny, **settings)
    assert set(ours) == set(plain)
    distance = _relative_distance(ours, plain, start)
    assert distance < 1e-4, distance
    without_anchor = _plain_algorithm_1(tiny, **{**settings, "beta": 0.0})
    assert _relative_distance(without_anchor, plain, start) > 100 * max(distance, 1e-6)


def test_anchor_gradient_is_scaled_like_the_kd_gradients():
    """With an fp16 loss scaler s, the KD gradients in .grad are s·∂KD/∂θ, so the anchor adds 2βs(θ − θ_init);
    the value returned is ‖θ − θ_init‖² (unscaled). Checked against autograd of s·β‖θ − θ_init‖²."""
    from hfdistac.conditioning.loop import _add_anchor_gradient

    class Scaler:
        def get_scale(self):
            return 8.0

    accelerator = type("A", (), {"scaler": Scaler()})()
    g = torch.Generator().manual_seed(0)
    theta = {"a": torch.randn(3, 4, generator=g), "b": torch.randn(5, generator=g)}
    anchor = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in theta.items()}
    kd_grad = {k: torch.randn(v.shape, generator=g) for k, v in theta.items()}
    beta = 0.7
    ours = {k: torch.nn.Parameter(v.clone()) for k, v in theta.items()}
    for k, p in ours.items():
        p.grad = kd_grad[k].clone()
    value = _add_anchor_gradient(ours, anchor, beta, None, accelerator)
    expected_value = sum(float(((theta[k] - anchor[k]) ** 2).sum()) for k in theta)
    assert float(value) == pytest.approx(expected_value, rel=1e-6)
    for k in theta:
        want = kd_grad[k] + 8.0 * beta * 2 * (theta[k] - anchor[k])
        torch.testing.assert_close(ours[k].grad, want, rtol=1e-6, atol=1e-6)
    # and the same as autograd's gradient of the scaled term, plus the KD part
    params = {k: v.clone().requires_grad_() for k, v in theta.items()}
    (8.0 * beta * sum(((params[k] - anchor[k]) ** 2).sum() for k in params)).backward()
    for k in theta:
        torch.testing.assert_close(ours[k].grad - kd_grad[k], params[k].grad, rtol=1e-5, atol=1e-6)


def test_kappa_is_the_mean_of_the_others_not_the_median(tiny, tmp_path):
    """κ = mean_{s≠t}‖τ_s‖ / ‖τ_t‖ (METHOD.md §1), with three references whose mean (3) and median (2) differ:
    in compute_kappa, in inspect's recommendation, and in the κ a `condition --reference` run uses."""
    from hfdistac.diagnosis import classify, norm_statistics
    from hfdistac.distac import compute_kappa

    assert compute_kappa(12.0, reference_norms=[1.0, 2.0, 6.0]) == (pytest.approx(3.0 / 12.0), pytest.approx(3.0))
    stats = norm_statistics([12.0, 1.0, 2.0, 6.0])
    assert stats[0] == (pytest.approx(12.0 / 2.0), pytest.approx(3.0))  # flagged against the median, κ from the mean
    _, rec = classify(12.0, *stats[0], None)
    assert rec["kappa"] == pytest.approx(0.25) and rec["target_norm"] == pytest.approx(3.0)

    from hfdistac.checkpoints import read_vision_weights
    from hfdistac.distac import ConditionConfig, run_condition

    theta0 = read_vision_weights(tiny.base)

    def norm(folder):
        w = read_vision_weights(folder)
        return math.sqrt(sum(float((w[k].double() - theta0[k].double()).pow(2).sum()) for k in theta0))

    refs = [tiny.ft_a, tiny.ft_c, tiny.ft_long]  # norms differ, so mean and median of the three differ
    ref_norms = [norm(r) for r in refs]
    assert abs(sum(ref_norms) / 3 - sorted(ref_norms)[1]) > 0.1 * sorted(ref_norms)[1]
    report = run_condition(ConditionConfig(
        model=str(tiny.ft_b), base=str(tiny.base), data=str(tiny.data), reference=[str(r) for r in refs],
        preset="norm", steps=1, batch_size=8, eval_split="none", output=str(tmp_path / "k"), progress=False))
    assert report["kappa"] == pytest.approx(sum(ref_norms) / 3 / norm(tiny.ft_b), rel=1e-5)


# ------------------------------------------------------------------------------------------------ SAMerging
def test_samerging_steps_with_the_gradient_at_the_perturbed_point():
    """SAMerging's optimiser is fed the gradient at Λ + ε, ε = ρΛ²⊙g/‖|Λ|⊙g‖ (ASAM), taken with the merged
    weights rebuilt at Λ + ε. Reference: Λ an autograd leaf, θ(Λ) = θ₀ + Σ_t Λ[t,l]τ_{t,l} built in the graph,
    the multi-teacher KL written out, torch's Adam. The run with the unperturbed gradient (plain Adam) must end
    elsewhere, or the test could not tell."""
    from transformers import CLIPVisionConfig

    from hfdistac.checkpoints import build_vision_model, vision_state
    from hfdistac.heads import Head
    from hfdistac.merging.samerging import SAMergingData, SAMergingTask, samerging_merge

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8, projection_dim=8)
    base = vision_state(build_vision_model(cfg))
    tvs = [{k: 0.2 * torch.randn_like(v) for k, v in base.items()} for _ in range(2)]
    tasks = [SAMergingTask(f"t{t}", Head(F.normalize(torch.randn(3, 8), dim=-1), torch.randn(8, 16) / 4, 10.0,
                                         ["a", "b", "c"], ["{c}"]), [torch.randn(4, 3, 16, 16)])
             for t in range(2)]
    steps, lr, wd, rho, temp, init = 3, 0.05, 5e-4, 0.5, 2.0, 0.3

    def run(remerge: bool):
        result: dict = {}
        samerging_merge(tvs, steps=steps, lr=lr, weight_decay=wd, sam_rho=rho, temperature=temp, init=init,
                        remerge_sam=remerge, batches_per_task=1, batch_size=4,
                        data=SAMergingData(base=base, vision_config=cfg, tasks=tasks, progress=False), result=result)
        return result

    ours = run(True)
    keys = ours["parameter_names"]
    model = build_vision_model(cfg, base)

    def pooled(weights, pixels):
        params = {k.removeprefix("vision_model."): w for k, w in weights.items()}
        params = {("vision_model." + k if "vision_model." + k in dict(model.named_parameters()) else k): v
                  for k, v in params.items()}
        return torch.func.functional_call(model, params, args=(), kwargs={"pixel_values": pixels}).pooler_output

    with torch.no_grad():
        teachers = [tasks[t].head.logits(pooled({k: base[k] + tvs[t][k] for k in keys}, tasks[t].batches[0]))
                    for t in range(2)]

    def loss(lam):
        weights = {k: base[k] + sum(lam[t, i] * tvs[t][k] for t in range(2)) for i, k in enumerate(keys)}
        total = 0.0
        for t in range(2):
            z = tasks[t].head.logits(pooled(weights, tasks[t].batches[0]))
            p = torch.softmax(teachers[t] / temp, -1)
            total = total + (p * (torch.log(p) - torch.log_softmax(z / temp, -1))).sum(-1).mean()
        return total

    def grad_at(lam):
        leaf = lam.detach().clone().requires_grad_()
        loss(leaf).backward()
        return leaf.grad

    lam = torch.nn.Parameter(torch.full((2, len(keys)), init))
    opt = torch.optim.Adam([lam], lr=lr, weight_decay=wd)
    for _ in range(steps):
        g = grad_at(lam)
        eps = rho * lam.detach() ** 2 * g / torch.linalg.vector_norm(lam.detach().abs() * g)
        lam.grad = grad_at(lam.detach() + eps)
        opt.step()
    torch.testing.assert_close(ours["coefficients"], lam.detach(), rtol=1e-4, atol=1e-6)
    unperturbed = run(False)["coefficients"]
    assert (unperturbed - lam.detach()).abs().max() > 100 * (ours["coefficients"] - lam.detach()).abs().max()


# ------------------------------------------------------------------------------------------------ scoring
def test_normalized_accuracy_by_hand():
    from hfdistac.merge_eval.scoring import mean, normalize

    got = normalize({"a": 45.0, "b": 30.0, "c": 10.0}, {"a": 90.0, "b": 60.0, "c": 0.0})
    assert got == {"a": pytest.approx(50.0), "b": pytest.approx(50.0), "c": None}  # c's normaliser scored 0
    assert mean(got.values()) == pytest.approx(50.0)
    assert normalize({"a": 72.0}, {"a": 80.0}) == {"a": pytest.approx(90.0)}
    assert mean([90.0, 60.0, None]) == pytest.approx(75.0)


def _labelled_copy(src: Path, dst: Path, labels_by_split: dict[str, list[int]]) -> Path:
    """``src``'s test images under new labels, one parquet file per split named in ``labels_by_split``."""
    from datasets import load_dataset

    shutil.copytree(src, dst)
    test = load_dataset("parquet", data_files=str(src / "data" / "test-00000-of-00001.parquet"), split="train")
    for split, labels in labels_by_split.items():
        test.remove_columns("label").add_column("label", labels, feature=test.features["label"]).to_parquet(
            str(dst / "data" / f"{split}-00000-of-00001.parquet"))
    return dst


@pytest.fixture(scope="module")
def disagreeing_splits(tiny, tmp_path_factory):
    """A dataset whose validation split (``holdout``) is labelled by the zero-shot model θ₀'s predictions and
    whose test split by the predictions of θ₀ + 1.0·(τ_a + τ_far), τ_far a long random task vector: α = 0
    scores 100 % on validation, α = 1 100 % on test. Returns ``(dataset folder, test labels, α=0's test labels,
    the far model's folder)``."""
    from hfdistac.checkpoints import read_vision_weights
    from tests._fixtures_models import make_finetuned, plain_predictions

    root = tmp_path_factory.mktemp("alpha")
    far = make_finetuned(tiny.base, root / "far", scale=0.3, seed=5)
    theta0 = read_vision_weights(tiny.base)
    a, long = read_vision_weights(tiny.ft_a), read_vision_weights(far)
    zero_shot, _ = plain_predictions(tiny.base, theta0, tiny.data)
    merged, _ = plain_predictions(tiny.base, {k: theta0[k] + (a[k] - theta0[k]) + (long[k] - theta0[k])
                                              for k in theta0}, tiny.data)
    assert sum(x != y for x, y in zip(zero_shot, merged, strict=True)) >= 3  # the two splits really disagree
    folder = _labelled_copy(tiny.data, root / "data", {"holdout": zero_shot, "test": merged})
    return folder, merged, zero_shot, far


def test_alpha_is_chosen_on_the_validation_split_not_the_test_split(tiny, tmp_path, disagreeing_splits):
    from hfdistac.merge_eval import MergeConfig, run_merge

    folder, test_labels, zero_shot, far = disagreeing_splits
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "alpha", "base": str(tiny.base),
                                      "tasks": [{"name": n, "model": str(m), "dataset": str(folder),
                                                 "val_split": "holdout"} for n, m in (("a", tiny.ft_a), ("far", far))]}))
    report = run_merge(MergeConfig(recipe=str(recipe), method="task_arithmetic", alpha_grid=[0.0, 1.0],
                                   output=str(tmp_path / "out"), progress=False))
    (result,) = report["results"]
    assert [c["alpha"] for c in result["alpha_curve"]] == [0.0, 1.0]
    assert result["alpha_curve"][0]["mean_accuracy"] == 100.0  # θ₀ on labels that are θ₀'s predictions
    assert result["alpha"] == 0.0
    # the test rows are those of α = 0: θ₀'s agreement with the α = 1 labels, counted here
    expected = 100.0 * sum(x == y for x, y in zip(zero_shot, test_labels, strict=True)) / len(test_labels)
    assert [t["accuracy"] for t in result["tasks"]] == [pytest.approx(expected)] * 2


def test_merge_report_normalises_by_the_individual_models(tiny, tmp_path):
    """Every normalised accuracy in a merge report is 100 · merged / individual on the test split, and each mean
    is the plain mean of its rows (recomputed here from the report's own raw numbers)."""
    from hfdistac.merge_eval import MergeConfig, run_merge

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "n", "base": str(tiny.base),
                                      "tasks": [{"name": n, "model": str(getattr(tiny, n)), "dataset": str(tiny.data5
                                                 if n == "ft_b" else tiny.data)} for n in ("ft_a", "ft_b")]}))
    report = run_merge(MergeConfig(recipe=str(recipe), method="task_arithmetic", alpha=0.5,
                                   output=str(tmp_path / "out"), progress=False))
    individual = report["individual"]["accuracy"]
    assert all(0 < v < 100 for v in individual.values())  # not 100, so raw and normalised differ
    for row in report["results"][0]["tasks"]:
        assert row["normalized_accuracy"] == pytest.approx(100.0 * row["accuracy"] / individual[row["name"]])
    rows = report["results"][0]["tasks"]
    assert report["results"][0]["mean_normalized_accuracy"] == pytest.approx(
        sum(100.0 * r["accuracy"] / individual[r["name"]] for r in rows) / len(rows))
    zs = report["zero_shot"]
    assert zs["mean_normalized_accuracy"] == pytest.approx(
        sum(100.0 * zs["accuracy"][k] / individual[k] for k in individual) / len(individual))


# ------------------------------------------------------------------------------------------------ metrics
def test_classification_metrics_by_hand():
    """Accuracy, entropy, NLL, ECE (15 equal-width bins, |confidence − accuracy| weighted by the bin's share)
    and the reliability bins, from math.exp on six examples."""
    from hfdistac.metrics import classification_metrics, reliability_bins

    logits = [[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 1.0], [4.0, 0.0, 1.0], [0.2, 0.1, 0.0]]
    labels = [0, 2, 0, 2, 1, 0]
    probs = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in logits]
    conf = [max(p) for p in probs]
    pred = [p.index(max(p)) for p in probs]
    correct = [float(a == b) for a, b in zip(pred, labels, strict=True)]
    n = len(labels)
    bins: dict[int, list[int]] = {}
    for i, c in enumerate(conf):
        bins.setdefault(math.ceil(c * 15) - 1, []).append(i)  # bin b holds confidences in (b/15, (b+1)/15]
    ece = sum(len(m) / n * abs(sum(conf[i] for i in m) / len(m) - sum(correct[i] for i in m) / len(m))
              for m in bins.values())
    signed = sum(len(m) / n * (sum(conf[i] for i in m) - sum(correct[i] for i in m)) / len(m) for m in bins.values())
    assert abs(abs(signed) - ece) > 1e-3  # over- and under-confident bins: a signed ECE would differ

    got = classification_metrics(torch.tensor(logits), torch.tensor(labels))
    assert got["n"] == 6
    assert got["accuracy"] == 100.0 * sum(correct) / n == pytest.approx(400 / 6)  # 4 of 6 right
    assert got["entropy"] == pytest.approx(sum(-sum(q * math.log(q) for q in p) for p in probs) / n, rel=1e-6)
    assert got["max_prob"] == pytest.approx(sum(conf) / n, rel=1e-6)
    assert got["nll"] == pytest.approx(sum(-math.log(probs[i][labels[i]]) for i in range(n)) / n, rel=1e-6)
    assert got["ece"] == pytest.approx(ece, rel=1e-5)

    rel = reliability_bins(torch.tensor(logits), torch.tensor(labels))
    assert rel["lower"] == pytest.approx([b / 15 for b in range(15)])
    assert rel["count"] == [len(bins.get(b, [])) for b in range(15)]
    for b in range(15):
        members = bins.get(b)
        if members:
            assert rel["confidence"][b] == pytest.approx(sum(conf[i] for i in members) / len(members), rel=1e-6)
            assert rel["accuracy"][b] == pytest.approx(sum(correct[i] for i in members) / len(members))
        else:
            assert math.isnan(rel["confidence"][b]) and math.isnan(rel["accuracy"][b])
    # unlabeled data: entropy and confidence only
    assert set(classification_metrics(torch.tensor(logits))) == {"n", "entropy", "max_prob"}


# ------------------------------------------------------------------------------------------------ pickles
class _Trap:
    """Unpickling this object creates ``marker`` (``open(marker, "w")``): a real pickle that shows whether it
    was ever loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path: Path, marker: Path) -> Path:
    """A real torch pickle checkpoint at ``path`` whose loading creates ``marker``."""
    torch.save({"vision_model.post_layernorm.weight": _Trap(marker)}, str(path))
    return path


def test_the_trap_is_armed(tmp_path):
    """The pickles below really would create their marker if anything loaded them."""
    marker = tmp_path / "loaded"
    _plant(tmp_path / "x.bin", marker)
    torch.load(str(tmp_path / "x.bin"), weights_only=False).get("vision_model.post_layernorm.weight").close()
    assert marker.is_file()
    marker.unlink()
    with (tmp_path / "x.bin").open("rb") as f:
        raw = f.read()
    assert raw[:2] == b"PK"  # torch's zip format (data.pkl inside), what pytorch_model.bin files are
    marker2 = tmp_path / "loaded2"
    pickle.loads(pickle.dumps(_Trap(marker2))).close()
    assert marker2.is_file()


def test_a_real_pickle_is_never_unpickled(tiny, tmp_path, hub_env, capsys):
    from hfdistac.checkpoints import load_base, load_finetuned, read_vision_weights
    from hfdistac.cli.main import main
    from hfdistac.errors import CheckpointError

    marker = tmp_path / "UNPICKLED"
    # a local model folder: config + pytorch_model.bin only
    local = tmp_path / "local"
    local.mkdir()
    shutil.copy(tiny.ft_a / "config.json", local)
    _plant(local / "pytorch_model.bin", marker)
    for load in (read_vision_weights, lambda d: load_finetuned(str(d)), lambda d: load_base(str(d))):
        with pytest.raises(CheckpointError, match="pickle"):
            load(local)
    assert main(["inspect", str(local), str(tiny.ft_b), "--base", str(tiny.base), "--no-progress"]) == 2
    assert "pickle" in capsys.readouterr().err
    # a local folder with a pickle *beside* safetensors: the safetensors are read, the pickle never
    beside = tmp_path / "beside"
    shutil.copytree(tiny.ft_a, beside)
    _plant(beside / "pytorch_model.bin", marker)
    assert set(read_vision_weights(beside)) == set(read_vision_weights(tiny.ft_a))
    # a LoRA adapter saved as a pickle
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"],
        "base_model_name_or_path": str(tiny.base)}))
    _plant(adapter / "adapter_model.bin", marker)
    with pytest.raises(CheckpointError):
        load_finetuned(str(adapter))
    # a Hub repo whose only weights are a pickle: never downloaded, refused
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(tiny.ft_a / "config.json", repo)
    _plant(repo / "pytorch_model.bin", tmp_path / "server-side")
    hub_env.server.seed_repo("org/trap", repo)
    with pytest.raises(CheckpointError, match="pickle"):
        load_finetuned("org/trap")
    assert not hub_env.server.requests_to(r"pytorch_model\.bin")
    assert not list(hub_env.home.rglob("*.bin"))
    # and a Hub adapter in a pickle
    hub_adapter = tmp_path / "hub-adapter"
    shutil.copytree(adapter, hub_adapter)
    hub_env.server.seed_repo("org/trap-adapter", hub_adapter)
    with pytest.raises(CheckpointError):
        load_finetuned("org/trap-adapter")
    assert not marker.exists() and not (tmp_path / "server-side").exists()
