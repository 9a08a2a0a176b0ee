"""The paper's side of the demo: its Table 1 (ViT-B/32), the TIES density equivalent to its 10 %, and the
Markdown table that puts our numbers beside its own with the share of each drop DisTaC recovers."""

from __future__ import annotations

SCENARIO_NAMES = ["original", "norm mismatch", "norm mismatch + DisTaC", "low confidence", "low confidence + DisTaC"]

#: The DisTaC paper's Table 1, ViT-B/32, mean normalised accuracy (%). Zero-shot: ≈ 52.6 (its absolute
#: mean over the individual models' mean; the paper does not print a normalised zero-shot row).
PAPER_TABLE1 = {
    "task_arithmetic": [78.0, 71.8, 78.2, 58.3, 72.2],
    "ties": [82.0, 66.4, 81.0, 62.0, 77.9],
    "consensus": [82.8, 77.0, 82.2, 62.0, 76.5],
    "tsvm": [92.4, 80.2, 91.8, 68.4, 91.8],
}
PAPER_ZERO_SHOT = 52.6
#: The paper's TIES keeps 10 % of the whole CLIP vector, text tower (whose task vector is zero) included.
PAPER_TIES_FRACTION = 0.1


def paper_equivalent_density(base) -> dict:
    """TIES density over the vision tower equivalent to the paper's 10 % of the whole CLIP model.

    The paper's TIES (through the TSV-M / Consensus code) flattens the *whole* CLIP state dict, whose text
    tower's task vector is zero, and keeps its top 10 %: all of them vision entries. Over the vision tower
    that is ``0.1 · N_CLIP / N_vision`` (0.172 for ViT-B/32: 151.3M / 87.8M parameters).

    Args:
        base: A ``CLIPModel`` directory (the suite's ``base``) or its ``CLIPConfig``.

    Returns:
        ``{"density", "clip_parameters", "vision_parameters"}``.
    """
    import torch
    from transformers import CLIPConfig, CLIPModel

    config = base if isinstance(base, CLIPConfig) else CLIPConfig.from_pretrained(base)
    with torch.device("meta"):
        model = CLIPModel(config)
    total = sum(p.numel() for p in model.parameters())
    # open_clip's image encoder, which the paper fine-tunes, includes the projection
    vision = sum(p.numel() for m in (model.vision_model, model.visual_projection) for p in m.parameters())
    return {"density": round(min(1.0, PAPER_TIES_FRACTION * total / vision), 4), "clip_parameters": total,
            "vision_parameters": vision}


def recovery(table: dict, method: str, harm: str) -> dict | None:
    """Drop and recovered share of one harm (``"norm mismatch"`` or ``"low confidence"``) for one method.

    drop = original − harmed; recovered = (harmed + DisTaC − harmed) / drop, in normalised points (%).
    """
    try:
        orig, bad, fixed = (table[s][method]["mean_normalized_accuracy"] for s in
                            ("original", harm, f"{harm} + DisTaC"))
    except KeyError:
        return None
    drop = orig - bad
    return {"drop": round(drop, 2), "recovered_points": round(fixed - bad, 2),
            "recovered_percent": round(100.0 * (fixed - bad) / drop, 1) if abs(drop) > 1e-9 else None}


def _paper_recovery(method: str, harm: str) -> dict | None:
    if method not in PAPER_TABLE1:
        return None
    p = dict(zip(SCENARIO_NAMES, PAPER_TABLE1[method], strict=True))
    drop = p["original"] - p[harm]
    return {"drop": round(drop, 1), "recovered_percent": round(100.0 * (p[f"{harm} + DisTaC"] - p[harm]) / drop)}


def table1_markdown(table: dict, methods: list[str], runs: int = 1, ties: dict | None = None) -> str:
    """Table 1 in miniature beside the paper's (ViT-B/32): cells = mean normalised accuracy % (ours: mean
    absolute accuracy in brackets), then each harm's drop and the share DisTaC recovers."""
    from ..merging import MERGE_METHODS
    from ..tables import table as md_table

    scenarios = [s for s in SCENARIO_NAMES if s in table]
    rows = []
    for key in ["zero-shot", "individual", *methods]:
        label = MERGE_METHODS[key].pretty_name if key in MERGE_METHODS else key
        paper = PAPER_TABLE1.get(key) or ([PAPER_ZERO_SHOT] * 5 if key == "zero-shot" else
                                          [100.0] * 5 if key == "individual" else None)
        cells = []
        for s in scenarios:
            c = table[s].get(key)
            ours = f"{c['mean_normalized_accuracy']:.1f} ({c['mean_accuracy']:.1f})" if c else "-"
            ref = "" if paper is None else f" · {'≈' if key == 'zero-shot' else ''}{paper[SCENARIO_NAMES.index(s)]:.1f}"
            cells.append(ours + ref)
        rows.append([label, *cells])
    lines = ["Mean normalised accuracy % (mean absolute accuracy %) over the suite's tasks, test split, "
             "· the paper's Table 1 (ViT-B/32, normalised) where it has the method. Each scenario is normalised "
             "by its own source models. alpha chosen on the suite's holdout split (never fine-tuned on); "
             f"norm mismatch: mean of {runs} run(s), each task's high-learning-rate model in turn."]
    if ties:
        lines.append(f"TIES density {ties['density']:g} of the vision entries = the paper's 10 % of the whole CLIP "
                     f"model ({ties['clip_parameters']:,} parameters, {ties['vision_parameters']:,} vision).")
    lines += ["", md_table(["method", *scenarios], rows, align="l" + "r" * len(scenarios)), ""]
    rec_rows = []
    for key in methods:
        cells = []
        for harm in ("norm mismatch", "low confidence"):
            ours, paper = recovery(table, key, harm), _paper_recovery(key, harm)
            cells.append("-" if ours is None else f"{ours['drop']:.1f}" + (f" · {paper['drop']:.1f}" if paper else ""))
            pct = None if ours is None else ours["recovered_percent"]
            cells.append(("-" if pct is None else f"{pct:.0f} %") + (f" · {paper['recovered_percent']} %" if paper
                                                                      else ""))
        rec_rows.append([MERGE_METHODS[key].pretty_name, *cells])
    lines += ["Drop = original − harmed (normalised points); recovered = share of the drop that DisTaC wins back "
              "(ours · paper).", "",
              md_table(["method", "norm-mismatch drop", "recovered", "low-confidence drop", "recovered"], rec_rows)]
    return "\n".join(lines)
