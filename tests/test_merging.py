"""Merging methods: hand-computed cases, invariants, primitives alone, registry and input errors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from hfdistac.errors import InputError
from hfdistac.merging import MERGE_METHODS, MergeMethod, get_method, select_tall_lambdas
from hfdistac.merging.primitives import (
    check_task_vectors,
    consensus_mask,
    disjoint_mean,
    elect_sign,
    is_matrix_parameter,
    keep_count,
    magnitude_threshold,
    map_entries,
    polar_factor,
    tall_masks,
    trim_by_magnitude,
)
from hfdistac.merging.tsvm import components_per_task
from hfdistac.task_vectors import TaskVector, load_task_vector, save_task_vector


def T(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(actual) == list(expected)
    for k in expected:
        assert actual[k].dtype == torch.float32
        torch.testing.assert_close(actual[k], expected[k], rtol=1e-6, atol=1e-6, msg=k)


# Three tiny task vectors with two tensors each, used by several hand-computed cases.
TVS3 = [
    {"a": T(4.0, -1.0), "b": T(0.5, -3.0)},
    {"a": T(-2.0, 2.5), "b": T(1.0, 6.0)},
    {"a": T(-5.0, 0.1), "b": T(0.2, -0.3)},
]

# Four entries of three tasks for Consensus TA (one tensor "w").
CONS = [{"w": T(1.0, 0.2, 3.0, -1.0)}, {"w": T(1.0, 0.1, -3.0, 2.0)}, {"w": T(-0.5, 4.0, 0.1, 2.0)}]

# The data-free methods tested here (data-driven ones such as SAMerging have their own tests).
DATA_FREE = ["task_arithmetic", "ties", "consensus", "tsvm", "average", "iso_c", "iso_cts", "wudi"]


# ------------------------------------------------------------------------------------------ registry
def test_registry_names_and_metadata():
    assert list(MERGE_METHODS)[:8] == DATA_FREE
    for name, method in MERGE_METHODS.items():
        assert isinstance(method, MergeMethod) and method.name == name
        assert method.paper_url.startswith("https://arxiv.org/abs/")
        assert method.citation.startswith("@") and method.paper_url.rsplit("/", 1)[1] in method.citation
        assert method.needs_data is (name not in DATA_FREE)
        for f in dataclasses.fields(method.params_cls):
            assert f.metadata.get("help"), (name, f.name)
        method.params_cls()  # defaults are valid
    assert MERGE_METHODS["average"].uses_alpha is False
    assert all(MERGE_METHODS[n].uses_alpha for n in ["task_arithmetic", "ties", "consensus", "tsvm"])
    assert MERGE_METHODS["ties"].param_names() == ["density"]
    assert MERGE_METHODS["consensus"].param_names() == ["tall_lambdas", "k"]


def test_unknown_method_lists_valid_names():
    with pytest.raises(InputError) as err:
        get_method("dare")
    msg = str(err.value)
    assert "'dare'" in msg
    for name in MERGE_METHODS:
        assert name in msg
    assert get_method("tsvm") is MERGE_METHODS["tsvm"]


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(InputError, match=r"'dens'.*valid parameters: density"):
        MERGE_METHODS["ties"](TVS3, dens=0.3)
    with pytest.raises(InputError, match="valid parameters: none"):
        MERGE_METHODS["task_arithmetic"](TVS3, density=0.3)


@pytest.mark.parametrize("density", [0, 0.0, -0.1, 1.5, float("nan"), "0.2", True, None])
def test_density_outside_unit_interval_is_rejected(density):
    with pytest.raises(InputError, match=r"density must be a number in \(0, 1\]"):
        MERGE_METHODS["ties"](TVS3, density=density)
    with pytest.raises(InputError):
        magnitude_threshold([T(1.0)], density)


def test_consensus_parameter_errors():
    with pytest.raises(InputError, match="k=4 but only 3"):
        MERGE_METHODS["consensus"](CONS, k=4)
    with pytest.raises(InputError, match="k must be an integer >= 1"):
        MERGE_METHODS["consensus"](CONS, k=0)
    with pytest.raises(InputError, match=r"tall_lambdas\[1\] must be a finite number >= 0"):
        MERGE_METHODS["consensus"](CONS, tall_lambdas=[0.2, -0.1, 0.3])
    with pytest.raises(InputError, match="got 2 tall_lambdas for 3 task vectors"):
        MERGE_METHODS["consensus"](CONS, tall_lambdas=[0.2, 0.3])
    with pytest.raises(InputError, match="tall_lambdas must be"):
        MERGE_METHODS["consensus"](CONS, tall_lambdas="0.4")


def test_tsvm_parameter_errors():
    with pytest.raises(InputError, match="rank_fraction"):
        MERGE_METHODS["tsvm"](TVS3, rank_fraction=0.0)


def test_mismatched_task_vectors_name_first_differing_key():
    good = {"a": torch.zeros(2, 2), "b": torch.zeros(3)}
    with pytest.raises(InputError, match="'b' is missing from task vector 1"):
        MERGE_METHODS["task_arithmetic"]([good, {"a": torch.zeros(2, 2)}])
    with pytest.raises(InputError, match="'c' is only in task vector 1"):
        MERGE_METHODS["ties"]([good, {**good, "c": torch.zeros(1)}])
    with pytest.raises(InputError, match=r"first differing key 'a': \(2, 2\) vs \(2, 3\)"):
        MERGE_METHODS["tsvm"]([good, {"a": torch.zeros(2, 3), "b": torch.zeros(3)}])
    with pytest.raises(InputError, match="no task vectors"):
        MERGE_METHODS["average"]([])
    with pytest.raises(InputError, match="sequence"):
        MERGE_METHODS["average"](good)
    with pytest.raises(InputError, match="not a floating-point tensor"):
        MERGE_METHODS["average"]([{"a": torch.ones(2, dtype=torch.int64)}])


# ------------------------------------------------------------------------------------------ hand-computed
def test_task_arithmetic_hand_computed():
    close(MERGE_METHODS["task_arithmetic"](TVS3), {"a": T(-3.0, 1.6), "b": T(1.7, 2.7)})


def test_average_hand_computed():
    close(MERGE_METHODS["average"](TVS3), {"a": T(-1.0, 1.6 / 3), "b": T(1.7 / 3, 0.9)})


def test_ties_hand_computed():
    # density 0.5 of 4 entries keeps the 2 largest |entries| of each WHOLE task vector (across a and b):
    #   task 1 |.| = 4, 1, 0.5, 3    -> threshold 3    -> a=(4, 0),  b=(0, -3)
    #   task 2 |.| = 2, 2.5, 1, 6    -> threshold 2.5  -> a=(0, 2.5), b=(0, 6)
    #   task 3 |.| = 5, 0.1, 0.2, 0.3 -> threshold 0.3 -> a=(-5, 0), b=(0, -0.3)
    # elected signs: a0 sum -1 -> -, a1 +, b0 sum 0 -> +, b1 sum 2.7 -> +
    # disjoint means: a0 = -5 (only task 3 agrees), a1 = 2.5, b0 = 0 (nobody), b1 = 6
    close(MERGE_METHODS["ties"](TVS3, density=0.5), {"a": T(-5.0, 2.5), "b": T(0.0, 6.0)})
    # density 0.2: round(0.8) = 1 entry per task: 4, 6, -5 -> a0: 4-5 -> -, mean -5; b1: 6
    close(MERGE_METHODS["ties"](TVS3), {"a": T(-5.0, 0.0), "b": T(0.0, 6.0)})


def test_ties_agreeing_entries_are_averaged():
    tvs = [{"w": T(2.0, -1.0, 4.0)}, {"w": T(4.0, -3.0, -1.0)}]
    # density 1 keeps everything; signs: +, -, + ; w0 = (2+4)/2, w1 = (-1-3)/2, w2 = 4 (only task 1 agrees)
    close(MERGE_METHODS["ties"](tvs, density=1.0), {"w": T(3.0, -2.0, 4.0)})


def test_consensus_hand_computed():
    # Σ = (1.5, 4.3, 0.1, 3).  With λ = 0.5:
    #   task 1: others = (0.5, 4.1, -2.9, 4)  -> m1 = (1, 0, 1, 0)
    #   task 2: others = (0.5, 4.2, 3.1, 1)   -> m2 = (1, 0, 1, 1)
    #   task 3: others = (2, 0.3, 0, 1)       -> m3 = (0, 1, 1, 1)
    # counts = (2, 1, 3, 2)
    close(MERGE_METHODS["consensus"](CONS, tall_lambdas=0.5, k=2), {"w": T(1.5, 0.0, 0.1, 3.0)})
    close(MERGE_METHODS["consensus"](CONS, tall_lambdas=[0.5, 0.5, 0.5], k=3), {"w": T(0.0, 0.0, 0.1, 0.0)})
    # λ_1 = 0.01 adds entry 2 to m1 (0.2 > 0.041): counts = (2, 2, 3, 2) -> everything kept
    close(MERGE_METHODS["consensus"](CONS, tall_lambdas=[0.01, 0.5, 0.5], k=2), {"w": T(1.5, 4.3, 0.1, 3.0)})


def test_tsvm_hand_computed():
    # 2 tasks, 2x2 matrices -> k = 1 component each.
    #   τ1 = 1·e1 e1ᵀ;   τ2 = 2·u e2ᵀ with u = (1, 1)/√2 (at 45°).
    # U = [e1, u] is not orthogonal; its nearest orthogonal matrix rotates both columns apart symmetrically
    # to -22.5° and 67.5°. V = [e1, e2] is already orthogonal. So
    #   τ = 1·(cos22.5, -sin22.5) e1ᵀ + 2·(sin22.5, cos22.5) e2ᵀ.
    # The bias (not a matrix) is averaged.
    r = 1 / math.sqrt(2)
    tvs = [{"w": torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "bias": T(1.0, 2.0)},
           {"w": torch.tensor([[0.0, 2 * r], [0.0, 2 * r]]), "bias": T(3.0, -2.0)}]
    c, s = math.cos(math.pi / 8), math.sin(math.pi / 8)
    close(MERGE_METHODS["tsvm"](tvs), {"w": torch.tensor([[c, 2 * s], [-s, 2 * c]]), "bias": T(2.0, 0.0)})


# ------------------------------------------------------------------------------------------ invariants
@pytest.mark.parametrize("name", ["task_arithmetic", "average", "tsvm"])
def test_one_task_is_reproduced(name):
    g = torch.Generator().manual_seed(0)
    tv = {"w": torch.randn(6, 4, generator=g), "b": torch.randn(4, generator=g), "c": torch.randn(2, 3, 2, generator=g)}
    merged = MERGE_METHODS[name]([tv])
    for k in tv:
        torch.testing.assert_close(merged[k], tv[k], rtol=1e-5, atol=1e-5)
        assert merged[k] is not tv[k]


def test_merging_does_not_modify_inputs():
    tvs = [{k: v.clone() for k, v in tv.items()} for tv in TVS3]
    for name in DATA_FREE:
        MERGE_METHODS[name](tvs)
        for tv, orig in zip(tvs, TVS3, strict=True):
            assert all(torch.equal(tv[k], orig[k]) for k in orig)


def test_ties_density_one_agreeing_signs_is_mean():
    g = torch.Generator().manual_seed(1)
    tvs = [{"w": torch.rand(5, 3, generator=g) + 0.1, "b": -(torch.rand(7, generator=g) + 0.1)} for _ in range(3)]
    merged = MERGE_METHODS["ties"](tvs, density=1.0)
    mean = MERGE_METHODS["average"](tvs)
    close(merged, mean)


def test_consensus_masks_binary_and_k_respected():
    g = torch.Generator().manual_seed(2)
    stacked = torch.randn(4, 50, generator=g)
    masks = tall_masks(stacked, [0.3, 0.4, 0.5, 0.6])
    assert masks.dtype == torch.bool and masks.shape == stacked.shape
    for k in range(1, 5):
        c = consensus_mask(masks, k)
        assert c.dtype == torch.bool
        assert torch.equal(c, masks.to(torch.int64).sum(0) >= k)
        tvs = [{"w": stacked[t]} for t in range(4)]
        merged = MERGE_METHODS["consensus"](tvs, tall_lambdas=[0.3, 0.4, 0.5, 0.6], k=k)["w"]
        total = stacked[0] + stacked[1] + stacked[2] + stacked[3]
        torch.testing.assert_close(merged, torch.where(c, total, 0.0))
    # k = 1 with λ = 0 keeps every entry where some task is non-zero: plain task arithmetic here
    tvs = [{"w": stacked[t]} for t in range(4)]
    close(MERGE_METHODS["consensus"](tvs, tall_lambdas=0.0, k=1), MERGE_METHODS["task_arithmetic"](tvs))


def test_tsvm_orthogonal_low_rank_tasks_sum_exactly():
    # T = 3 tasks, 9x6 matrices -> k = floor(6/3) = 2; disjoint column/row subspaces are mutually orthogonal.
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(9, 9, generator=g, dtype=torch.float64))
    r, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    svals = [(5.0, 2.0), (3.0, 1.0), (4.0, 0.5)]
    tvs = []
    for t, (s1, s2) in enumerate(svals):
        u, v = q[:, 2 * t:2 * t + 2], r[:, 2 * t:2 * t + 2]
        tvs.append({"w": (u @ torch.diag(torch.tensor([s1, s2], dtype=torch.float64)) @ v.T).float()})
    assert components_per_task((9, 6), 3) == 2
    merged = MERGE_METHODS["tsvm"](tvs)["w"]
    expected = tvs[0]["w"] + tvs[1]["w"] + tvs[2]["w"]
    torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-5)


def test_tsvm_runs_where_it_is_told_and_returns_cpu_tensors():
    # --device reaches TSV-M (the pipeline passes it to methods flagged uses_device); here the CPU by name.
    g = torch.Generator().manual_seed(5)
    tvs = [{"w": torch.randn(12, 8, generator=g), "b": torch.randn(8, generator=g)} for _ in range(3)]
    assert MERGE_METHODS["tsvm"].uses_device
    on_cpu = MERGE_METHODS["tsvm"](tvs, device="cpu")
    default = MERGE_METHODS["tsvm"](tvs)
    assert all(v.device.type == "cpu" for v in on_cpu.values())
    assert all(torch.equal(on_cpu[k], default[k]) for k in default)


def test_tsvm_small_matrices_keep_at_least_one_component():
    assert components_per_task((768, 3072), 8) == 96
    assert components_per_task((50, 768), 8) == 6
    assert components_per_task((5, 32), 8) == 1
    assert components_per_task((768, 768), 8, rank_fraction=0.5) == 384
    g = torch.Generator().manual_seed(4)
    tvs = [{"w": torch.randn(3, 5, generator=g)} for _ in range(4)]
    assert torch.isfinite(MERGE_METHODS["tsvm"](tvs)["w"]).all()


# ------------------------------------------------------------------------------------------ primitives
def test_keep_count():
    assert keep_count(10, 0.3) == 3
    assert keep_count(4, 0.2) == 1
    assert keep_count(3, 0.01) == 1
    assert keep_count(7, 1.0) == 7


def test_magnitude_threshold_hand_computed():
    # |.| over both tensors: 4, 1, 0.5, 3, 2, 0.25 ; keep round(0.5·6) = 3 -> the 3rd largest is 2
    assert magnitude_threshold({"a": T(4.0, -1.0, 0.5), "b": T(3.0, -2.0, 0.25)}, 0.5) == 2.0
    assert magnitude_threshold([T(4.0, -1.0), T(3.0)], 1.0) == 0.0  # everything kept
    assert magnitude_threshold([T(-7.0, 1.0, 2.0)], 0.01) == 7.0


def test_magnitude_threshold_matches_sort():
    g = torch.Generator().manual_seed(5)
    parts = [torch.randn(1000, generator=g) * 1e-3, torch.randn(37, 11, generator=g), torch.zeros(200),
             torch.randn(300, generator=g).round()]  # zeros and many exact ties
    flat = torch.cat([p.reshape(-1) for p in parts]).abs()
    desc = flat.sort(descending=True).values
    for density in [0.001, 0.05, 0.2, 0.5, 0.77, 0.95, 0.99]:
        k = keep_count(flat.numel(), density)
        thr = magnitude_threshold(parts, density)
        assert thr == desc[k - 1].item(), density
        assert int((flat >= thr).sum()) >= k
    bf16 = [p.to(torch.bfloat16) for p in parts]
    flat16 = torch.cat([p.reshape(-1).float() for p in bf16]).abs().sort(descending=True).values
    assert magnitude_threshold(bf16, 0.2) == flat16[keep_count(flat16.numel(), 0.2) - 1].item()


def test_magnitude_threshold_rejects_non_finite():
    with pytest.raises(InputError, match="non-finite"):
        magnitude_threshold([T(1.0, float("nan"))], 0.5)
    with pytest.raises(InputError, match="non-finite"):
        magnitude_threshold([T(1.0, float("-inf"))], 0.5)


def test_trim_by_magnitude():
    assert torch.equal(trim_by_magnitude(T(3.0, -2.0, 1.0, -3.0), 2.0), T(3.0, -2.0, 0.0, -3.0))
    assert torch.equal(trim_by_magnitude(T(0.0, -1.0), 0.0), T(0.0, -1.0))


def test_elect_sign_zero_is_positive():
    trimmed = torch.tensor([[1.0, -2.0, 3.0, 0.0], [-1.0, 1.0, -4.0, 0.0]])
    assert torch.equal(elect_sign(trimmed), T(1.0, -1.0, -1.0, 1.0))


def test_disjoint_mean():
    trimmed = torch.tensor([[1.0, -2.0, 3.0, 0.0, 0.0], [5.0, 4.0, -4.0, 0.0, -1.0], [2.0, -6.0, 0.0, 0.0, 0.0]])
    sign = T(1.0, -1.0, -1.0, 1.0, 1.0)
    # (1+5+2)/3, (-2-6)/2, -4/1, 0 (no entries), 0 (only disagreeing entry)
    assert torch.equal(disjoint_mean(trimmed, sign), T(8.0 / 3, -4.0, -4.0, 0.0, 0.0))


def test_tall_masks_strict_and_per_task_lambda():
    stacked = torch.tensor([[1.0, 1.0], [2.0, 0.5]])
    # task 1 others = (2, 0.5); task 2 others = (1, 1)
    # λ = 0.5: task1 1 > 1 false (strict), 1 > 0.25 true; task2 2 > 0.5 true, 0.5 > 0.5 false (strict)
    assert torch.equal(tall_masks(stacked, [0.5, 0.5]), torch.tensor([[False, True], [True, False]]))
    assert torch.equal(tall_masks(stacked, [0.25, 0.4]), torch.tensor([[True, True], [True, True]]))
    with pytest.raises(InputError, match="got 1 TALL-mask lambdas for 2"):
        tall_masks(stacked, [0.5])


def test_consensus_mask():
    masks = torch.tensor([[True, True, False], [True, False, False], [True, True, False]])
    assert torch.equal(consensus_mask(masks, 2), torch.tensor([True, True, False]))
    assert torch.equal(consensus_mask(masks, 3), torch.tensor([True, False, False]))


def test_polar_factor():
    r = 1 / math.sqrt(2)
    c, s = math.cos(math.pi / 8), math.sin(math.pi / 8)
    torch.testing.assert_close(polar_factor(torch.tensor([[1.0, r], [0.0, r]])), torch.tensor([[c, s], [-s, c]]))
    # already orthonormal columns are unchanged; a scaled one is normalised
    torch.testing.assert_close(polar_factor(torch.tensor([[3.0, 0.0], [0.0, 0.5], [0.0, 0.0]])),
                               torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    g = torch.Generator().manual_seed(6)
    p = polar_factor(torch.randn(8, 3, generator=g))
    torch.testing.assert_close(p.T @ p, torch.eye(3), rtol=1e-5, atol=1e-5)
    p = polar_factor(torch.randn(3, 8, generator=g))  # wide: orthonormal rows
    torch.testing.assert_close(p @ p.T, torch.eye(3), rtol=1e-5, atol=1e-5)


def test_map_entries_chunks_are_seamless():
    g = torch.Generator().manual_seed(8)
    stacked = torch.randn(3, 7, 5, generator=g)

    def fn(x):
        return disjoint_mean(x, elect_sign(x))

    whole = fn(stacked.reshape(3, -1)).reshape(7, 5)
    for chunk in (1, 4, 35, 1000):
        assert torch.equal(map_entries(fn, stacked, chunk=chunk), whole)


def test_is_matrix_parameter():
    assert is_matrix_parameter(torch.zeros(50, 768))
    assert is_matrix_parameter((768, 3072))
    assert not is_matrix_parameter(torch.zeros(768))
    assert not is_matrix_parameter((768, 3, 32, 32))
    assert not is_matrix_parameter(())


# ------------------------------------------------------------------------------------------ Consensus λ selection
def test_select_tall_lambdas_by_validation_score():
    # Score = -(entries kept); entries of Σ are all non-zero, so this counts the mask.
    # Ratios |τ_t| / |Σ_{s≠t} τ_s|: task 1 (2, .049, 1.03, .25); task 2 (2, .024, .97, 2); task 3 (.25, 13, inf, 2)
    #   kept at λ = 0.2 / 0.5 / 1.0:  task 1: 3 / 2 / 2 -> tie 0.5 vs 1.0 -> smaller 0.5
    #                                  task 2: 3 / 3 / 2 -> 1.0
    #                                  task 3: 4 / 3 / 3 -> tie -> 0.5
    seen = []

    def evaluate(t, tv):
        w = tv["w"]
        seen.append((t, w.clone()))
        return -float((w != 0).sum())

    chosen = select_tall_lambdas(CONS, evaluate, candidates=[1.0, 0.2, 0.5])
    assert chosen == [0.5, 1.0, 0.5]
    assert [t for t, _ in seen] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # task 1 at λ = 0.2 (first tried): m1 = (1, 0, 1, 1) applied to Σ = (1.5, 4.3, 0.1, 3)
    torch.testing.assert_close(seen[0][1], T(1.5, 0.0, 0.1, 3.0))


def test_select_tall_lambdas_ties_go_to_smaller():
    assert select_tall_lambdas(CONS, lambda t, tv: 0.5) == [0.2, 0.2, 0.2]
    with pytest.raises(InputError, match="candidates"):
        select_tall_lambdas(CONS, lambda t, tv: 0.5, candidates=[])
    with pytest.raises(InputError, match="candidate lambda must be a finite number >= 0"):
        select_tall_lambdas(CONS, lambda t, tv: 0.5, candidates=[0.2, -1.0])


# ------------------------------------------------------------------------------------------ lazy inputs
def test_lazy_safetensors_inputs_match_in_memory(tmp_path):
    g = torch.Generator().manual_seed(7)
    shapes = {"vision_model.pos": (5, 8), "vision_model.q.weight": (8, 8), "vision_model.q.bias": (8,),
              "vision_model.patch.weight": (8, 3, 2, 2)}
    mem = [TaskVector({k: torch.randn(s, generator=g) for k, s in shapes.items()}) for _ in range(3)]
    # bf16 storage too: computation happens in float32 whatever the stored dtype
    mem[2] = TaskVector({k: v.to(torch.bfloat16) for k, v in mem[2].items()})
    lazy = [load_task_vector(save_task_vector(tv, tmp_path / f"t{i}.safetensors")) for i, tv in enumerate(mem)]
    assert all(tv.is_lazy for tv in lazy)
    assert sorted(check_task_vectors(lazy)) == sorted(mem[0])  # safetensors stores keys sorted
    params = {"ties": {"density": 0.3}, "consensus": {"tall_lambdas": [0.2, 0.4, 0.6]}}
    for name in DATA_FREE:
        method = MERGE_METHODS[name]
        a = method(mem, **params.get(name, {}))
        b = method(lazy, **params.get(name, {}))
        assert sorted(a) == sorted(b) == sorted(shapes)
        for k in a:
            assert a[k].dtype == torch.float32
            assert torch.equal(a[k], b[k]), (name, k)
    assert select_tall_lambdas(lazy, lambda t, tv: float(tv["vision_model.q.weight"].sum())) == \
        select_tall_lambdas(mem, lambda t, tv: float(tv["vision_model.q.weight"].sum()))


def test_lazy_shape_mismatch_detected_from_header(tmp_path):
    a = load_task_vector(save_task_vector(TaskVector({"w": torch.zeros(2, 3)}), tmp_path / "a.safetensors"))
    b = load_task_vector(save_task_vector(TaskVector({"w": torch.zeros(3, 2)}), tmp_path / "b.safetensors"))
    with pytest.raises(InputError, match=r"'w': \(2, 3\) vs \(3, 2\)"):
        MERGE_METHODS["average"]([a, b])
