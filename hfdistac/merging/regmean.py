r"""RegMean and RegMean++: merging linear layers by regression on their inputs.

**RegMean** (Jin et al., "Dataless Knowledge Fusion by Merging Weights of Language Models", ICLR 2023,
https://arxiv.org/abs/2212.09849). For every linear layer y = W x, with G_t = the Gram matrix of the layer's
inputs in task t's fine-tuned model (mean of x xᵀ over every token of a few unlabeled images of task t):

    W* = argmin_W Σ_t ‖W X_tᵀ − W_t X_tᵀ‖²   →   W* = (Σ_t W_t G̃_t)(Σ_t G̃_t)⁻¹,
    G̃_t = G_t with its off-diagonal entries multiplied by a (reduce_non_diagonal_ratio; 1 = plain RegMean)

Every other parameter (biases, LayerNorms, embeddings) is averaged. On task vectors, since
Σ_t θ₀ G̃_t (Σ_t G̃_t)⁻¹ = θ₀: τ* = (Σ_t τ_t G̃_t)(Σ_t G̃_t)⁻¹ and the merged model is θ₀ + τ* (no α).
:func:`regmean_merge` is that pure function of the task vectors and the Gram matrices; :func:`compute_grams`
is the separate step that measures the Grams (forward hooks on every ``nn.Linear`` of the vision tower
θ₀ + τ_t, over its task's unlabeled batches).

**RegMean++** (Nguyen et al., "RegMean++: Enhancing Effectiveness and Generalization of Regression Mean for
Model Merging", https://arxiv.org/abs/2508.03121): the same closed form, but each layer's Grams are measured
on the inputs that the *merged* model gives that layer, so the merge accounts for what earlier merged layers
did: embeddings and pre-LayerNorm are averaged; then block by block, task t's hidden states (from the merged
blocks so far) go through task t's own block l to measure G_t, block l is merged, and the hidden states go
through the merged block l to the next one (:func:`regmean_plusplus_merge`).

Defaults: the official RegMean++ code (nthehai01/RegMean-plusplus, built on FusionBench, whose
``fusion_bench/method/regmean_plusplus`` is the same code) and FusionBench's CLIP RegMean configuration: 256
unlabeled training images per task, off-diagonal ratio 0.95, Grams averaged over tokens. The official RegMean
code (bloomberg/dataless-model-merging) covers language models only and sets the ratio per experiment (0.1 or
0.9); for CLIP towers FusionBench's 0.95 is the reference. As in the official RegMean++, the final LayerNorm
after the blocks is not part of the block-by-block merge and stays at θ₀ (τ* = 0 there); RegMean averages it
like every non-linear tensor. (Both reference codes take ``layer(...)[0]`` as a block's output, written for
transformers 4, whose blocks return a tuple; transformers 5 returns the hidden states themselves, so there
that index picks the first image. Here the block's output is taken as it is returned.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from .primitives import TaskVectors, check_task_vectors, load_float32

logger = logging.getLogger(__name__)

Grams = Mapping[str, torch.Tensor]  # canonical weight name -> [in, in] Gram matrix of that layer's inputs


def _check_ratio(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= float(value) <= 1.0:
        raise InputError(f"reduce_non_diagonal_ratio must be a number in [0, 1], got {value!r}",
                         "1 keeps the Gram matrices as measured (plain RegMean); FusionBench uses 0.95")
    return float(value)


def _check_examples(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise InputError(f"num_examples must be an integer >= 1, got {value!r}")
    return int(value)


@dataclass
class RegMeanData:
    """What the Gram step (and RegMean++) needs besides the task vectors.

    Attributes:
        base: θ₀ in canonical keys (``vision_model.*``).
        vision_config: The ``CLIPVisionConfig`` of θ₀.
        batches: Per task (in task-vector order), preprocessed *unlabeled* pixel batches ``[B, C, H, W]``.
        device: Where the forward passes run.
        progress: Show progress bars.
        decode: Turns a cached batch into ``pixel_values`` (e.g. :meth:`hfdistac.data.PixelCodec.decode`);
            ``None``: the batches already are ``pixel_values``.
        module: A ``CLIPVisionModel`` of θ₀'s architecture on ``device`` to run the towers in (its parameters are
            overwritten, so a caller's evaluation model can be lent if the caller reloads it afterwards;
            default: one is built, one more copy of the tower).
    """

    base: Mapping[str, torch.Tensor] = field(repr=False)
    vision_config: Any = field(repr=False)
    batches: list[list[torch.Tensor]] = field(repr=False)
    device: str | torch.device = "cpu"
    progress: bool = False
    decode: Any = field(default=None, repr=False)
    module: Any = field(default=None, repr=False)

    def pixels(self, batch: torch.Tensor) -> torch.Tensor:
        """One cached batch as ``pixel_values`` on the device."""
        return (self.decode(batch) if self.decode is not None else batch).to(self.device)


@dataclass(frozen=True)
class RegMeanParams:
    """Hyper-parameters of RegMean."""

    reduce_non_diagonal_ratio: float = field(default=0.95, metadata={
        "help": "RegMean: multiply the Grams' off-diagonal entries by this, in [0, 1] (1 = plain RegMean; "
                "FusionBench's CLIP setting 0.95)"})
    num_examples: int = field(default=256, metadata={
        "help": "RegMean: unlabeled training images per task whose layer inputs give the Gram matrices"})
    grams: Sequence[Grams] | None = field(default=None, repr=False, compare=False, metadata={
        "help": "the per-task Gram matrices (compute_grams); not a CLI option", "cli": False})

    def __post_init__(self):
        _check_ratio(self.reduce_non_diagonal_ratio)
        _check_examples(self.num_examples)


@dataclass(frozen=True)
class RegMeanPlusPlusParams:
    """Hyper-parameters of RegMean++."""

    reduce_non_diagonal_ratio: float = field(default=0.95, metadata={
        "help": "RegMean++: multiply the Grams' off-diagonal entries by this, in [0, 1]"})
    num_examples: int = field(default=256, metadata={
        "help": "RegMean++: unlabeled training images per task propagated through the merged blocks"})
    data: RegMeanData | None = field(default=None, repr=False, compare=False, metadata={
        "help": "the RegMeanData (base weights, config, unlabeled batches); not a CLI option", "cli": False})

    def __post_init__(self):
        _check_ratio(self.reduce_non_diagonal_ratio)
        _check_examples(self.num_examples)


def reduce_non_diagonal(gram: torch.Tensor, ratio: float) -> torch.Tensor:
    """G̃: the off-diagonal entries of a Gram matrix multiplied by ``ratio``, the diagonal kept."""
    out = gram * ratio
    out.diagonal().copy_(gram.diagonal())
    return out


class _RegMeanSums:
    """Σ_t G̃_t and Σ_t τ_t G̃_t of one set of linear layers, added task by task: a merge holds two accumulators
    per layer instead of every task's Grams (the same sums in the same order, so the same result)."""

    def __init__(self, ratio: float):
        self.ratio = ratio
        self.grams: dict[str, torch.Tensor] = {}
        self.products: dict[str, torch.Tensor] = {}

    def add(self, key: str, tau: torch.Tensor, gram: torch.Tensor) -> None:
        g = reduce_non_diagonal(gram.float(), self.ratio)
        product = tau @ g
        if key in self.grams:
            self.grams[key] += g
            self.products[key] += product
        else:
            self.grams[key], self.products[key] = g, product

    def solve(self, key: str) -> torch.Tensor:
        """τ* of one layer, its accumulators released."""
        total_gram, total_product = self.grams.pop(key), self.products.pop(key)
        # X (Σ G̃) = Σ τ G̃ with Σ G̃ symmetric: solve (Σ G̃) Xᵀ = (Σ τ G̃)ᵀ instead of forming the inverse
        return torch.linalg.solve(total_gram, total_product.T).T


def regmean_matrix(task_matrices: Iterable[torch.Tensor], grams: Iterable[torch.Tensor], ratio: float) -> torch.Tensor:
    """τ* = (Σ_t τ_t G̃_t)(Σ_t G̃_t)⁻¹ for one linear layer's weights (each ``[out, in]``; Grams ``[in, in]``).
    Both may be iterators: one task's Gram is read at a time."""
    sums = _RegMeanSums(ratio)
    for tau, gram in zip(task_matrices, grams, strict=True):
        sums.add("w", tau, gram)
    return sums.solve("w")


def regmean_merge(task_vectors: TaskVectors, reduce_non_diagonal_ratio: float = 0.95, num_examples: int = 256,
                  grams: Sequence[Grams] | None = None) -> dict[str, torch.Tensor]:
    """RegMean on task vectors: closed-form per linear layer from the Grams, the mean elsewhere.

    Args:
        task_vectors: τ_1 … τ_T, mappings ``{parameter name: tensor}`` with identical keys and shapes.
        reduce_non_diagonal_ratio: The off-diagonal factor a of G̃_t.
        num_examples: Images per task the Grams were measured on (recorded; the Grams are given).
        grams: One mapping per task from a linear layer's canonical weight name to its input Gram matrix, e.g.
            from :func:`compute_grams`. A weight without a Gram is averaged.

    Returns:
        τ* as float32 tensors, keys in the order of the first task vector; the merged model is θ₀ + τ*.
    """
    ratio = _check_ratio(reduce_non_diagonal_ratio)
    keys = check_task_vectors(task_vectors)
    if grams is None or len(grams) != len(task_vectors):
        raise InputError(f"RegMean needs one set of Gram matrices per task vector, got "
                         f"{'none' if grams is None else len(grams)} for {len(task_vectors)}",
                         "compute them with hfdistac.merging.regmean.compute_grams, or run `hfdistac merge`")
    merged: dict[str, torch.Tensor] = {}
    for key in keys:
        mats = [load_float32(tv, key) for tv in task_vectors]
        if all(key in g for g in grams):
            merged[key] = regmean_matrix(mats, (g[key] for g in grams), ratio)  # one Gram read at a time
        else:
            total = mats[0].clone()
            for m in mats[1:]:
                total += m
            merged[key] = total / len(mats)
    return merged


class _GramHooks:
    """Forward hooks on every ``nn.Linear`` of a module that accumulate Σ x xᵀ and the token count."""

    def __init__(self, module: torch.nn.Module, prefix: str = ""):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.linears = {f"{prefix}{name}.weight": m for name, m in module.named_modules()
                        if isinstance(m, torch.nn.Linear)}
        self.handles = [m.register_forward_hook(self._hook(key)) for key, m in self.linears.items()]

    def _hook(self, key: str):
        def hook(module, inputs, output):
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            if key in self.sums:
                self.sums[key].addmm_(x.T, x)
            else:
                self.sums[key] = x.T @ x
            self.counts[key] = self.counts.get(key, 0) + x.shape[0]
        return hook

    def grams(self) -> dict[str, torch.Tensor]:
        """The mean Gram matrix (Σ x xᵀ / tokens) of every hooked layer, on the CPU.

        In several processes (each ran its share of the images) the sums and token counts are added up over the
        processes first, so every process gets the Grams of all the images."""
        from ..distributed import all_reduce_sum, world

        for h in self.handles:
            h.remove()
        sums, self.sums = self.sums, {}
        if world()[1] > 1:
            for key, m in self.linears.items():  # the same keys, in the same order, on every process
                w = m.weight
                total = sums.get(key)
                if total is None:
                    total = sums[key] = torch.zeros((w.shape[1], w.shape[1]), device=w.device)
                all_reduce_sum(total)
                count = torch.tensor([float(self.counts.get(key, 0))], dtype=torch.float64, device=w.device)
                self.counts[key] = int(all_reduce_sum(count)[0])
            sums = {k: v for k, v in sums.items() if self.counts[k]}
        return {k: sums.pop(k).div_(self.counts[k]).cpu() for k in list(sums)}


def _tower(data: RegMeanData) -> torch.nn.Module:
    """The module the towers run in: the lent ``data.module``, else a new one."""
    from ..checkpoints import build_vision_model

    model = data.module if data.module is not None else build_vision_model(data.vision_config).to(data.device)
    return model.eval()


@torch.no_grad()
def compute_grams(task_vectors: TaskVectors, data: RegMeanData, scratch: str | Path | None = None
                  ) -> list[Mapping[str, torch.Tensor]]:
    """The Gram step of RegMean: per task, the mean input Gram matrix of every linear layer of θ₀ + τ_t.

    Each task's fine-tuned tower (one module: ``data.module``, or one built here; its weights loaded in place
    per task) runs over that task's unlabeled batches; hooks on every ``nn.Linear`` accumulate Σ x xᵀ over all
    tokens, divided by the token count.

    Args:
        task_vectors: τ_1 … τ_T.
        data: The :class:`RegMeanData`.
        scratch: A folder to keep the Grams in (one safetensors file per task, read back lazily, so memory holds
            one task's Grams while measuring and one Gram at a time while merging: at ViT-B/32 they are 0.6 GB
            per task). ``None`` keeps them in memory.

    Returns:
        One ``{canonical weight name: [in, in] Gram}`` per task, in task-vector order.
    """
    from tqdm.auto import tqdm

    if len(data.batches) != len(task_vectors):
        raise InputError(f"got unlabeled batches for {len(data.batches)} tasks but {len(task_vectors)} task vectors")
    model = _tower(data)
    out = []
    for t, tv in enumerate(tqdm(task_vectors, desc="RegMean Grams", unit="task", disable=not data.progress)):
        _load_params(model, "vision_model.", data.base, tv)  # θ₀ + τ_t, one parameter at a time
        hooks = _GramHooks(model, "vision_model.")  # transformers 5: the tower itself, keys unprefixed
        for pixels in data.batches[t]:
            model(pixel_values=data.pixels(pixels))
        grams = hooks.grams()
        if scratch is not None:
            from ..tensor_files import LazyTensors, save_safetensors

            path = save_safetensors(grams, Path(scratch) / f"grams_{t}.safetensors", what="the Gram matrices")
            del grams
            grams = LazyTensors(path)
        out.append(grams)
    return out


def _average(task_vectors: TaskVectors, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    out = {}
    for key in keys:
        total = load_float32(task_vectors[0], key).clone()
        for tv in task_vectors[1:]:
            total += load_float32(tv, key)
        out[key] = total / len(task_vectors)
    return out


@torch.no_grad()
def regmean_plusplus_merge(task_vectors: TaskVectors, reduce_non_diagonal_ratio: float = 0.95,
                           num_examples: int = 256, data: RegMeanData | None = None) -> dict[str, torch.Tensor]:
    """RegMean++: RegMean block by block, each block's Grams measured on the merged model's hidden states.

    Args:
        task_vectors: τ_1 … τ_T (canonical keys ``vision_model.*``).
        reduce_non_diagonal_ratio: The off-diagonal factor a of G̃_t.
        num_examples: Images per task (recorded; the batches are given in ``data``).
        data: The :class:`RegMeanData` (required).

    Returns:
        τ* as float32 tensors (zero for the final LayerNorm, as in the reference); merged model θ₀ + τ*.
    """
    from tqdm.auto import tqdm

    ratio = _check_ratio(reduce_non_diagonal_ratio)
    keys = check_task_vectors(task_vectors)
    if data is None:
        raise InputError("RegMean++ needs data: base weights and unlabeled batches (RegMeanData)",
                         "use `hfdistac merge RECIPE --method regmean_plusplus`, which builds them from the recipe")
    merged = _average(task_vectors, [k for k in keys if k.startswith(("vision_model.embeddings.",
                                                                      "vision_model.pre_layrnorm."))])
    vm = _tower(data)  # transformers 5: CLIPVisionModel is the tower itself
    _load_params(vm, "vision_model.", data.base, merged)
    hidden = [[vm.pre_layrnorm(vm.embeddings(data.pixels(p))) for p in batches] for batches in data.batches]
    layers = vm.encoder.layers
    for i in tqdm(range(len(layers)), desc="RegMean++ blocks", unit="block", disable=not data.progress):
        prefix = f"vision_model.encoder.layers.{i}."
        block = _merge_block(layers[i], prefix, [k for k in keys if k.startswith(prefix)], task_vectors, hidden,
                             data.base, ratio)
        merged.update(block)
        _load_params(layers[i], prefix, data.base, block)
        if i < len(layers) - 1:
            for t in range(len(hidden)):  # one task's hidden states replaced at a time
                hidden[t] = [_block_output(layers[i](h, attention_mask=None)) for h in hidden[t]]
    for key in keys:
        merged.setdefault(key, torch.zeros_like(load_float32(task_vectors[0], key)))  # the final LayerNorm
    return {k: merged[k].cpu() for k in keys}


def _merge_block(layer: torch.nn.Module, prefix: str, layer_keys: Sequence[str], task_vectors: TaskVectors,
                 hidden: Sequence[Sequence[torch.Tensor]], base: Mapping[str, torch.Tensor], ratio: float
                 ) -> dict[str, torch.Tensor]:
    """RegMean on one encoder block: task t's own block (θ₀ + τ_t) run on the merged model's hidden states of
    task t gives its Grams, folded into the running sums at once (one task's Grams held at a time)."""
    sums = _RegMeanSums(ratio)
    with_gram: set[str] = set()
    for t, tv in enumerate(task_vectors):
        _load_params(layer, prefix, base, tv)
        hooks = _GramHooks(layer, prefix)
        for h in hidden[t]:
            layer(h, attention_mask=None)
        grams = hooks.grams()
        for key in [k for k in layer_keys if k in grams]:
            sums.add(key, load_float32(tv, key), grams.pop(key))
            with_gram.add(key)
        del grams
    block = _average(task_vectors, [k for k in layer_keys if k not in with_gram])
    block.update({key: sums.solve(key) for key in layer_keys if key in with_gram})
    return {k: block[k] for k in layer_keys}


def _load_params(module: torch.nn.Module, prefix: str, base: Mapping[str, torch.Tensor],
                 tv: Mapping[str, torch.Tensor]) -> None:
    """Set a module's parameters (a block, or the whole tower with ``prefix="vision_model."``) to θ₀ + τ, one at a
    time; a parameter τ does not hold is set to θ₀."""
    for name, p in module.named_parameters():
        key = prefix + name
        if key in tv:
            p.copy_((base[key] + load_float32(tv, key).to(base[key].device)).to(p.device))
        else:
            p.copy_(base[key].to(p.device))


def _block_output(out) -> torch.Tensor:
    """An encoder block's hidden states (transformers 5 returns the tensor, 4.x a tuple)."""
    return out[0] if isinstance(out, tuple) else out
