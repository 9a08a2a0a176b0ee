"""DisTaC's pure math (Algorithm 1 of arXiv 2508.01148, METHOD.md §1): no I/O, no models, no accelerate.

* :func:`distillation_loss` — T_tcr·T_stu · mean_batch KL(softmax(z_tcr/T_tcr) ‖ softmax(z_stu/T_stu)).
* :func:`anchor_penalty` — ‖θ − θ_init‖², parameters paired by name.
* :func:`compute_kappa` — κ from an explicit value, a target norm, or the other tasks' norms.
* :func:`effective_warmup`, :func:`cosine_with_warmup` — the learning-rate schedule.
* :func:`global_batch_indices` — the seeded, layout-independent order of training examples.
* :func:`task_vector_norm`, :func:`project_to_ball` — ‖θ − θ₀‖ and the ``max_norm_ratio`` extension.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from ..errors import InputError

DEFAULT_WARMUP = 200
WARMUP_FRACTION = 0.4  # 200 of the paper's 500 steps


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t_teacher: float,
                      t_student: float) -> torch.Tensor:
    """T_tcr·T_stu · mean over the batch of KL(softmax(z_tcr/T_tcr) ‖ softmax(z_stu/T_stu)).

    Forward KL: the teacher's tempered distribution is the target; summed over classes, averaged over the
    batch; computed in float32 whatever the input dtype.

    Args:
        student_logits: ``[B, C]``.
        teacher_logits: ``[B, C]`` (no gradient needed).
        t_teacher: Teacher temperature T_tcr.
        t_student: Student temperature T_stu.

    Returns:
        A scalar tensor.
    """
    log_q = F.log_softmax(student_logits.float() / t_student, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / t_teacher, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    return t_teacher * t_student * kl.mean()


class _SquaredDistance(torch.autograd.Function):
    """Σ_i ‖θ_i − a_i‖² with the gradient 2(θ_i − a_i)·g recomputed in backward instead of saved.

    Autograd through ``(θ − a).pow(2).sum()`` keeps every θ − a for the backward pass: one more copy of the tower
    (350 MB at ViT-B/32) for the length of every step. This computes the same value in the same order, and the
    same gradient expression (``g * (2 * (θ − a))``, what autograd's pow backward evaluates, so bit for bit the
    same), from θ and a, which exist anyway.
    """

    @staticmethod
    def forward(ctx, n: int, *tensors: torch.Tensor) -> torch.Tensor:
        params, anchors = tensors[:n], tensors[n:]
        ctx.n = n
        ctx.save_for_backward(*params, *anchors)
        total = None
        for p, a in zip(params, anchors, strict=True):
            term = (p - a.to(p.dtype)).pow(2).sum()
            total = term if total is None else total + term
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        saved = ctx.saved_tensors
        params, anchors = saved[:ctx.n], saved[ctx.n:]
        grads = [grad * (2 * (p - a.to(p.dtype))) for p, a in zip(params, anchors, strict=True)]
        return (None, *grads, *([None] * len(anchors)))


def anchor_penalty(params_by_name: Mapping[str, torch.Tensor], anchor_by_name: Mapping[str, torch.Tensor]
                   ) -> torch.Tensor:
    """‖θ − θ_init‖²: squared L2 distance (no ½) between parameters and their anchors, paired by name.

    Differentiable in θ without holding θ − θ_init for the backward pass (see :class:`_SquaredDistance`).

    Args:
        params_by_name: The trainable parameters θ.
        anchor_by_name: The anchor θ_init, same names and shapes.

    Raises:
        ValueError: when the names differ (a programming error: never paired by position).
    """
    if set(params_by_name) != set(anchor_by_name):
        only_p = sorted(set(params_by_name) - set(anchor_by_name))[:3]
        only_a = sorted(set(anchor_by_name) - set(params_by_name))[:3]
        raise ValueError(f"parameters and anchor differ: only in parameters {only_p}, only in anchor {only_a}")
    if not params_by_name:
        return torch.zeros(())
    names = list(params_by_name)
    return _SquaredDistance.apply(len(names), *(params_by_name[n] for n in names),
                                  *(anchor_by_name[n] for n in names))


@torch.no_grad()
def project_to_ball(params_by_name: Mapping[str, torch.Tensor], center_by_name: Mapping[str, torch.Tensor],
                    radius: float) -> float | None:
    """Scale θ − θ₀ in place so that ‖θ − θ₀‖ ≤ ``radius`` (the ``max_norm_ratio`` extension).

    Args:
        params_by_name: The student's parameters θ (modified in place).
        center_by_name: θ₀, same names and shapes.
        radius: The largest allowed global L2 norm of θ − θ₀.

    Returns:
        The norm before projection when it exceeded ``radius`` (θ was scaled back), else ``None``.
    """
    norm = task_vector_norm(params_by_name, center_by_name)
    if norm <= radius:
        return None
    factor = radius / norm
    for n, p in params_by_name.items():
        c = center_by_name[n].to(p.dtype)
        p.copy_(c + (p - c) * factor)
    return norm


def compute_kappa(norm: float, *, kappa: float | None = None, target_norm: float | None = None,
                  reference_norms: Sequence[float] | None = None) -> tuple[float, float]:
    """The scale κ of the starting point θ₀ + κτ and the norm it gives (METHOD.md §1).

    At most one rule may be given: an explicit κ; a target norm (κ = target / ‖τ‖); or the norms of the other
    tasks' vectors (κ = mean_{s≠t}‖τ_s‖ / ‖τ_t‖, the paper's rule). None of them: κ = 1 (low confidence).

    Args:
        norm: ‖τ‖, the global L2 norm of the task vector.
        kappa: Explicit κ.
        target_norm: Explicit target norm.
        reference_norms: Norms of the other task vectors.

    Returns:
        ``(κ, κ·‖τ‖)``.

    Raises:
        InputError: for several rules, κ or target ≤ 0, an empty reference list, or a zero task vector.
    """
    given = [n for n, v in (("kappa", kappa), ("target_norm", target_norm), ("reference_norms", reference_norms))
             if v is not None]
    if len(given) > 1:
        raise InputError(f"{' and '.join(given)} are mutually exclusive", "choose one way to set κ")
    if not (math.isfinite(norm) and norm > 0):
        raise InputError(f"the task vector's norm is {norm}: the model equals its base (or is not finite)",
                         "check that MODEL is fine-tuned from --base")
    if kappa is not None:
        if not (math.isfinite(kappa) and kappa > 0):
            raise InputError(f"κ must be > 0, got {kappa}")
        return float(kappa), float(kappa) * norm
    if target_norm is not None:
        if not (math.isfinite(target_norm) and target_norm > 0):
            raise InputError(f"target norm must be > 0, got {target_norm}")
        return target_norm / norm, float(target_norm)
    if reference_norms is not None:
        if len(reference_norms) == 0:
            raise InputError("no reference task vectors to take the mean norm of")
        target = float(statistics.fmean(reference_norms))
        return target / norm, target
    return 1.0, norm


def effective_warmup(steps: int, warmup_steps: int | None = None) -> int:
    """Warm-up steps of the cosine schedule.

    An explicit value is used as given. The default is the paper's 200 warm-up steps of 500; for shorter runs
    it is scaled to the same 40 % of ``steps`` (200 warm-up steps of a 50-step run would never reach the peak
    learning rate).
    """
    if warmup_steps is not None:
        return int(warmup_steps)
    return min(DEFAULT_WARMUP, int(WARMUP_FRACTION * steps))


def cosine_with_warmup(step: int, *, total: int, warmup: int) -> float:
    """Learning-rate multiplier of optimiser step ``step`` (0-based): linear warm-up, then cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> tuple[int, ...]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(num_examples, generator=g).tolist())


def global_batch_indices(num_examples: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Example indices of optimiser step ``step`` (0-based), for all processes together.

    The index stream is the concatenation of seeded per-epoch permutations of ``range(num_examples)``; step
    ``k`` takes its items ``[k·B, (k+1)·B)``. It depends on neither the number of processes nor the
    micro-batch size, so runs with different layouts see the same data, and a resumed run finds its place
    from the step number alone.
    """
    out: list[int] = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos + len(out), num_examples)
        perm = _epoch_permutation(num_examples, seed, epoch)
        out.extend(perm[offset:offset + batch_size - len(out)])
    return out


def task_vector_norm(params_by_name: Mapping[str, torch.Tensor], base_by_name: Mapping[str, torch.Tensor]) -> float:
    """‖θ − θ₀‖ over parameters paired by name (float64, on the parameters' device, one host sync)."""
    squares = [(p.detach().double() - base_by_name[name].to(p.device, torch.float64)).pow(2).sum()
               for name, p in params_by_name.items()]
    return math.sqrt(float(torch.stack(squares).sum())) if squares else 0.0
