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


def _save(fig, path: str | Path) -> Path:
    """Lay out, write as PNG and close a figure."""
    plt = _plt()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


def coefficients_heatmap(coefficients, task_names: Sequence[str], parameter_names: Sequence[str], path: str | Path,
                         title: str = "Learned merging coefficients") -> Path:
    """Heat-map of layer-wise merging coefficients: one row per task, one column per parameter tensor.

    Columns are put in model order (embeddings, block.0, block.1, …, final; stable within a group, whatever
    the order of ``parameter_names``); x ticks mark the first tensor of each layer group (embeddings, block.i,
    final). The colour scale is centred on 0 when coefficients of both signs occur.

    Args:
        coefficients: ``[T, L]`` tensor or array (e.g. SAMerging's Λ).
        task_names: The T row labels.
        parameter_names: The L parameter names (canonical keys), in column order.
        path: Where to write the PNG.
        title: Figure title.
    """
    import numpy as np

    from .task_vectors import parameter_group

    plt = _plt()
    values = np.asarray(coefficients.detach().cpu() if hasattr(coefficients, "detach") else coefficients,
                        dtype=float)
    n_tasks, n_params = values.shape
    groups = [parameter_group(n) for n in parameter_names]

    def model_order(i: int) -> tuple[int, int]:  # safetensors files sort keys (layers.10 < layers.2): undo that
        g = groups[i]
        return (0, 0) if g == "embeddings" else (2, 0) if g == "final" else (1, int(g.split(".")[1]))

    order = sorted(range(n_params), key=model_order)
    values, groups = values[:, order], [groups[i] for i in order]
    fig, ax = plt.subplots(figsize=(min(18.0, max(6.0, 0.06 * n_params + 3)), max(2.4, 0.4 * n_tasks + 1.4)))
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if lo < 0 < hi:
        bound = max(-lo, hi)
        image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
    else:
        image = ax.imshow(values, aspect="auto", cmap="viridis", interpolation="nearest")
    starts = [i for i, g in enumerate(groups) if i == 0 or g != groups[i - 1]]
    ax.set_xticks(starts)
    ax.set_xticklabels([groups[i] for i in starts], rotation=45, ha="right", fontsize=7)
    for i in starts[1:]:
        ax.axvline(i - 0.5, color="white", linewidth=0.5)
    ax.set_yticks(range(n_tasks))
    ax.set_yticklabels(list(task_names), fontsize=8)
    ax.set_xlabel(f"parameter tensor ({n_params}, model order)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    return _save(fig, path)


def sweep_plot(rows: Sequence[Mapping[str, float | str]], path: str | Path, *, x: str = "multiple",
               y: str = "mean_normalized_accuracy", group: str = "mode",
               title: str = "Norm matching: shrink the long vector or stretch the others") -> Path:
    """One line per group (e.g. shrink / stretch) of ``y`` against ``x`` (log-scaled), for the κ sweep."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for g in dict.fromkeys(r[group] for r in rows):
        pts = sorted((float(r[x]), float(r[y])) for r in rows if r[group] == g and r[y] is not None)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=str(g))
    ax.set_xscale("log", base=2)
    ax.axvline(1.0, color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel("multiple of the norm-matching rescaling")
    ax.set_ylabel("merged mean normalised accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)
