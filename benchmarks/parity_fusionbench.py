"""Parity of hfdistac's Iso-C, Iso-CTS, WUDI, RegMean and RegMean++ with FusionBench's functions.

Run it in a separate environment that has FusionBench (it is never a dependency of hfdistac)::

    python -m venv fbvenv && fbvenv/bin/pip install torch==2.13.0 && fbvenv/bin/pip install fusion-bench==0.2.33
    fbvenv/bin/python benchmarks/parity_fusionbench.py            # from the repository root

Random task vectors with the keys and (scaled-down) shapes of a HF ``CLIPVisionModel`` (hidden 64, MLP 256,
2 blocks, 4 tasks), float64 references where both sides allow it. Prints one row per method: the largest
absolute difference, and the relative L2 difference ‖ours − theirs‖ / ‖theirs‖ over all tensors.

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

HIDDEN, MLP, LAYERS, TASKS = 64, 256, 2, 4


def _keys() -> dict[str, tuple[int, ...]]:
    shapes = {"vision_model.embeddings.class_embedding": (HIDDEN,),
              "vision_model.embeddings.patch_embedding.weight": (HIDDEN, 3, 8, 8),
              "vision_model.embeddings.position_embedding.weight": (17, HIDDEN),
              "vision_model.pre_layrnorm.weight": (HIDDEN,), "vision_model.pre_layrnorm.bias": (HIDDEN,)}
    for i in range(LAYERS):
        p = f"vision_model.encoder.layers.{i}."
        for proj in ("q", "k", "v", "out"):
            shapes[f"{p}self_attn.{proj}_proj.weight"] = (HIDDEN, HIDDEN)
            shapes[f"{p}self_attn.{proj}_proj.bias"] = (HIDDEN,)
        shapes.update({f"{p}layer_norm1.weight": (HIDDEN,), f"{p}layer_norm1.bias": (HIDDEN,),
                       f"{p}mlp.fc1.weight": (MLP, HIDDEN), f"{p}mlp.fc1.bias": (MLP,),
                       f"{p}mlp.fc2.weight": (HIDDEN, MLP), f"{p}mlp.fc2.bias": (HIDDEN,),
                       f"{p}layer_norm2.weight": (HIDDEN,), f"{p}layer_norm2.bias": (HIDDEN,)})
    shapes.update({"vision_model.post_layernorm.weight": (HIDDEN,), "vision_model.post_layernorm.bias": (HIDDEN,)})
    return shapes


def _task_vectors(seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{k: 0.01 * torch.randn(s, generator=g) for k, s in _keys().items()} for _ in range(TASKS)]


def _diff(ours: dict, theirs: dict) -> tuple[float, float]:
    keys = list(theirs)
    assert set(ours) >= set(keys), set(keys) - set(ours)
    max_abs = max(float((ours[k].double() - theirs[k].double()).abs().max()) for k in keys)
    num = sum(float((ours[k].double() - theirs[k].double()).pow(2).sum()) for k in keys) ** 0.5
    den = sum(float(theirs[k].double().pow(2).sum()) for k in keys) ** 0.5
    return max_abs, num / den


def iso_rows(tvs):
    from fusion_bench.method.isotropic_merging.iso_utils import iso_c, iso_cts

    from hfdistac.merging.iso import iso_c_merge, iso_cts_merge

    yield "iso_c", _diff(iso_c_merge(tvs), iso_c([dict(t) for t in tvs], accelerator="cpu"))
    for f in (0.8, 0.5):
        yield f"iso_cts (fraction {f})", _diff(iso_cts_merge(tvs, f), iso_cts([dict(t) for t in tvs], f, accelerator="cpu"))


def wudi_rows(tvs, iterations: int = 100):
    from fusion_bench.method.wudi import wudi_merging

    from hfdistac.merging.wudi import wudi_merge

    ours = wudi_merge(tvs, iterations=iterations, only_linear_layers=False, fuse_qkv=False, others="mean")
    theirs = wudi_merging([dict(t) for t in tvs], accelerator="cpu", iter_num=iterations)
    yield f"wudi, fusionbench variant ({iterations} it.)", _diff(ours, {k: v.detach() for k, v in theirs.items()})
    official = wudi_merge(tvs, iterations=iterations)
    fused, theirs_fused = {}, {}
    for i in range(LAYERS):
        p = f"vision_model.encoder.layers.{i}."
        stacked = [{"in_proj": torch.cat([t[f"{p}self_attn.{x}_proj.weight"] for x in "qkv"])} for t in tvs]
        theirs_fused[p] = wudi_merging(stacked, accelerator="cpu", iter_num=iterations)["in_proj"].detach()
        fused[p] = torch.cat([official[f"{p}self_attn.{x}_proj.weight"] for x in "qkv"])
    yield f"wudi, official variant: fused q/k/v ({iterations} it.)", _diff(fused, theirs_fused)


def _regmean_data(tvs):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from hfdistac.checkpoints import vision_state
    from hfdistac.merging.regmean import RegMeanData

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=HIDDEN, intermediate_size=MLP, num_hidden_layers=LAYERS, num_attention_heads=4,
                           image_size=32, patch_size=8)
    theta0 = vision_state(CLIPVisionModel(cfg))
    g = torch.Generator().manual_seed(1)
    batches = [[torch.randn(8, 3, 32, 32, generator=g) for _ in range(2)] for _ in tvs]
    return RegMeanData(base=theta0, vision_config=cfg, batches=batches), theta0


def regmean_rows(tvs, ratio: float = 0.95):
    from fusion_bench.method.regmean.regmean import merging_with_regmean_weights

    from hfdistac.merging.regmean import compute_grams, regmean_merge

    data, theta0 = _regmean_data(tvs)
    grams = compute_grams(tvs, data)
    ours = regmean_merge(tvs, ratio, grams=grams)
    params = {k: [theta0[k] + t[k] for t in tvs] for k in theta0}
    modules = [{k.removesuffix(".weight"): v for k, v in g.items()} for g in grams]
    theirs = merging_with_regmean_weights(params, modules, reduce_non_diagonal_ratio=ratio)
    yield "regmean (θ₀ + τ* vs FusionBench on θ_t)", _diff({k: theta0[k] + ours[k] for k in theta0}, theirs)
    yield "regmean++ (FusionBench's block loop)", _diff(_plusplus_ours(tvs, data, ratio),
                                                        _plusplus_fusionbench(tvs, data, theta0, ratio))


def _plusplus_ours(tvs, data, ratio):
    from hfdistac.merging.regmean import regmean_plusplus_merge

    out = regmean_plusplus_merge(tvs, ratio, data=data)
    return {k: data.base[k] + v for k, v in out.items()}


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


def main() -> None:
    tvs = _task_vectors()
    rows = [*iso_rows(tvs), *wudi_rows(tvs), *regmean_rows(tvs)]
    print(f"{TASKS} random task vectors, HF CLIPVisionModel keys, hidden {HIDDEN}, MLP {MLP}, {LAYERS} blocks\n")
    print("| method | max abs diff | relative L2 diff |\n|:--|--:|--:|")
    for name, (abs_diff, rel) in rows:
        print(f"| {name} | {abs_diff:.2e} | {rel:.2e} |")


if __name__ == "__main__":
    main()
