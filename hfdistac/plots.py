"""Figures people would rather look at than read: per-layer norms, entropy, reliability diagrams, curves.

Every function writes one PNG (matplotlib, Agg backend, no display needed) and returns its path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def per_layer_norms_plot(series: Mapping[str, Mapping[str, float]], path: str | Path,
                         title: str = "Task-vector norm per layer") -> Path:
    """Grouped bars: one group per layer (embeddings, block.i, final), one bar per model/series."""
    plt = _plt()
    names = list(series)
    groups = list(dict.fromkeys(g for s in series.values() for g in s))
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(groups) * max(1, len(names)) ** 0.5 + 3), 3.6))
    for i, n in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(groups))]
        ax.bar(xs, [series[n].get(g, 0.0) for g in groups], width=width, label=n)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("L2 norm")
    ax.set_title(title)
    if len(names) > 1:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bar_plot(values: Mapping[str, float | None], path: str | Path, *, ylabel: str, title: str,
             threshold: float | None = None, highlight: Sequence[str] = ()) -> Path:
    """One bar per model (e.g. global norm or normalised entropy), optional threshold line; flagged bars red."""
    plt = _plt()
    names = list(values)
    vals = [values[n] if values[n] is not None and math.isfinite(values[n]) else 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names) + 2), 3.4))
    colors = ["tab:red" if n in highlight else "tab:blue" for n in names]
    ax.bar(range(len(names)), vals, color=colors)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    if threshold is not None:
        ax.axhline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
        ax.legend(fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reliability_plot(bins_by_name: Mapping[str, Mapping[str, list[float]]], path: str | Path,
                     title: str = "Reliability diagram") -> Path:
    """Accuracy vs confidence per bin (from :func:`hfdistac.metrics.reliability_bins`), one line per series."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, b in bins_by_name.items():
        pts = [(c, a) for c, a, n in zip(b["confidence"], b["accuracy"], b["count"], strict=True)
               if n > 0 and not math.isnan(c)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves_plot(history: Sequence[Mapping[str, float]], keys: Sequence[str], path: str | Path,
                x: str = "step", title: str = "Training curves") -> Path:
    """One small panel per metric over ``x``."""
    plt = _plt()
    keys = [k for k in keys if any(k in h for h in history)]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3.2 * max(1, len(keys)), 3.0), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=False):
        pts = [(h[x], h[k]) for h in history if k in h and x in h]
        ax.plot([p[0] for p in pts], [p[1] for p in pts])
        ax.set_title(k, fontsize=9)
        ax.set_xlabel(x)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
