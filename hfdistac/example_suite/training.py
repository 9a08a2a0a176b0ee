"""Training and evaluation loops of the example suite: contrastive pretraining, fine-tuning, merging checks.

All loops are small, deterministic (explicit ``torch.Generator`` for every random draw) and CPU-friendly:
inputs are pre-processed once into tensors with the suite's own ``CLIPImageProcessor``, so every step is a
plain tensor forward/backward.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
from torch import nn

from ..heads import Head, ZeroShotClassifier
from ..metrics import entropy

logger = logging.getLogger(__name__)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def _cosine_lr(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator):
    """Yield ``steps`` index batches: shuffled epochs over ``range(n)``, the last partial batch dropped."""
    batch_size = min(batch_size, n)
    perm = torch.randperm(n, generator=generator)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm = torch.randperm(n, generator=generator)
            pos = 0
        yield perm[pos:pos + batch_size]
        pos += batch_size


def pretrain_clip(model, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                  steps: int, batch_size: int, lr: float, seed: int, weight_decay: float = 0.1,
                  learn_temperature: bool = True, progress: bool = True) -> list[float]:
    """Contrastive (CLIP InfoNCE) pretraining of both towers on captioned images.

    Args:
        model: A ``transformers.CLIPModel`` (trained in place).
        pixel_values: ``[N, 3, H, W]`` processed images.
        input_ids: ``[N, L]`` caption token ids (one caption per image).
        attention_mask: ``[N, L]``.
        steps: Optimiser steps.
        batch_size: Image-caption pairs per step.
        lr: Peak AdamW learning rate (cosine schedule, 10 % warm-up).
        seed: Seed of the batch order.
        weight_decay: AdamW weight decay.
        learn_temperature: Train ``logit_scale`` too (else it keeps its initial value).
        progress: Show a tqdm bar.

    Returns:
        The loss of every step.
    """
    gen = torch.Generator().manual_seed(seed)
    model.logit_scale.requires_grad_(learn_temperature)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, steps, max(1, steps // 10)))
    model.train()
    losses: list[float] = []
    with _progress(steps, "pretrain base (contrastive)", progress) as bar:
        for idx in _batches(len(pixel_values), batch_size, steps, gen):
            out = model(input_ids=input_ids[idx], attention_mask=attention_mask[idx],
                        pixel_values=pixel_values[idx], return_loss=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():  # CLIP clamps the learned temperature at 100
                model.logit_scale.clamp_(0, math.log(100.0))
            losses.append(float(out.loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def finetune_vision(vision_model: nn.Module, head: Head, pixel_values: torch.Tensor, labels: torch.Tensor, *,
                    steps: int, batch_size: int, lr: float, seed: int, label_smoothing: float = 0.0,
                    weight_decay: float = 0.1, warmup: int = 0, desc: str = "fine-tune",
                    progress: bool = True) -> list[float]:
    """Fine-tune a vision tower through a frozen zero-shot head with cross-entropy (the paper's protocol).

    Args:
        vision_model: A ``CLIPVisionModel`` (trained in place).
        head: The task's frozen zero-shot head.
        pixel_values: ``[N, 3, H, W]`` processed training images.
        labels: ``[N]`` integer labels.
        steps: Optimiser steps.
        batch_size: Images per step.
        lr: Peak AdamW learning rate (cosine schedule after ``warmup`` linear warm-up steps).
        seed: Seed of the batch order.
        label_smoothing: Cross-entropy label smoothing (0.1 makes the model under-confident).
        weight_decay: AdamW weight decay.
        warmup: Linear warm-up steps.
        desc: Progress-bar label.
        progress: Show a tqdm bar.

    Returns:
        The loss of every step.
    """
    gen = torch.Generator().manual_seed(seed)
    clf = ZeroShotClassifier(vision_model, head)
    opt = torch.optim.AdamW(vision_model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, steps, warmup) if warmup else
                                              0.5 * (1.0 + math.cos(math.pi * s / steps)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    clf.train()
    losses: list[float] = []
    with _progress(steps, desc, progress) as bar:
        for idx in _batches(len(pixel_values), batch_size, steps, gen):
            loss = loss_fn(clf(pixel_values[idx]), labels[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vision_model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            bar.update(1)
    clf.eval()
    return losses


@torch.no_grad()
def predict_logits(vision_model: nn.Module, head: Head, pixel_values: torch.Tensor,
                   batch_size: int = 512) -> torch.Tensor:
    """Logits ``[N, C]`` of a vision tower with a frozen head."""
    was_training = vision_model.training
    vision_model.eval()
    out = []
    for i in range(0, len(pixel_values), batch_size):
        pooled = vision_model(pixel_values=pixel_values[i:i + batch_size]).pooler_output
        out.append(head.logits(pooled).float())
    vision_model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, head.num_classes)


def mean_entropy(logits: torch.Tensor) -> float:
    """Mean prediction entropy in nats."""
    return float(entropy(logits).mean())


def vision_params(vision_model: nn.Module) -> dict[str, torch.Tensor]:
    """Floating-point parameters of a ``CLIPVisionModel`` in canonical (``vision_model.``-prefixed) form."""
    return {f"vision_model.{k}": v.detach().clone().float() for k, v in vision_model.named_parameters()}


def load_vision_params(vision_model: nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Copy canonical-keyed parameters into a ``CLIPVisionModel`` in place (every parameter must be given)."""
    params = dict(vision_model.named_parameters())
    missing = [k for k in params if f"vision_model.{k}" not in weights]
    if missing:
        raise KeyError(f"weights lack parameters {missing[:5]}")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(weights[f"vision_model.{k}"])
