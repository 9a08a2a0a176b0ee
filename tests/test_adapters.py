"""PEFT LoRA adapters as task sources: τ = (lora_alpha / r)·B·A equals peft's merge_and_unload() − θ₀."""

from __future__ import annotations

import json

import pytest
import torch

from hfdistac.errors import CheckpointError

peft = pytest.importorskip("peft")  # a test dependency (pyproject's [test] extra): CI always has it


def _adapter(base, path, **lora):
    """A LoRA of the base's vision tower with random A and B (B starts at zero in peft), saved to ``path``;
    returns the τ that peft's own merge gives."""
    from transformers import CLIPVisionModel

    from hfdistac.checkpoints import VISION_PREFIX

    torch.manual_seed(0)
    model = peft.get_peft_model(CLIPVisionModel.from_pretrained(base), peft.LoraConfig(**lora))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.05)
    model.save_pretrained(path)
    theta0 = CLIPVisionModel.from_pretrained(base).state_dict()
    merged = model.merge_and_unload().state_dict()
    return {VISION_PREFIX + k.removeprefix(VISION_PREFIX): merged[k] - theta0[k] for k in theta0}


@pytest.mark.parametrize("extra", [{}, {"use_rslora": True}])
def test_lora_task_vector_equals_peft_merge(tiny, tmp_path, extra):
    from hfdistac.checkpoints import load_finetuned, read_vision_weights

    want = _adapter(tiny.base, tmp_path / "lora", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "fc1"],
                    rank_pattern={"fc1": 2}, alpha_pattern={"v_proj": 16}, **extra)
    ft = load_finetuned(str(tmp_path / "lora"))
    theta0 = read_vision_weights(tiny.base)
    assert set(ft.weights) == set(theta0)
    worst = max(float((ft.weights[k] - theta0[k] - want[k]).norm() / max(want[k].norm(), 1e-12))
                for k in want if want[k].abs().max() > 0)
    assert worst < 1e-6
    assert all(torch.equal(ft.weights[k], theta0[k]) for k in theta0 if not want[k].abs().max() > 0)
    adapted = [k for k in want if want[k].abs().max() > 0]
    assert adapted and all(k.endswith(("q_proj.weight", "v_proj.weight", "fc1.weight")) for k in adapted)


def test_lora_sources_merge_like_full_checkpoints(tiny, tmp_path):
    """An adapter goes wherever a model goes: here a merge recipe beside a full fine-tuned tower."""
    import yaml

    from hfdistac.merge_eval import MergeConfig, run_merge

    _adapter(tiny.base, tmp_path / "lora", r=4, lora_alpha=8, target_modules=["q_proj", "fc2"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "lora", "base": str(tiny.base),
                                      "tasks": [{"name": "a", "model": str(tiny.ft_a)},
                                                {"name": "lora", "model": str(tmp_path / "lora")}]}))
    report = run_merge(MergeConfig(recipe=str(recipe), method="task_arithmetic", alpha=0.5, weights_only=True,
                                   output=str(tmp_path / "out"), progress=False))
    assert [s["name"] for s in report["sources"]] == ["a", "lora"] and report["sources"][1]["norm"] > 0


@pytest.mark.parametrize("change, message", [({"use_dora": True}, "DoRA"), ({"peft_type": "IA3"}, "only LoRA"),
                                             ({"modules_to_save": ["post_layernorm"]}, "replaces whole modules"),
                                             ({"init_lora_weights": "pissa"}, "rewrites the base"),
                                             ({"base_model_name_or_path": "/nowhere/base"}, "cannot be found")])
def test_refused_adapters_say_why(tiny, tmp_path, change, message):
    from hfdistac.checkpoints import load_finetuned

    _adapter(tiny.base, tmp_path / "lora", r=2, lora_alpha=4, target_modules=["q_proj"])
    cfg_path = tmp_path / "lora" / "adapter_config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), **change}))
    with pytest.raises(CheckpointError, match=message) as err:
        load_finetuned(str(tmp_path / "lora"))
    assert err.value.hint


def test_inspect_reads_an_adapter(tiny, tmp_path, capsys):
    from hfdistac.cli.main import main

    _adapter(tiny.base, tmp_path / "lora", r=4, lora_alpha=8, target_modules=["q_proj", "fc2"])
    out = tmp_path / "inspect.json"
    assert main(["inspect", str(tiny.ft_a), str(tmp_path / "lora"), "--base", str(tiny.base), "--data",
                 str(tiny.data), str(tiny.data), "--limit", "8", "--json", str(out), "--no-progress"]) == 0
    models = json.loads(out.read_text())["models"]
    assert [m["name"] for m in models] == ["ft_a", "lora"] and models[1]["norm"] > 0


@pytest.mark.parametrize("key", ["(a+)+$", "(x|xx)*y", "((q_proj)*)*", "(" * 300])
def test_an_adapters_patterns_cannot_hang_the_run(tiny, tmp_path, key):
    """rank_pattern/alpha_pattern keys are untrusted regular expressions: one that could backtrack exponentially
    (or is overlong, or invalid) is refused at once, naming the key; module-name keys work as peft reads them."""
    from hfdistac.checkpoints import load_finetuned

    _adapter(tiny.base, tmp_path / "lora", r=2, lora_alpha=4, target_modules=["q_proj"])
    cfg_path = tmp_path / "lora" / "adapter_config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "rank_pattern": {key: 2}}))
    with pytest.raises(CheckpointError, match="pattern"):  # refused before any matching
        load_finetuned(str(tmp_path / "lora"))


@pytest.mark.parametrize("where", ["weights", "lora_alpha"])
def test_non_finite_adapters_are_refused_like_full_checkpoints(tiny, tmp_path, where):
    """NaN in lora_A/lora_B or a non-finite lora_alpha used to pass inspect (which then recommended
    --target-norm nan); refused as a full checkpoint's non-finite weights are."""
    from safetensors.torch import load_file, save_file

    from hfdistac.checkpoints import load_finetuned

    _adapter(tiny.base, tmp_path / "lora", r=2, lora_alpha=4, target_modules=["q_proj"])
    if where == "weights":
        path = tmp_path / "lora" / "adapter_model.safetensors"
        w = load_file(str(path))
        first = next(k for k in w if "lora_A" in k)
        w[first] = torch.full_like(w[first], float("nan"))
        save_file(w, str(path))
    else:
        cfg_path = tmp_path / "lora" / "adapter_config.json"
        cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "lora_alpha": float("inf")}))
    with pytest.raises(CheckpointError, match="non-finite"):
        load_finetuned(str(tmp_path / "lora"))


def test_an_adapter_naming_another_base_is_refused(tiny, tmp_path):
    """An adapter's τ is θ_named-base + s·B·A − θ₀: with another named base than the recipe's, the difference of the
    two bases would be merged as if it were the task. Bases are compared by content (a Hub copy of the same base
    is the same base)."""
    import shutil

    import yaml

    from hfdistac.merge_eval import MergeConfig, run_merge
    from tests._fixtures_models import make_base

    other = make_base(tmp_path / "other-base", seed=7)  # same architecture, other weights
    copy = tmp_path / "base-copy"
    shutil.copytree(tiny.base, copy)  # the same weights in another folder
    _adapter(tiny.base, tmp_path / "lora", r=2, lora_alpha=4, target_modules=["q_proj"])
    cfg_path = tmp_path / "lora" / "adapter_config.json"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format": "hfdistac.recipe.v1", "name": "lora", "base": str(tiny.base),
                                      "tasks": [{"name": "a", "model": str(tiny.ft_a)},
                                                {"name": "lora", "model": str(tmp_path / "lora")}]}))
    config = MergeConfig(recipe=str(recipe), method="task_arithmetic", alpha=0.5, weights_only=True,
                         progress=False)
    for named, refused in ((other, True), (copy, False)):
        cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "base_model_name_or_path": str(named)}))
        if refused:
            with pytest.raises(CheckpointError, match="adapter .* was made for the base") as err:
                run_merge(config)
            assert "base_model_name_or_path" in err.value.hint
        else:
            assert run_merge(config)["sources"][1]["norm"] > 0
