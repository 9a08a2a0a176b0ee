r"""SAMerging: merging by multi-teacher knowledge distillation with adaptive sharpness-aware minimisation.

*Model Merging via Multi-Teacher Knowledge Distillation* (Dalili & Mahdavi, arXiv 2512.21288,
https://arxiv.org/abs/2512.21288), as specified in METHOD.md §3. Layer-wise coefficients
Λ ∈ R^{T×L} (one scalar per task t and parameter tensor l) define the merged vision tower::

    θ(Λ)_l = θ₀_l + Σ_t Λ[t, l] · τ_{t, l}                         (no clamp)
    L(Λ)   = Σ_t KL( softmax(z_teacher_t / T) ‖ softmax(z_θ(Λ)(x_t) / T) )   T = 2, batchmean, no T² factor

where x_t is an unlabeled batch of task t, z are the logits of task t's frozen zero-shot head and
teacher_t = θ₀ + τ_t is task t's fine-tuned model. Λ is optimised with adaptive SAM (ASAM, ρ = 0.07)::

    g  = ∇_Λ L(Λ)
    ε  = ρ · Λ² ⊙ g / ‖ |Λ| ⊙ g ‖                                   (element-wise; 0 where Λ = 0)
    g' = ∇_Λ L evaluated at Λ + ε, with the merged weights *re-built* at θ(Λ + ε)
    Λ  ← Adam(lr 1e-3, L2 5e-4) step with g'

The released code forgets to re-build the merged weights after perturbing Λ, so its second gradient equals
the first and its "SAM" is plain Adam; ``remerge_sam=False`` reproduces that. Defaults: 100 cached batches
of 16 images per task, 10 epochs (1,000 steps, one batch of every task per step), Λ initialised to 0.0 (the
released code; 0.3 is the option). The merged task vector returned is τ_merged = Σ_t Λ[t, l] τ_{t, l}, so
the merged model is θ₀ + 1·τ_merged (no α search).

``objective="entropy"`` is layer-wise **AdaMerging** (Yang et al., *AdaMerging: Adaptive Model Merging for
Multi-Task Learning*, arXiv 2310.02575, https://arxiv.org/abs/2310.02575) with the same machinery:
L(Λ) = Σ_t mean_batch H(softmax(z_θ(Λ)(x_t))) (no teacher, temperature 1), Λ initialised to 0.3, projected
onto [0, 1] after every step, 500 steps, Adam lr 1e-3 without weight decay and without SAM (ρ = 0), as in
the AdaMerging paper; every one of these can be overridden.

Implementation (what makes it cheap):

* Task vectors are stacked once per parameter into a ``[T, numel]`` matrix on the device.
* Teacher logits are computed once for every cached batch, one teacher at a time (θ₀ + τ_t substituted
  into the same module with ``torch.func.functional_call``), and kept; no teacher exists afterwards.
* One forward pass per step for all tasks: the tasks' batches are concatenated (a ViT has no batch
  statistics, so this equals separate passes) and run through ``functional_call`` with the merged weights
  θ(Λ) as detached leaves; the pooled output is split per task for the heads.
* The gradient with respect to Λ is a contraction, never a T×-sized autograd graph:
  ∂L/∂Λ[t, l] = ⟨∂L/∂θ_l, τ_{t, l}⟩ = (τ_l as ``[T, numel]``) @ vec(∂L/∂θ_l).

Data parallel (``accelerate launch`` / ``torchrun``): create the process group first (e.g.
``accelerate.PartialState()``) and give every process its *own* shard of cached batches (e.g. built from
``ImageData.shard(rank, world_size)``). Each process computes ∂L/∂Λ on its shard; the gradient (and the
logged loss) is averaged with ``torch.distributed.all_reduce`` before ε and before the optimiser step, so Λ
and the Adam state stay identical on every process. With no process group this is a plain one-process loop.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import torch
import torch.nn.functional as F

from ..distributed import all_reduce_sum, world
from ..errors import InputError
from .primitives import TaskVectors, check_task_vectors, load_float32

logger = logging.getLogger(__name__)

PAPER_URL = "https://arxiv.org/abs/2512.21288"
ADAMERGING_URL = "https://arxiv.org/abs/2310.02575"
OBJECTIVES = ("kd", "entropy")
# Defaults that depend on the objective (METHOD.md §3): SAMerging (kd) vs layer-wise AdaMerging (entropy).
OBJECTIVE_DEFAULTS: dict[str, dict[str, float | int]] = {
    "kd": {"steps": 1000, "init": 0.0, "sam_rho": 0.07, "weight_decay": 5e-4},
    "entropy": {"steps": 500, "init": 0.3, "sam_rho": 0.0, "weight_decay": 0.0},
}
_NORM_EPS = 1e-12
#: File-backed task vectors above this total size are streamed from disk (see ``SAMergingData``).
STREAM_TASK_VECTORS_BYTES = 1 << 30


def _should_stream(task_vectors: TaskVectors, keys: Sequence[str]) -> bool:
    from ..task_vectors import TaskVector
    from .primitives import tensor_shapes

    if not all(isinstance(tv, TaskVector) and tv.is_lazy for tv in task_vectors):
        return False
    numel = sum(math.prod(s) for s in tensor_shapes(task_vectors[0]).values())
    return 4 * numel * len(task_vectors) > STREAM_TASK_VECTORS_BYTES


# ------------------------------------------------------------------------------------------------ data
@dataclass
class SAMergingTask:
    """One task's inputs.

    Attributes:
        name: Task name (row label of the coefficients).
        head: The frozen zero-shot :class:`~hfdistac.heads.Head` of the task.
        batches: Cached, preprocessed *unlabeled* pixel batches ``[B, C, H, W]`` (labels are never used).
    """

    name: str
    head: Any
    batches: list[torch.Tensor] = field(repr=False)


@dataclass
class SAMergingData:
    """What SAMerging needs besides the task vectors.

    Attributes:
        base: θ₀, the pretrained vision tower's parameters in canonical keys (``vision_model.*``); every task
            vector key must be present.
        vision_config: The ``CLIPVisionConfig`` of θ₀.
        tasks: One :class:`SAMergingTask` per task vector, in the same order.
        device: Torch device of the optimisation.
        mixed_precision: Autocast of the forward passes: ``no``, ``bf16`` or ``fp16``.
        progress: Show a progress bar over the steps.
        seed: Seed of the batch order.
        decode: Turns a cached batch into ``pixel_values`` (e.g. :meth:`hfdistac.data.PixelCodec.decode` for
            batches kept as ``uint8`` crops); ``None``: the batches already are ``pixel_values``.
        stream_task_vectors: Re-read the task vectors from their files every step instead of holding them all
            (default ``None``: when they are file-backed and larger than :data:`STREAM_TASK_VECTORS_BYTES`).
        tasks_per_pass: Tasks whose batches go through the model together (default ``None``: all of them, one
            forward pass, as the method is specified); fewer bound the activations' memory (8 tasks × 16
            ViT-B/32 images need ~4.7 GB at once) at the same gradient, summed in another order.
        module: A ``CLIPVisionModel`` of θ₀'s architecture, on ``device``, to run the merged weights through
            (its parameters are overwritten with θ(Λ), so a caller's evaluation model can be lent if the caller
            reloads its weights afterwards; default: one is built from ``base``, one more copy of the tower).
    """

    base: Mapping[str, torch.Tensor] = field(repr=False)
    vision_config: Any = field(repr=False)
    tasks: list[SAMergingTask] = field(repr=False)
    device: str | torch.device = "cpu"
    mixed_precision: str = "no"
    progress: bool = False
    seed: int = 0
    decode: Any = field(default=None, repr=False)
    stream_task_vectors: bool | None = None
    tasks_per_pass: int | None = None
    module: Any = field(default=None, repr=False)


# ------------------------------------------------------------------------------------------------ params
def _check_real(name: str, value: object, *, minimum: float | None = None, strict: bool = False,
                allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise InputError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {value!r}")


def _check_int(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class SAMergingParams:
    """Hyper-parameters of SAMerging (and of layer-wise AdaMerging with ``objective="entropy"``).

    ``None`` means the objective's default (:data:`OBJECTIVE_DEFAULTS`).
    """

    objective: str = field(default="kd", metadata={
        "help": "kd: SAMerging's multi-teacher distillation loss; entropy: layer-wise AdaMerging "
                "(test-time entropy minimisation, coefficients clamped to [0, 1])"})
    steps: int | None = field(default=None, metadata={
        "help": "optimiser steps, one cached batch of every task per step (default: 1000 for kd = 10 epochs "
                "of 100 batches, 500 for entropy)"})
    sam_rho: float | None = field(default=None, metadata={
        "help": "ASAM radius rho (0 disables SAM; default: 0.07 for kd, 0 for entropy)"})
    remerge_sam: bool = field(default=True, metadata={
        "help": "re-build the merged weights at Lambda + epsilon for the SAM gradient (correct); False "
                "reproduces the released code, whose second pass reuses the unperturbed weights"})
    temperature: float = field(default=2.0, metadata={
        "help": "distillation temperature T of both teacher and merged logits (kd only)"})
    init: float | None = field(default=None, metadata={
        "help": "initial value of every coefficient (default: 0.0 for kd, as the released code; 0.3 for "
                "entropy)"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    weight_decay: float | None = field(default=None, metadata={
        "help": "L2 penalty of Adam (coupled) on the coefficients (default: 5e-4 for kd, 0 for entropy)"})
    batches_per_task: int = field(default=100, metadata={"help": "cached unlabeled batches used per task"})
    batch_size: int = field(default=16, metadata={"help": "images per task in each step's batch"})
    data: SAMergingData | None = field(default=None, repr=False, compare=False, metadata={
        "help": "the SAMergingData (base weights, config, heads, cached batches); not a CLI option",
        "cli": False})
    result: dict | None = field(default=None, repr=False, compare=False, metadata={
        "help": "a dict filled with the learned coefficients, parameter and task names, loss history and "
                "timing; not a CLI option", "cli": False})

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise InputError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        _check_int("steps", self.steps, allow_none=True)
        _check_real("sam_rho", self.sam_rho, minimum=0.0, allow_none=True)
        if not isinstance(self.remerge_sam, bool):
            raise InputError(f"remerge_sam must be True or False, got {self.remerge_sam!r}")
        _check_real("temperature", self.temperature, minimum=0.0, strict=True)
        _check_real("init", self.init, allow_none=True)
        _check_real("lr", self.lr, minimum=0.0, strict=True)
        _check_real("weight_decay", self.weight_decay, minimum=0.0, allow_none=True)
        _check_int("batches_per_task", self.batches_per_task)
        _check_int("batch_size", self.batch_size)
        if self.data is not None and not isinstance(self.data, SAMergingData):
            raise InputError(f"data must be a SAMergingData, got {type(self.data).__name__}")
        if self.result is not None and not isinstance(self.result, dict):
            raise InputError(f"result must be a dict to fill, got {type(self.result).__name__}")

    def resolved(self) -> dict[str, Any]:
        """The scalar hyper-parameters with the objective's defaults filled in (for reports)."""
        d = OBJECTIVE_DEFAULTS[self.objective]
        return {"objective": self.objective,
                "steps": self.steps if self.steps is not None else d["steps"],
                "sam_rho": float(self.sam_rho if self.sam_rho is not None else d["sam_rho"]),
                "remerge_sam": self.remerge_sam,
                "temperature": float(self.temperature) if self.objective == "kd" else 1.0,
                "init": float(self.init if self.init is not None else d["init"]),
                "lr": float(self.lr),
                "weight_decay": float(self.weight_decay if self.weight_decay is not None else d["weight_decay"]),
                "batches_per_task": self.batches_per_task, "batch_size": self.batch_size,
                "clamp": [0.0, 1.0] if self.objective == "entropy" else None}


# ------------------------------------------------------------------------------------------------ engine
def _all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average a tensor over the processes (in place); a no-op in one process."""
    count = world()[1]
    if count > 1:
        all_reduce_sum(tensor)
        tensor /= count
    return tensor


def _rebatch(batches: Sequence[torch.Tensor], batch_size: int, max_batches: int) -> list[torch.Tensor]:
    """At most ``max_batches`` batches of ``batch_size`` images (the last may be smaller)."""
    if all(b.shape[0] == batch_size for b in batches[:-1]) and batches and batches[-1].shape[0] <= batch_size:
        return list(batches[:max_batches])
    flat = torch.cat(list(batches))[:batch_size * max_batches]
    return list(flat.split(batch_size))


class CoefficientObjective:
    """The SAMerging / AdaMerging objective of Λ and its exact gradient, on one device.

    Holds the stacked task vectors, θ₀, one ``CLIPVisionModel`` used only as a functional template, the
    heads and (for ``kd``) the cached teacher logits. :meth:`loss_and_grad` is the whole per-step cost: one
    forward and one backward pass through a single merged model.

    Args:
        task_vectors: τ_1 … τ_T.
        data: The :class:`SAMergingData`.
        objective: ``kd`` or ``entropy``.
        temperature: Distillation temperature (``kd``).
        batches_per_task: Cached batches used per task.
        batch_size: Images per task and step.
    """

    def __init__(self, task_vectors: TaskVectors, data: SAMergingData, *, objective: str = "kd",
                 temperature: float = 2.0, batches_per_task: int = 100, batch_size: int = 16):
        from ..checkpoints import VISION_PREFIX, build_vision_model, module_key

        keys = check_task_vectors(task_vectors)
        if len(data.tasks) != len(task_vectors):
            raise InputError(f"SAMerging got {len(task_vectors)} task vectors but data for {len(data.tasks)} tasks",
                             "give one SAMergingTask per task vector, in the same order")
        missing = [k for k in keys if k not in data.base]
        if missing:
            raise InputError(f"the base weights lack {len(missing)} task-vector parameter(s), first {missing[0]!r}",
                             "base and task vectors must use the same canonical keys (vision_model.*)")
        self.device = torch.device(data.device)
        self.mixed_precision = data.mixed_precision
        self.objective, self.temperature = objective, float(temperature)
        self.keys = keys
        self.task_names = [t.name for t in data.tasks]
        self.model = data.module if data.module is not None else \
            build_vision_model(data.vision_config, dict(data.base)).to(self.device)
        self.model.eval().requires_grad_(False)
        module_params = dict(self.model.named_parameters())
        self.module_names = [module_key(k) for k in keys]
        unknown = [k for k in self.module_names if k not in module_params]
        if unknown:
            raise InputError(f"task-vector parameter {unknown[0]!r} is not a parameter of the vision model")
        # θ₀ and the task vectors, stacked once per parameter: stacked[l] is [T, numel_l].
        self.base = [data.base[k].detach().to(self.device, torch.float32).reshape(-1) for k in keys]
        self.shapes = [tuple(data.base[k].shape) for k in keys]
        # The merged weights live in the module's own parameters (written in place, gradients accumulated in
        # their .grad): no second copy of the tower. Parameters no task vector touches are θ₀ (a lent module may
        # hold other weights).
        self.params = [module_params[n] for n in self.module_names]
        with torch.no_grad():
            for name, p in module_params.items():
                if name not in set(self.module_names) and VISION_PREFIX + name in data.base:
                    p.copy_(data.base[VISION_PREFIX + name])
        self.task_vectors = task_vectors
        # Task vectors stacked per parameter ([T, numel]) are read every step; in memory they are T copies of
        # the tower (2.8 GB for 8 ViT-B/32 tasks). Lazy (file-backed) task vectors larger than
        # STREAM_TASK_VECTORS_BYTES are re-read from their files when needed instead: the same values, at the
        # cost of reading them from the page cache a few times per step.
        self.stream = data.stream_task_vectors if data.stream_task_vectors is not None else _should_stream(
            task_vectors, keys)
        self._stacked = None if self.stream else [self._load_stack(k) for k in keys]
        self.tasks_per_pass = data.tasks_per_pass
        self.heads = [t.head.to(self.device) for t in data.tasks]
        self.batches: list[list[torch.Tensor]] = []
        for t in data.tasks:
            if not t.batches:
                raise InputError(f"task {t.name!r} has no cached images for SAMerging",
                                 "its train split is empty: check the recipe's train_split")
            self.batches.append(_rebatch(t.batches, batch_size, batches_per_task))
        self.teacher_logits: list[list[torch.Tensor]] | None = None
        self.decode = data.decode or (lambda x: x)

    def _load_stack(self, key: str) -> torch.Tensor:
        return torch.stack([load_float32(tv, key).reshape(-1) for tv in self.task_vectors]).to(self.device)

    def stack(self, i: int) -> torch.Tensor:
        """Parameter ``i`` of every task vector, ``[T, numel]`` on the device (read again when streaming)."""
        return self._load_stack(self.keys[i]) if self._stacked is None else self._stacked[i]

    @property
    def stacked(self):
        return (self.stack(i) for i in range(len(self.keys)))

    @property
    def num_tasks(self) -> int:
        return len(self.task_vectors)

    @property
    def num_params(self) -> int:
        return len(self.keys)

    # -- weights
    def merged_weights(self, lam: torch.Tensor) -> list[torch.Tensor]:
        """Set the module to θ(Λ): θ₀_l + Λ[:, l] @ τ_l per parameter, in place; returns its parameters."""
        with torch.no_grad():
            for i, (b, s) in enumerate(zip(self.base, self.stacked, strict=True)):
                torch.addmv(b, s.T, lam[:, i], out=self.params[i].view(-1))
        return self.params

    def _forward(self, flat_weights: Sequence[torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
        """Pooled output with the module's own parameters (:meth:`merged_weights`), or with other weights (flat,
        one per parameter, e.g. built inside an autograd graph) through ``functional_call``."""
        from ..evaluation import autocast_context

        with autocast_context(self.device, self.mixed_precision):
            if flat_weights is self.params:
                out = self.model(pixel_values=pixels)
            else:
                params = {n: w.view(s) for n, w, s in zip(self.module_names, flat_weights, self.shapes, strict=True)}
                out = torch.func.functional_call(self.model, params, args=(), kwargs={"pixel_values": pixels})
        return out.pooler_output.float()

    # -- teachers
    @torch.no_grad()
    def cache_teacher_logits(self) -> None:
        """Logits of teacher_t = θ₀ + τ_t on every cached batch of task t, one teacher at a time."""
        self.teacher_logits = []
        for t in range(self.num_tasks):
            for p, b, s in zip(self.params, self.base, self.stacked, strict=True):  # the module holds θ₀ + τ_t
                torch.add(b, s[t], out=p.view(-1))
            self.teacher_logits.append([self.heads[t].logits(self._forward(self.params, self.decode(x).to(self.device)))
                                        .float() for x in self.batches[t]])

    # -- objective
    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, list[int], list[torch.Tensor] | None]:
        """The step's input: task t's batch ``indices[t]`` of every task, concatenated."""
        xs = [self.batches[t][i] for t, i in enumerate(indices)]
        targets = None
        if self.objective == "kd":
            if self.teacher_logits is None:
                raise RuntimeError("call cache_teacher_logits() before the kd objective")
            targets = [self.teacher_logits[t][i] for t, i in enumerate(indices)]
        pixels = self.decode(torch.cat(xs)).to(self.device, non_blocking=True)
        return pixels, [x.shape[0] for x in xs], targets

    def loss_from_weights(self, flat_weights: Sequence[torch.Tensor], pixels: torch.Tensor, sizes: Sequence[int],
                          targets: Sequence[torch.Tensor] | None, first_task: int = 0) -> torch.Tensor:
        """The objective for given merged weights: Σ_t KL (kd) or Σ_t mean entropy (entropy), over the tasks
        ``first_task``, ``first_task + 1``, … whose batches ``pixels`` holds (``sizes`` images each)."""
        pooled = self._forward(flat_weights, pixels)
        loss = pooled.new_zeros(())
        for j, chunk in enumerate(pooled.split(list(sizes))):
            t = first_task + j
            logits = self.heads[t].logits(chunk)
            if self.objective == "kd":
                loss = loss + F.kl_div(F.log_softmax(logits / self.temperature, dim=-1),
                                       F.log_softmax(targets[j] / self.temperature, dim=-1),
                                       log_target=True, reduction="batchmean")
            else:
                logp = F.log_softmax(logits, dim=-1)
                loss = loss + -(logp.exp() * logp).sum(-1).mean()
        return loss

    def loss_and_grad(self, lam: torch.Tensor, pixels: torch.Tensor, sizes: Sequence[int],
                      targets: Sequence[torch.Tensor] | None, *, weights_at: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """L and ∂L/∂Λ ``[T, L]``, by contracting ∂L/∂θ_l with the task vectors.

        Args:
            lam: Λ ``[T, L]``.
            pixels, sizes, targets: From :meth:`batch`.
            weights_at: Build the merged weights at these coefficients instead of ``lam`` (the released
                code's SAM bug evaluates the "perturbed" gradient with the weights of the unperturbed Λ).
                Since ∂L/∂Λ[t,l] = ⟨∂L/∂θ_l, τ_{t,l}⟩ does not otherwise depend on Λ, the gradient is that of
                the weights actually used.

        Returns:
            ``(loss, grad)``, both detached; in several processes both are averaged over them.
        """
        weights = self.merged_weights(weights_at if weights_at is not None else lam)
        for w in weights:
            w.requires_grad_(True)
            w.grad = None
        per_pass = self.tasks_per_pass or len(sizes)
        loss, offset = None, 0
        try:
            # a few tasks at a time when per_pass < T: the same loss, and the gradient summed in .grad
            for first in range(0, len(sizes), per_pass):
                part = list(sizes[first:first + per_pass])
                part_loss = self.loss_from_weights(weights, pixels[offset:offset + sum(part)], part,
                                                   targets[first:first + per_pass] if targets is not None else None,
                                                   first_task=first)
                part_loss.backward()
                offset += sum(part)
                loss = part_loss.detach() if loss is None else loss + part_loss.detach()
            grad = torch.stack([s @ w.grad.reshape(-1) for s, w in zip(self.stacked, weights, strict=True)],
                               dim=1)  # [T, L]
        finally:
            for w in weights:
                w.grad = None
                w.requires_grad_(False)
        _all_reduce_mean(grad)
        _all_reduce_mean(loss)
        return loss, grad


def asam_perturbation(lam: torch.Tensor, grad: torch.Tensor, rho: float) -> torch.Tensor:
    """ASAM's ε = ρ · Λ² ⊙ g / ‖ |Λ| ⊙ g ‖ (zero where Λ = 0, and zero when the denominator vanishes)."""
    return rho * lam.square() * grad / (lam.abs() * grad).norm().clamp_min(_NORM_EPS)


def sam_gradients(objective: CoefficientObjective, lam: torch.Tensor, batch, rho: float, remerge: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two gradients of one ASAM step.

    Args:
        objective: The :class:`CoefficientObjective`.
        lam: Current Λ.
        batch: ``(pixels, sizes, targets)`` from :meth:`CoefficientObjective.batch`.
        rho: ASAM radius (0: no second pass, the first gradient is returned twice).
        remerge: Re-build the merged weights at Λ + ε (correct) or keep those of Λ (the released code).

    Returns:
        ``(loss at Λ, gradient at Λ, gradient used for the step)``.
    """
    loss, g1 = objective.loss_and_grad(lam, *batch)
    if rho <= 0:
        return loss, g1, g1
    eps = asam_perturbation(lam, g1, rho)
    perturbed = lam + eps
    _, g2 = objective.loss_and_grad(perturbed, *batch, weights_at=perturbed if remerge else lam)
    return loss, g1, g2


class _BatchOrder:
    """Per task, a seeded permutation of its cached batches, redrawn every time it is used up."""

    def __init__(self, counts: Sequence[int], seed: int):
        self.counts = list(counts)
        self.gen = torch.Generator().manual_seed(seed)
        self.orders = [torch.randperm(n, generator=self.gen).tolist() for n in self.counts]

    def __call__(self, step: int) -> list[int]:
        out = []
        for t, n in enumerate(self.counts):
            if step > 0 and step % n == 0:
                self.orders[t] = torch.randperm(n, generator=self.gen).tolist()
            out.append(self.orders[t][step % n])
        return out


def samerging_merge(task_vectors: TaskVectors, *, objective: str = "kd", steps: int | None = None,
                    sam_rho: float | None = None, remerge_sam: bool = True, temperature: float = 2.0,
                    init: float | None = None, lr: float = 1e-3, weight_decay: float | None = None,
                    batches_per_task: int = 100, batch_size: int = 16, data: SAMergingData | None = None,
                    result: dict | None = None) -> dict[str, torch.Tensor]:
    """Learn layer-wise merging coefficients Λ by multi-teacher distillation with ASAM (or entropy, AdaMerging).

    Args:
        task_vectors: τ_1 … τ_T (``{canonical name: tensor}``, identical keys and shapes).
        objective: ``kd`` (SAMerging) or ``entropy`` (layer-wise AdaMerging).
        steps: Optimiser steps (default 1000 for kd, 500 for entropy).
        sam_rho: ASAM radius ρ (default 0.07 for kd, 0 = plain Adam for entropy).
        remerge_sam: Re-build the merged weights at Λ + ε (default); ``False`` reproduces the released code.
        temperature: Distillation temperature (kd).
        init: Initial value of every coefficient (default 0.0 for kd, 0.3 for entropy).
        lr: Adam learning rate.
        weight_decay: Adam's (coupled L2) weight decay (default 5e-4 for kd, 0 for entropy).
        batches_per_task: Cached batches used per task.
        batch_size: Images per task per step.
        data: The :class:`SAMergingData` (required).
        result: Optional dict filled with ``coefficients`` (``[T, L]`` float32, CPU), ``parameter_names``
            (L order), ``task_names``, ``loss_history`` (loss at Λ before each step, then the final loss),
            ``params`` (resolved), ``teacher_time_s``, ``optimize_time_s``, ``time_s`` and, on CUDA,
            ``peak_memory_bytes``.

    Returns:
        τ_merged = Σ_t Λ[t, l] τ_{t, l} (float32, on CPU); the merged model is θ₀ + τ_merged.

    Raises:
        InputError: without ``data``, or for data that does not fit the task vectors.
    """
    from tqdm.auto import tqdm

    if data is None:
        raise InputError("SAMerging needs data: base weights, heads and unlabeled batches (SAMergingData)",
                         "use `hfdistac merge RECIPE --method samerging`, which builds them from the recipe")
    p = SAMergingParams(objective=objective, steps=steps, sam_rho=sam_rho, remerge_sam=remerge_sam,
                        temperature=temperature, init=init, lr=lr, weight_decay=weight_decay,
                        batches_per_task=batches_per_task, batch_size=batch_size).resolved()
    start = time.perf_counter()
    obj = CoefficientObjective(task_vectors, data, objective=p["objective"], temperature=p["temperature"],
                               batches_per_task=p["batches_per_task"], batch_size=p["batch_size"])
    if obj.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(obj.device)
    if p["objective"] == "kd":
        obj.cache_teacher_logits()
    teacher_time = time.perf_counter() - start

    lam = torch.nn.Parameter(torch.full((obj.num_tasks, obj.num_params), p["init"], device=obj.device))
    optimizer = torch.optim.Adam([lam], lr=p["lr"], weight_decay=p["weight_decay"])
    order = _BatchOrder([len(b) for b in obj.batches], data.seed)
    history: list[float] = []
    rank, _ = world()
    bar = tqdm(range(p["steps"]), desc=f"samerging ({p['objective']})", unit="step",
               disable=not data.progress or rank != 0)
    for step in bar:
        batch = obj.batch(order(step))
        loss, _, grad = sam_gradients(obj, lam.detach(), batch, p["sam_rho"], p["remerge_sam"])
        if not torch.isfinite(loss):
            from ..errors import TrainingError

            raise TrainingError(f"SAMerging loss became {float(loss)} at step {step}",
                                "lower --lr, or use --init 0.3")
        lam.grad = grad
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if p["clamp"] is not None:
            with torch.no_grad():
                lam.clamp_(*p["clamp"])  # AdaMerging: coefficients projected onto [0, 1]
        history.append(float(loss))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{float(loss):.4g}")
    # The loss at the final Λ on a last batch, so the history shows where the optimisation ended.
    with torch.no_grad():
        batch = obj.batch(order(p["steps"]))
        final = obj.loss_from_weights(obj.merged_weights(lam.detach()), *batch)
        history.append(float(_all_reduce_mean(final)))

    coefficients = lam.detach().float().cpu()
    merged = {k: (coefficients[:, i] @ s.cpu()).view(shape)
              for i, (k, s, shape) in enumerate(zip(obj.keys, obj.stacked, obj.shapes, strict=True))}
    total = time.perf_counter() - start
    logger.info("SAMerging (%s): %d steps in %.1fs, loss %.4g -> %.4g", p["objective"], p["steps"], total,
                history[0] if history else float("nan"), history[-1])
    if result is not None:
        result.update({"coefficients": coefficients, "parameter_names": list(obj.keys),
                       "task_names": list(obj.task_names), "loss_history": history, "params": p,
                       "teacher_time_s": teacher_time, "optimize_time_s": total - teacher_time, "time_s": total})
        if obj.device.type == "cuda":
            result["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(obj.device))
    return merged
