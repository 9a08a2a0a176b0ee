"""Iso-C, Iso-CTS, WUDI, RegMean and RegMean++: invariants derived by hand, the Gram step alone, and end-to-end
merges through `hfdistac merge`."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from hfdistac.cli.main import main
from hfdistac.errors import InputError
from hfdistac.merging import MERGE_METHODS
from hfdistac.merging.iso import common_space_size, iso_c_merge, iso_cts_matrix, iso_cts_merge
from hfdistac.merging.primitives import polar_factor
from hfdistac.merging.regmean import (
    RegMeanData,
    compute_grams,
    reduce_non_diagonal,
    regmean_matrix,
    regmean_merge,
    regmean_plusplus_merge,
)
from hfdistac.merging.wudi import is_linear_layer_weight, wudi_loss, wudi_matrix, wudi_merge

NEW = ("iso_c", "iso_cts", "wudi", "regmean", "regmean_plusplus")


def _tvs(n: int = 3, seed: int = 0, shape=(12, 8)) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"w": torch.randn(shape, generator=g), "b": torch.randn(shape[0], generator=g)} for _ in range(n)]


# ------------------------------------------------------------------------------------------------ registry
@pytest.mark.parametrize("name", NEW)
def test_new_methods_are_registered_with_paper_citation_and_params(name):
    m = MERGE_METHODS[name]
    assert m.paper_url.startswith("https://arxiv.org/abs/") and m.citation.startswith("@")
    assert m.pretty_name and m.params_cls.__doc__
    for f in m.params_cls.__dataclass_fields__.values():
        assert f.metadata.get("help")
    assert m.uses_alpha == (name in ("iso_c", "iso_cts"))
    assert m.needs_data == name.startswith("regmean")


# ------------------------------------------------------------------------------------------------ Iso-C / Iso-CTS
def test_iso_c_of_one_task_vector_is_its_polar_factor_times_its_mean_singular_value():
    tv = _tvs(1)[0]
    out = iso_c_merge([tv])
    s = torch.linalg.svdvals(tv["w"])
    torch.testing.assert_close(out["w"], polar_factor(tv["w"]) * s.mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["b"], tv["b"])  # non-matrix: the mean


def test_iso_c_flattens_the_spectrum_of_the_sum_and_averages_the_rest():
    tvs = _tvs(3)
    out = iso_c_merge(tvs)
    total = sum(t["w"] for t in tvs)
    s_out = torch.linalg.svdvals(out["w"])
    torch.testing.assert_close(s_out, torch.full_like(s_out, float(torch.linalg.svdvals(total).mean())),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["b"], sum(t["b"] for t in tvs) / 3)


def test_iso_cts_with_fraction_one_is_iso_c():
    tvs = _tvs(4, shape=(16, 10))
    a, b = iso_cts_merge(tvs, common_space_fraction=1.0), iso_c_merge(tvs)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_iso_cts_is_isotropic_and_holds_the_common_subspace():
    tvs = _tvs(3, seed=1, shape=(20, 9))
    out = iso_cts_matrix([t["w"] for t in tvs], 0.5)
    s = torch.linalg.svdvals(out)
    torch.testing.assert_close(s, torch.full_like(s, float(s.mean())), rtol=1e-4, atol=1e-5)
    k, per_task = common_space_size((20, 9), 3, 0.5)
    assert (k, per_task) == (3, 2) and k + 3 * per_task == 9  # 9 - round((9 - 4)/3)*3 = 3 common
    u = torch.linalg.svd(sum(t["w"] for t in tvs), full_matrices=False)[0][:, :k]
    u_out = torch.linalg.svd(out, full_matrices=False)[0]
    torch.testing.assert_close(u_out @ (u_out.T @ u), u, rtol=1e-4, atol=1e-4)  # inside the merged column space


def test_iso_cts_rejects_a_bad_fraction():
    with pytest.raises(InputError, match="common_space_fraction"):
        MERGE_METHODS["iso_cts"](_tvs(2), common_space_fraction=1.5)


# ------------------------------------------------------------------------------------------------ WUDI
def test_wudi_zero_iterations_return_the_sum_and_the_loss_decreases():
    tvs = [t["w"] for t in _tvs(3, seed=2)]
    torch.testing.assert_close(wudi_matrix(tvs, iterations=0), sum(tvs))
    history: list[float] = []
    out = wudi_matrix(tvs, iterations=50, lr=1e-2, history=history)
    assert len(history) == 51 and history[-1] < history[0] * 0.9
    assert all(b <= a + 1e-6 * abs(a) for a, b in zip(history[:10], history[1:11], strict=False))
    stacked = torch.stack(tvs)
    assert history[0] == pytest.approx(float(wudi_loss(sum(tvs), stacked)), rel=1e-5)
    assert history[-1] == pytest.approx(float(wudi_loss(out, stacked)), rel=1e-4)


def test_wudi_closed_form_gradient_equals_autograd_of_the_literal_loss():
    tvs = [t["w"].double() for t in _tvs(3, seed=3)]
    m = torch.randn(tvs[0].shape, dtype=torch.float64, requires_grad=True)
    wudi_loss(m, torch.stack(tvs)).backward()
    norms = [t.pow(2).sum() for t in tvs]
    a = sum(t.T @ t / n for t, n in zip(tvs, norms, strict=True))
    b = sum(t @ (t.T @ t) / n for t, n in zip(tvs, norms, strict=True))
    torch.testing.assert_close(m.grad, 2 * (m.detach() @ a - b))


def test_wudi_official_variant_fuses_qkv_and_zeroes_other_tensors():
    g = torch.Generator().manual_seed(4)
    keys = {f"vision_model.encoder.layers.0.self_attn.{p}_proj.{w}": (8, 8) if w == "weight" else (8,)
            for p in "qkv" for w in ("weight", "bias")}
    keys.update({"vision_model.encoder.layers.0.mlp.fc1.weight": (16, 8),
                 "vision_model.embeddings.position_embedding.weight": (5, 8)})
    tvs = [{k: torch.randn(s, generator=g) for k, s in keys.items()} for _ in range(2)]
    official = wudi_merge(tvs, iterations=5, lr=1e-3)
    assert torch.equal(official["vision_model.embeddings.position_embedding.weight"], torch.zeros(5, 8))
    assert torch.equal(official["vision_model.encoder.layers.0.self_attn.q_proj.bias"], torch.zeros(8))
    qkv = [torch.cat([tv[f"vision_model.encoder.layers.0.self_attn.{p}_proj.weight"] for p in "qkv"]) for tv in tvs]
    fused = wudi_matrix(qkv, 5, 1e-3)
    torch.testing.assert_close(official["vision_model.encoder.layers.0.self_attn.k_proj.weight"], fused[8:16])
    fb = wudi_merge(tvs, iterations=5, lr=1e-3, only_linear_layers=False, fuse_qkv=False, others="mean")
    torch.testing.assert_close(fb["vision_model.encoder.layers.0.self_attn.q_proj.bias"],
                               (tvs[0]["vision_model.encoder.layers.0.self_attn.q_proj.bias"]
                                + tvs[1]["vision_model.encoder.layers.0.self_attn.q_proj.bias"]) / 2)
    assert not torch.equal(fb["vision_model.embeddings.position_embedding.weight"], torch.zeros(5, 8))
    assert is_linear_layer_weight("vision_model.encoder.layers.3.mlp.fc2.weight")
    assert not is_linear_layer_weight("vision_model.encoder.layers.3.mlp.fc2.bias")


def test_wudi_rejects_bad_options():
    with pytest.raises(InputError, match="iterations"):
        MERGE_METHODS["wudi"](_tvs(2), iterations=-1)
    with pytest.raises(InputError, match="others"):
        MERGE_METHODS["wudi"](_tvs(2), others="max")


# ------------------------------------------------------------------------------------------------ RegMean
def test_regmean_with_identity_grams_is_averaging():
    tvs = _tvs(3, seed=5)
    grams = [{"w": torch.eye(8)} for _ in tvs]
    out = regmean_merge(tvs, reduce_non_diagonal_ratio=0.5, grams=grams)
    torch.testing.assert_close(out["w"], sum(t["w"] for t in tvs) / 3, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["b"], sum(t["b"] for t in tvs) / 3)


def test_regmean_solves_the_regression_it_states():
    g = torch.Generator().manual_seed(6)
    taus = [torch.randn(5, 4, generator=g) for _ in range(3)]
    xs = [torch.randn(30, 4, generator=g) for _ in range(3)]
    grams = [x.T @ x / len(x) for x in xs]
    merged = regmean_matrix(taus, grams, ratio=1.0)
    # normal equations of min_W Σ_t ‖X_t Wᵀ − X_t τ_tᵀ‖²: Σ_t (W − τ_t) G_t = 0
    residual = sum((merged - t) @ gm for t, gm in zip(taus, grams, strict=True))
    torch.testing.assert_close(residual, torch.zeros_like(residual), atol=1e-5, rtol=0)
    one = regmean_matrix(taus[:1], grams[:1], ratio=0.3)  # one task: itself, whatever the ratio
    torch.testing.assert_close(one, taus[0], rtol=1e-4, atol=1e-5)
    r = reduce_non_diagonal(torch.ones(3, 3), 0.25)
    assert torch.equal(r, torch.full((3, 3), 0.25).fill_diagonal_(1.0))


def test_regmean_needs_one_gram_set_per_task():
    with pytest.raises(InputError, match="Gram matrices per task vector"):
        regmean_merge(_tvs(2), grams=[{}])


def _tiny_regmean_inputs(tiny, n_tasks: int = 2):
    from hfdistac.checkpoints import load_base, load_finetuned
    from hfdistac.task_vectors import compute_task_vector

    base = load_base(str(tiny.base))
    theta0 = base.weights
    tvs = [compute_task_vector(theta0, load_finetuned(str(getattr(tiny, n))).weights)
           for n in ("ft_a", "ft_b", "ft_c")[:n_tasks]]
    g = torch.Generator().manual_seed(7)
    batches = [[torch.randn(4, 3, 32, 32, generator=g), torch.randn(3, 3, 32, 32, generator=g)] for _ in tvs]
    return base, theta0, tvs, RegMeanData(base=theta0, vision_config=base.vision_config, batches=batches)


def test_the_gram_step_measures_the_layer_inputs(tiny):
    from hfdistac.checkpoints import build_vision_model

    base, theta0, tvs, data = _tiny_regmean_inputs(tiny)
    grams = compute_grams(tvs, data)
    assert len(grams) == 2 and "vision_model.encoder.layers.0.self_attn.q_proj.weight" in grams[0]
    assert "vision_model.encoder.layers.1.mlp.fc2.weight" in grams[1]
    vm = build_vision_model(base.vision_config, {k: theta0[k] + tvs[1][k] for k in theta0})
    with torch.no_grad():
        xs = [vm.encoder.layers[0].layer_norm1(vm.pre_layrnorm(vm.embeddings(p))) for p in data.batches[1]]
    x = torch.cat([t.reshape(-1, t.shape[-1]) for t in xs])
    torch.testing.assert_close(grams[1]["vision_model.encoder.layers.0.self_attn.q_proj.weight"], x.T @ x / len(x),
                               rtol=1e-4, atol=1e-5)


def test_regmean_plusplus_of_one_task_is_that_task(tiny):
    _, _, tvs, data = _tiny_regmean_inputs(tiny, n_tasks=1)
    data.batches = data.batches[:1]
    out = regmean_plusplus_merge(tvs, reduce_non_diagonal_ratio=0.95, data=data)
    for k, v in out.items():
        expected = torch.zeros_like(v) if k.startswith("vision_model.post_layernorm") else tvs[0][k]
        torch.testing.assert_close(v, expected, rtol=1e-3, atol=1e-5, msg=k)


def test_regmean_plusplus_differs_from_regmean_after_the_first_block(tiny):
    _, _, tvs, data = _tiny_regmean_inputs(tiny)
    plain = regmean_merge(tvs, grams=compute_grams(tvs, data))
    plus = regmean_plusplus_merge(tvs, data=data)
    first = "vision_model.encoder.layers.0.self_attn.q_proj.weight"
    second = "vision_model.encoder.layers.1.self_attn.q_proj.weight"
    assert not torch.allclose(plain[second], plus[second], atol=1e-7)
    # block 0 sees the merged embeddings (the mean) in RegMean++, each task's own in RegMean: close, not equal
    assert torch.allclose(plain[first], plus[first], atol=1e-2)


def test_regmean_runs_in_a_lent_tower_whatever_it_held(tiny):
    """The Gram step and RegMean++ may borrow the caller's (evaluation) tower: every weight they use is loaded
    into it first, so a tower holding other weights gives the same result as a fresh one."""
    import dataclasses

    from hfdistac.checkpoints import build_vision_model

    base, theta0, tvs, data = _tiny_regmean_inputs(tiny)
    lent = build_vision_model(base.vision_config, {k: v + 0.5 for k, v in theta0.items()})
    with_lent = dataclasses.replace(data, module=lent)
    for a, b in zip(compute_grams(tvs, data), compute_grams(tvs, with_lent), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    fresh, borrowed = regmean_plusplus_merge(tvs, data=data), regmean_plusplus_merge(tvs, data=with_lent)
    assert all(torch.equal(fresh[k], borrowed[k]) for k in fresh)


# ------------------------------------------------------------------------------------------------ end to end
def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_merge_all_includes_the_new_methods_with_cards(tiny, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "t", "base": str(tiny.base), "tasks": [
        {"name": n, "model": str(getattr(tiny, n)), "dataset": str(tiny.data)} for n in ("ft_a", "ft_b", "ft_c")]}))
    code, out, err = _run(capsys, "merge", recipe, "--method", "all", "--output", tmp_path / "out", "--no-progress",
                          "--alpha-grid", "0", "0.5", "--wudi-iterations", "20", "--regmean-examples", "16")
    assert code == 0, err
    for pretty in ("Iso-C", "Iso-CTS", "WUDI", "RegMean", "RegMean++"):
        assert f"| {pretty} " in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    by = {r["method"]: r for r in report["results"]}
    assert by["wudi"]["alpha"] == 1.0 and by["regmean"]["alpha"] == 1.0 and by["iso_c"]["alpha"] in (0.0, 0.5)
    assert by["iso_cts"]["params"] == {"common_space_fraction": 0.8}
    assert by["wudi"]["params"] == {"iterations": 20, "lr": 1e-5, "only_linear_layers": True, "fuse_qkv": True,
                                    "others": "zero"}
    assert by["regmean"]["params"] == {"reduce_non_diagonal_ratio": 0.95, "num_examples": 16}
    card = (tmp_path / "out" / "wudi" / "README.md").read_text()
    assert "WUDI" in card and "2503.08099" in card and "iterations" in card


@pytest.mark.parametrize("argv, message", [
    (["--method", "iso_cts", "--common-space-fraction", "1.5"], "--common-space-fraction must be >= 0 and <= 1"),
    (["--method", "wudi", "--wudi-iterations", "-3"], "--wudi-iterations must be >= 0"),
    (["--method", "wudi", "--wudi-lr", "nan"], "--wudi-lr must be > 0"),
    (["--method", "wudi", "--wudi-variant", "mine"], "invalid choice"),
    (["--method", "regmean", "--reduce-non-diagonal-ratio", "2"], "--reduce-non-diagonal-ratio must be >= 0"),
    (["--method", "regmean", "--regmean-examples", "0"], "--regmean-examples must be >= 1"),
    (["--method", "regmean", "--weights-only", "--alpha", "0.3"], "needs data"),
])
def test_new_method_flags_are_validated(tiny, tmp_path, capsys, argv, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "base": str(tiny.base),
                                      "tasks": [{"name": "a", "model": str(tiny.ft_a), "dataset": str(tiny.data)}]}))
    try:
        code, _, err = _run(capsys, "merge", recipe, *argv)
    except SystemExit as e:  # argparse's own refusal of a choice
        code, err = e.code, capsys.readouterr().err
    assert code == 2 and message in err
