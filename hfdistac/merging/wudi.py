r"""WUDI merging (Cheng et al., "Whoever Started the Interference Should End It: Guiding Data-Free Model Merging
via Task Vectors", ICML 2025, https://arxiv.org/abs/2503.08099; official code nathanielyvo/WUDI-Merging,
``vit/wudi_main.py``).

For every linear layer's weight matrix, starting from the sum M₀ = Σ_t τ_t, run Adam on the task vectors' own
interference loss — data-free, the rows of τ_t standing in for the layer's inputs::

    L(M) = Σ_t ‖(M − τ_t) τ_tᵀ‖_F² / ‖τ_t‖_F²                (Adam, lr 1e-5, 300 iterations)

The merged model is θ₀ + 1·τ_merged (WUDI needs no scaling coefficient).

How it is computed here: the gradient is ∇L(M) = 2(M·A − B) with A = Σ_t τ_tᵀτ_t/‖τ_t‖² and
B = Σ_t τ_t τ_tᵀ τ_t/‖τ_t‖², both fixed, so each iteration is one matrix product instead of T batched
products and an autograd graph (the loss, tr(M A Mᵀ) − 2 tr(M Bᵀ) + const, comes for free from M·A). It is
the same gradient the reference codes get from autograd, fed to the same ``torch.optim.Adam``. One parameter
of all tasks at a time, on ``device``.

Where the official code and FusionBench's port (``fusion_bench/method/wudi``) differ, the defaults follow the
official code, and each difference is an option:

* which matrices: the official code optimises the linear layers of the transformer blocks only (attention and
  MLP weights, ``only_linear_layers=True``); FusionBench every 2-D tensor (the position embedding too);
* q, k and v: open_clip stores them as one ``in_proj_weight`` and the official loss is computed on that fused
  matrix (its cross terms and its norm couple the three); HF stores three matrices, so ``fuse_qkv=True`` stacks
  them for the loss and splits the result, as the official code sees them. FusionBench runs on HF checkpoints
  and treats each separately (``fuse_qkv=False``);
* every other tensor (biases, LayerNorms, embeddings): the official code leaves them at θ₀ (``others="zero"``),
  FusionBench averages them (``others="mean"``);
* iterations: 300 in the official code, 400 in FusionBench's config.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real

import torch

from ..errors import InputError
from .primitives import TaskVectors, check_task_vectors, is_matrix_parameter, load_float32

OTHERS_CHOICES = ("zero", "mean")
_QKV = re.compile(r"^(.*\.self_attn\.)([qkv])_proj\.weight$")


def is_linear_layer_weight(key: str) -> bool:
    """Whether a canonical key is the weight of a transformer block's linear layer (attention q/k/v/out
    projections, MLP fc1/fc2) — the matrices the official WUDI code optimises."""
    return ".encoder.layers." in key and key.endswith(
        ("q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight", "fc1.weight", "fc2.weight"))


@dataclass(frozen=True)
class WUDIParams:
    """Hyper-parameters of WUDI merging."""

    iterations: int = field(default=300, metadata={"help": "WUDI: Adam iterations per matrix (official code: 300)"})
    lr: float = field(default=1e-5, metadata={"help": "WUDI: Adam learning rate (official code: 1e-5)"})
    only_linear_layers: bool = field(default=True, metadata={
        "help": "WUDI: optimise the transformer blocks' linear-layer weights only (official); otherwise every "
                "2-D tensor (FusionBench)"})
    fuse_qkv: bool = field(default=True, metadata={
        "help": "WUDI: compute the loss on q, k and v stacked, as open_clip's fused in_proj_weight in the official "
                "code (FusionBench: separately)"})
    others: str = field(default="zero", metadata={
        "help": "WUDI: every other tensor: zero (stays at θ₀, official) or mean (FusionBench)"})
    device: str | None = field(default=None, repr=False, compare=False, metadata={
        "help": "where the optimisation runs (default cpu); not a CLI option (from --device)", "cli": False})
    progress: bool = field(default=False, repr=False, compare=False, metadata={
        "help": "show a progress bar over the matrices; not a CLI option", "cli": False})

    def __post_init__(self):
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, Integral) or self.iterations < 0:
            raise InputError(f"iterations must be an integer >= 0, got {self.iterations!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, Real) or not 0 < float(self.lr) < float("inf"):
            raise InputError(f"lr must be a finite number > 0, got {self.lr!r}")
        if self.others not in OTHERS_CHOICES:
            raise InputError(f"others must be one of {', '.join(OTHERS_CHOICES)}, got {self.others!r}")


def wudi_loss(merged: torch.Tensor, stacked: torch.Tensor) -> torch.Tensor:
    """L(M) = Σ_t ‖(M − τ_t) τ_tᵀ‖_F² / ‖τ_t‖_F², computed literally (``stacked``: ``[T, m, n]``)."""
    norms = stacked.reshape(stacked.shape[0], -1).pow(2).sum(-1)
    product = (merged.unsqueeze(0) - stacked) @ stacked.transpose(1, 2)
    return (product.pow(2).sum((1, 2)) / norms).sum()


def wudi_matrix(matrices: Sequence[torch.Tensor], iterations: int = 300, lr: float = 1e-5,
                history: list[float] | None = None) -> torch.Tensor:
    """WUDI on one matrix: Adam on L(M) from M₀ = Σ_t τ_t (see the module docstring).

    Args:
        matrices: τ_t for t = 1 … T, each m×n, on the device to compute on.
        iterations: Adam steps.
        lr: Adam learning rate.
        history: When given, receives L(M) before every step and after the last one.

    Returns:
        The optimised M (m×n, float32, on the matrices' device).
    """
    total = matrices[0].clone()
    a = torch.zeros((total.shape[1], total.shape[1]), dtype=total.dtype, device=total.device)
    b = torch.zeros_like(total)
    const = 0.0
    for tau in matrices[1:]:
        total += tau
    for tau in matrices:
        norm = tau.pow(2).sum()
        if float(norm) == 0.0:
            continue  # a zero task vector adds nothing to the loss
        gram = tau.T @ tau / norm
        a += gram
        tg = tau @ gram
        b += tg
        const += float((tg * tau).sum())
    merged = torch.nn.Parameter(total)
    optimizer = torch.optim.Adam([merged], lr=lr, weight_decay=0)
    for step in range(iterations + (1 if history is not None else 0)):
        with torch.no_grad():
            ma = merged @ a
            if history is not None:
                history.append(float((ma * merged).sum() - 2 * (merged * b).sum()) + const)
            if step == iterations:
                break
            merged.grad = 2 * (ma - b)
        optimizer.step()
    return merged.detach()


def _qkv_groups(keys: Sequence[str]) -> dict[str, list[str]]:
    """``{q key: [q, k, v keys]}`` for every attention block whose three projection weights are present."""
    found: dict[str, dict[str, str]] = {}
    for key in keys:
        m = _QKV.match(key)
        if m:
            found.setdefault(m.group(1), {})[m.group(2)] = key
    return {g["q"]: [g["q"], g["k"], g["v"]] for g in found.values() if set(g) == {"q", "k", "v"}}


def wudi_merge(task_vectors: TaskVectors, iterations: int = 300, lr: float = 1e-5, only_linear_layers: bool = True,
               fuse_qkv: bool = True, others: str = "zero", device: str | torch.device | None = None,
               progress: bool = False) -> dict[str, torch.Tensor]:
    """WUDI merging: per matrix, Adam on the task vectors' interference loss, starting from their sum.

    Args:
        task_vectors: τ_1 … τ_T, mappings ``{parameter name: tensor}`` with identical keys and shapes.
        iterations: Adam steps per matrix (0: the sum, unchanged).
        lr: Adam learning rate.
        only_linear_layers: Optimise only the transformer blocks' linear-layer weights (official); else every
            2-D tensor (FusionBench).
        fuse_qkv: Optimise each block's q, k and v weights stacked as one matrix (official, open_clip's layout).
        others: Every other tensor: ``zero`` (θ₀, official) or ``mean`` (FusionBench).
        device: Where the optimisation runs, one matrix (of all tasks) at a time.
        progress: Show a progress bar over the matrices.

    Returns:
        τ_merged as float32 tensors on the CPU, keys in the order of the first task vector; the merged model is
        θ₀ + τ_merged.
    """
    from tqdm.auto import tqdm

    WUDIParams(iterations=iterations, lr=lr, only_linear_layers=only_linear_layers, fuse_qkv=fuse_qkv,
               others=others)
    keys = check_task_vectors(task_vectors)
    device = device or "cpu"
    groups = _qkv_groups(keys) if fuse_qkv else {}
    in_group = {k for g in groups.values() for k in g[1:]}
    merged: dict[str, torch.Tensor] = {}
    for key in tqdm(keys, desc="WUDI", unit="tensor", disable=not progress, leave=False):
        if key in in_group:
            continue  # merged with its block's q projection
        first = load_float32(task_vectors[0], key)
        optimise = is_linear_layer_weight(key) if only_linear_layers else is_matrix_parameter(first)
        if not optimise:
            if others == "zero":
                merged[key] = torch.zeros_like(first)
            else:
                total = first.clone()
                for tv in task_vectors[1:]:
                    total += load_float32(tv, key)
                merged[key] = total / len(task_vectors)
            continue
        parts = groups.get(key, [key])
        mats = [torch.cat([load_float32(tv, k) for k in parts]).to(device) for tv in task_vectors]
        result = wudi_matrix(mats, iterations, lr).cpu()
        for k, piece in zip(parts, result.split([first.shape[0]] * len(parts)), strict=True):
            merged[k] = piece.contiguous()
    return {k: merged[k] for k in keys}
