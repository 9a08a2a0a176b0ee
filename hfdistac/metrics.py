"""Classification metrics on logits: accuracy, prediction entropy, max probability, ECE, NLL.

Pure tensor functions (no I/O, no logging). Entropy is in nats, averaged over examples. ECE uses 15
equal-width confidence bins (Guo et al., 2017).
"""

from __future__ import annotations

import torch


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-example entropy (nats) of ``softmax(logits)``; shape ``[B]``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def top1_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent, counted exactly (``100 * correct / n`` in Python floats, so 193 of 200 is
    96.5, not float32's 96.4999...)."""
    n = int(labels.numel())
    return 100.0 * int((logits.argmax(dim=-1) == labels).sum()) / n if n else float("nan")


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width bins over the max probability."""
    probs = torch.softmax(logits.float(), dim=-1)
    conf, pred = probs.max(dim=-1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.float().mean() * (conf[in_bin].mean() - correct[in_bin].mean()).abs()
    return float(ece)


def reliability_bins(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict[str, list[float]]:
    """Per-bin confidence, accuracy and count, for reliability diagrams."""
    probs = torch.softmax(logits.float(), dim=-1)
    conf, pred = probs.max(dim=-1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    out: dict[str, list[float]] = {"lower": [], "upper": [], "confidence": [], "accuracy": [], "count": []}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        n = int(in_bin.sum())
        out["lower"].append(float(lo))
        out["upper"].append(float(hi))
        out["count"].append(n)
        out["confidence"].append(float(conf[in_bin].mean()) if n else float("nan"))
        out["accuracy"].append(float(correct[in_bin].mean()) if n else float("nan"))
    return out


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
    """Summary metrics of a set of predictions.

    Args:
        logits: ``[N, C]``.
        labels: ``[N]`` integer labels, or ``None`` for unlabeled data.

    Returns:
        ``{"entropy", "max_prob", "n"}`` plus ``{"accuracy", "ece", "nll"}`` when labels are given
        (accuracy in percent).
    """
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    out = {
        "n": int(logits.shape[0]),
        "entropy": float(entropy(logits).mean()),
        "max_prob": float(probs.max(dim=-1).values.mean()),
    }
    if labels is not None:
        labels = labels.long()
        out["accuracy"] = top1_accuracy(logits, labels)
        out["ece"] = expected_calibration_error(logits, labels)
        out["nll"] = float(torch.nn.functional.cross_entropy(logits, labels))
    return out
