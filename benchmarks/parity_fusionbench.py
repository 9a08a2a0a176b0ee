"""Parity of hfdistac's Iso-C, Iso-CTS, WUDI, RegMean and RegMean++ with FusionBench's functions.

Run it in a separate environment that has FusionBench (it is never a dependency of hfdistac)::

    python -m venv fbvenv && fbvenv/bin/pip install torch==2.13.0 && fbvenv/bin/pip install fusion-bench==0.2.33
    fbvenv/bin/python benchmarks/parity_fusionbench.py            # from the repository root

Random task vectors with the keys and (scaled-down) shapes of a HF ``CLIPVisionModel`` (hidden 64, MLP 256,
2 blocks, 4 tasks), float64 references where both sides allow it. Prints one row per method: the largest
absolute difference, and the relative L2 difference ‖ours − theirs‖ / ‖theirs‖ over all tensors.

``--write tests/data/fusionbench_parity.safetensors`` instead stores FusionBench's outputs, with the inputs
they were computed from, at a smaller size (hidden 32, MLP 64, 2 blocks, 3 tasks, 16-px images): the file
``tests/test_parity_fusionbench.py`` compares hfdistac with on every test run, without FusionBench installed.

* Iso-C / Iso-CTS: ``fusion_bench.method.isotropic_merging.iso_utils.iso_c / iso_cts`` (accelerator="cpu").
* WUDI: ``fusion_bench.method.wudi.wudi_merging`` (autograd on the literal loss) against ours with
  ``--wudi-variant fusionbench``; and the official variant (fused q/k/v, other tensors at θ₀) against FusionBench's
  function applied to the fused ``in_proj`` matrices, which is the official code's computation.
* RegMean: ``fusion_bench.method.regmean.regmean.merging_with_regmean_weights`` on the full weights θ₀ + τ_t
  with the Gram matrices of our Gram step, against θ₀ + ours.
* RegMean++: FusionBench's block loop driven step by step with its own functions (``merging_with_regmean_weights``
  and its hook), with the block output taken as transformers 5 returns it (FusionBench's ``[0]`` assumes
  transformers 4's tuple), against ours.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HIDDEN, MLP, LAYERS, TASKS, IMAGE = 64, 256, 2, 4, 32  # the printed table
#: The pinned reference file's sizes (small: the file is committed).
REFERENCE_SIZES = {"hidden": 32, "mlp": 64, "layers": 2, "tasks": 3, "image": 16}
WUDI_ITERATIONS = 100
REGMEAN_RATIO = 0.95
ISO_CTS_FRACTIONS = (0.8, 0.5)


def _keys(hidden: int = HIDDEN, mlp: int = MLP, layers: int = LAYERS, image: int = IMAGE) -> dict[str, tuple[int, ...]]:
    shapes = {"vision_model.embeddings.class_embedding": (hidden,),
              "vision_model.embeddings.patch_embedding.weight": (hidden, 3, 8, 8),
              "vision_model.embeddings.position_embedding.weight": ((image // 8) ** 2 + 1, hidden),
              "vision_model.pre_layrnorm.weight": (hidden,), "vision_model.pre_layrnorm.bias": (hidden,)}
    for i in range(layers):
        p = f"vision_model.encoder.layers.{i}."
        for proj in ("q", "k", "v", "out"):
            shapes[f"{p}self_attn.{proj}_proj.weight"] = (hidden, hidden)
            shapes[f"{p}self_attn.{proj}_proj.bias"] = (hidden,)
        shapes.update({f"{p}layer_norm1.weight": (hidden,), f"{p}layer_norm1.bias": (hidden,),
                       f"{p}mlp.fc1.weight": (mlp, hidden), f"{p}mlp.fc1.bias": (mlp,),
                       f"{p}mlp.fc2.weight": (hidden, mlp), f"{p}mlp.fc2.bias": (hidden,),
                       f"{p}layer_norm2.weight": (hidden,), f"{p}layer_norm2.bias": (hidden,)})
    shapes.update({"vision_model.post_layernorm.weight": (hidden,), "vision_model.post_layernorm.bias": (hidden,)})
    return shapes


def _task_vectors(seed: int = 0, tasks: int = TASKS, **sizes) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{k: 0.01 * torch.randn(s, generator=g) for k, s in _keys(**sizes).items()} for _ in range(tasks)]


def _diff(ours: dict, theirs: dict) -> tuple[float, float]:
    keys = list(theirs)
    assert set(ours) >= set(keys), set(keys) - set(ours)
    max_abs = max(float((ours[k].double() - theirs[k].double()).abs().max()) for k in keys)
    num = sum(float((ours[k].double() - theirs[k].double()).pow(2).sum()) for k in keys) ** 0.5
    den = sum(float(theirs[k].double().pow(2).sum()) for k in keys) ** 0.5
    return max_abs, num / den


def _fused_qkv(tv: dict, layers: int) -> dict[str, torch.Tensor]:
    """Per block, q/k/v weights stacked into one ``in_proj`` matrix (the official WUDI code's layout)."""
    return {f"vision_model.encoder.layers.{i}.in_proj": torch.cat(
        [tv[f"vision_model.encoder.layers.{i}.self_attn.{x}_proj.weight"] for x in "qkv"]) for i in range(layers)}


def regmean_inputs(tasks: int = TASKS, hidden: int = HIDDEN, mlp: int = MLP, layers: int = LAYERS, image: int = IMAGE):
    """``(RegMeanData, θ₀)``: a random HF tower θ₀ and two batches of random images per task."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from hfdistac.checkpoints import vision_state
    from hfdistac.merging.regmean import RegMeanData

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers, num_attention_heads=4,
                           image_size=image, patch_size=8)
    theta0 = vision_state(CLIPVisionModel(cfg))
    g = torch.Generator().manual_seed(1)
    batches = [[torch.randn(4 if image < 32 else 8, 3, image, image, generator=g) for _ in range(2)]
               for _ in range(tasks)]
    return RegMeanData(base=theta0, vision_config=cfg, batches=batches), theta0


def hfdistac_outputs(tvs, data, layers: int) -> dict[str, dict[str, torch.Tensor]]:
    """hfdistac's side of every comparison, in the form FusionBench's side takes (full weights for RegMean)."""
    from hfdistac.merging.iso import iso_c_merge, iso_cts_merge
    from hfdistac.merging.regmean import compute_grams, regmean_merge, regmean_plusplus_merge
    from hfdistac.merging.wudi import wudi_merge

    theta0 = data.base
    out = {"iso_c": iso_c_merge(tvs)}
    for f in ISO_CTS_FRACTIONS:
        out[f"iso_cts_{f}"] = iso_cts_merge(tvs, f)
    out["wudi_fusionbench"] = wudi_merge(tvs, iterations=WUDI_ITERATIONS, only_linear_layers=False, fuse_qkv=False,
                                         others="mean")
    out["wudi_official_fused"] = _fused_qkv(wudi_merge(tvs, iterations=WUDI_ITERATIONS), layers)
    merged = regmean_merge(tvs, REGMEAN_RATIO, grams=compute_grams(tvs, data))
    out["regmean"] = {k: theta0[k] + merged[k] for k in theta0}
    plusplus = regmean_plusplus_merge(tvs, REGMEAN_RATIO, data=data)
    out["regmean_plusplus"] = {k: theta0[k] + v for k, v in plusplus.items()}
    return out


def fusionbench_outputs(tvs, data, layers: int) -> dict[str, dict[str, torch.Tensor]]:
    """FusionBench's functions on the same inputs (needs fusion-bench installed)."""
    from fusion_bench.method.isotropic_merging.iso_utils import iso_c, iso_cts
    from fusion_bench.method.regmean.regmean import merging_with_regmean_weights
    from fusion_bench.method.wudi import wudi_merging

    from hfdistac.merging.regmean import compute_grams

    out = {"iso_c": iso_c([dict(t) for t in tvs], accelerator="cpu")}
    for f in ISO_CTS_FRACTIONS:
        out[f"iso_cts_{f}"] = iso_cts([dict(t) for t in tvs], f, accelerator="cpu")
    theirs = wudi_merging([dict(t) for t in tvs], accelerator="cpu", iter_num=WUDI_ITERATIONS)
    out["wudi_fusionbench"] = {k: v.detach() for k, v in theirs.items()}
    # the official variant: FusionBench's function on the fused in_proj matrices is the official computation
    out["wudi_official_fused"] = {k: v.detach() for k, v in wudi_merging(
        [_fused_qkv(t, layers) for t in tvs], accelerator="cpu", iter_num=WUDI_ITERATIONS).items()}
    theta0 = data.base
    grams = compute_grams(tvs, data)
    params = {k: [theta0[k] + t[k] for t in tvs] for k in theta0}
    modules = [{k.removesuffix(".weight"): v for k, v in g.items()} for g in grams]
    out["regmean"] = merging_with_regmean_weights(params, modules, reduce_non_diagonal_ratio=REGMEAN_RATIO)
    out["regmean_plusplus"] = _plusplus_fusionbench(tvs, data, theta0, REGMEAN_RATIO)
    return out


#: What each row of the printed table compares.
ROW_NAMES = {"iso_c": "iso_c", **{f"iso_cts_{f}": f"iso_cts (fraction {f})" for f in ISO_CTS_FRACTIONS},
             "wudi_fusionbench": f"wudi, fusionbench variant ({WUDI_ITERATIONS} it.)",
             "wudi_official_fused": f"wudi, official variant: fused q/k/v ({WUDI_ITERATIONS} it.)",
             "regmean": "regmean (θ₀ + τ* vs FusionBench on θ_t)",
             "regmean_plusplus": "regmean++ (FusionBench's block loop)"}


def _plusplus_fusionbench(tvs, data, theta0, ratio):
    """FusionBench's RegMeanAlgorithmPlusPlus.run, step by step, on HF towers θ₀ + τ_t (its own functions)."""
    from collections import defaultdict

    from fusion_bench.method.regmean_plusplus.clip_regmean_plusplus import RegMeanAlgorithmForCLIPPlusPlus
    from fusion_bench.method.regmean_plusplus.regmean_plusplus import merging_with_regmean_weights

    from hfdistac.checkpoints import build_vision_model

    algo = object.__new__(RegMeanAlgorithmForCLIPPlusPlus)
    algo.fabric = type("Fabric", (), {"setup": staticmethod(lambda m: m)})()
    models = {f"t{i}": _wrapped(build_vision_model(data.vision_config, {k: theta0[k] + t[k] for k in theta0}))
              for i, t in enumerate(tvs)}
    merged = _wrapped(build_vision_model(data.vision_config, theta0))
    merged.load_state_dict(algo.merge_embedding_layer(models), strict=False)
    with torch.no_grad():
        inputs = {n: [merged.vision_model.pre_layrnorm(merged.vision_model.embeddings(p)) for p in b]
                  for n, b in zip(models, data.batches, strict=True)}
        algo.layer_batches_forward = lambda layer, batches: [layer(x, attention_mask=None) for x in batches]
        result = {}
        layers = merged.vision_model.encoder.layers
        for i, layer in enumerate(layers):
            params, grams = defaultdict(list), []
            for name, model in models.items():
                own = model.vision_model.encoder.layers[i]
                for k, v in own.state_dict().items():
                    params[k].append(v)
                linear = {n: m for n, m in own.named_modules() if isinstance(m, torch.nn.Linear)}
                grams.append(algo.get_regmean_weights(name, own, inputs[name], linear))
            block = merging_with_regmean_weights(params, grams, reduce_non_diagonal_ratio=ratio)
            result.update({f"vision_model.encoder.layers.{i}.{k}": v for k, v in block.items()})
            if i < len(layers) - 1:
                layer.load_state_dict(block, strict=False)
                inputs = {n: algo.layer_batches_forward(layer, x) for n, x in inputs.items()}
    sd = merged.state_dict()
    result.update({k: sd[k] for k in sd if k.startswith(("vision_model.embeddings", "vision_model.pre_layrnorm",
                                                          "vision_model.post_layernorm"))})
    return result


def _wrapped(tower):
    """A module whose ``vision_model`` is the tower (FusionBench addresses ``model.vision_model.*``)."""
    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vision_model = tower

    return Wrapped()


def write_reference(path: Path) -> None:
    """FusionBench's outputs and the inputs they came from, at REFERENCE_SIZES, in one safetensors file."""
    import json

    import fusion_bench
    from safetensors.torch import save_file

    sizes = dict(REFERENCE_SIZES)
    tasks = sizes.pop("tasks")
    tvs = _task_vectors(tasks=tasks, **sizes)
    data, theta0 = regmean_inputs(tasks=tasks, **sizes)
    tensors = {f"input/tau{t}/{k}": v for t, tv in enumerate(tvs) for k, v in tv.items()}
    tensors.update({f"input/base/{k}": v for k, v in theta0.items()})
    tensors.update({f"input/images/{t}/{b}": x for t, bs in enumerate(data.batches) for b, x in enumerate(bs)})
    for name, result in fusionbench_outputs(tvs, data, sizes["layers"]).items():
        tensors.update({f"fusionbench/{name}/{k}": v.detach().float().contiguous() for k, v in result.items()})
    meta = {"made_by": "python benchmarks/parity_fusionbench.py --write " + str(path),
            "fusion_bench": fusion_bench.__version__ if hasattr(fusion_bench, "__version__") else "0.2.33",
            "torch": torch.__version__, "sizes": REFERENCE_SIZES, "wudi_iterations": WUDI_ITERATIONS,
            "regmean_ratio": REGMEAN_RATIO, "iso_cts_fractions": list(ISO_CTS_FRACTIONS),
            "vision_config": data.vision_config.to_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
              metadata={"hfdistac_parity": json.dumps(meta, default=str)})
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB, {len(tensors)} tensors)")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, help="write the pinned reference file here instead of the table")
    args = parser.parse_args()
    if args.write:
        write_reference(args.write)
        return
    tvs = _task_vectors()
    data, _ = regmean_inputs()
    ours, theirs = hfdistac_outputs(tvs, data, LAYERS), fusionbench_outputs(tvs, data, LAYERS)
    print(f"{TASKS} random task vectors, HF CLIPVisionModel keys, hidden {HIDDEN}, MLP {MLP}, {LAYERS} blocks\n")
    print("| method | max abs diff | relative L2 diff |\n|:--|--:|--:|")
    for name, label in ROW_NAMES.items():
        abs_diff, rel = _diff(ours[name], theirs[name])
        print(f"| {label} | {abs_diff:.2e} | {rel:.2e} |")


if __name__ == "__main__":
    main()
