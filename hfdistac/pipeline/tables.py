"""A run's "Table 1" (each method with and without DisTaC, per task and mean, absolute and normalised) and its card.

Pure functions of the merge reports and the run's report: nothing is evaluated here.
"""

from __future__ import annotations

from typing import Any

SCENARIOS = {"original": "without DisTaC", "distac": "with DisTaC"}


def _rows(result: dict) -> dict[str, Any]:
    return {"mean_accuracy": result["mean_accuracy"], "mean_normalized_accuracy": result["mean_normalized_accuracy"],
            "alpha": result["alpha"], "tasks": {t["name"]: {"accuracy": t["accuracy"],
                                                            "normalized_accuracy": t["normalized_accuracy"]}
                                                 for t in result.get("tasks", [])}}


def run_table(merges: dict[str, dict], methods: list[str]) -> dict[str, Any]:
    """``{method: {"original": row, "distac": row}}`` plus the ``zero-shot`` and ``individual`` rows; a row holds
    the mean accuracy, mean normalised accuracy, α and each task's accuracy and normalised accuracy. The "with
    DisTaC" merge is normalised by the models it conditioned (the original fine-tunes), as the paper does."""
    table: dict[str, Any] = {}
    for scenario, report in merges.items():
        by_method = {r["method"]: r for r in report["results"]}
        for m in methods:
            if m in by_method:
                table.setdefault(m, {})[scenario] = _rows(by_method[m])
    original = merges["original"]
    zs = original["zero_shot"]
    table["zero-shot"] = {"original": {"mean_accuracy": zs["mean_accuracy"],
                                       "mean_normalized_accuracy": zs["mean_normalized_accuracy"],
                                       "tasks": {k: {"accuracy": v, "normalized_accuracy":
                                                     (zs.get("normalized_accuracy") or {}).get(k)}
                                                 for k, v in zs["accuracy"].items()}}}
    table["individual"] = {"original": {"mean_accuracy": original["individual"]["mean_accuracy"],
                                        "mean_normalized_accuracy": 100.0,
                                        "tasks": {k: {"accuracy": v, "normalized_accuracy": 100.0}
                                                  for k, v in original["individual"]["accuracy"].items()}}}
    return table


def _f(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def table_markdown(report: dict) -> str:
    """The run's tables as Markdown: means, then normalised accuracy per task, then the diagnostics."""
    from ..cards import markdown_cell

    table, methods = report["table"], report["methods"]
    with_distac = any("distac" in table.get(m, {}) for m in methods)
    head = "| method | mean acc. | mean norm. acc. | α |" + (
        " + DisTaC mean acc. | + DisTaC mean norm. acc. | α | Δ norm. acc. |" if with_distac else "")
    lines = ["### Mean accuracy (%) over tasks", "", head,
             "|:--" + "|--:" * (3 + (4 if with_distac else 0)) + "|"]
    for name in ["zero-shot", "individual", *methods]:
        o, d = table[name].get("original", {}), table[name].get("distac")
        row = f"| {name} | {_f(o.get('mean_accuracy'))} | {_f(o.get('mean_normalized_accuracy'))} | " \
              f"{_f(o.get('alpha'), 2) if 'alpha' in o else ''} |"
        if with_distac:
            delta = None if d is None else d["mean_normalized_accuracy"] - o["mean_normalized_accuracy"]
            row += (f" {_f(d['mean_accuracy'])} | {_f(d['mean_normalized_accuracy'])} | {_f(d['alpha'], 2)} | "
                    f"{'+' if delta and delta > 0 else ''}{_f(delta)} |" if d else " | | | |")
        lines.append(row)
    tasks = list(table["individual"]["original"]["tasks"])
    lines += ["", "### Normalised accuracy (%) per task" + (" (without → with DisTaC)" if with_distac else ""), "",
              "| method | " + " | ".join(markdown_cell(t) for t in tasks) + " |",
              "|:--" + "|--:" * len(tasks) + "|"]
    for name in ["zero-shot", *methods]:
        cells = []
        for t in tasks:
            o = table[name]["original"]["tasks"].get(t, {}).get("normalized_accuracy")
            d = table[name].get("distac", {}).get("tasks", {}).get(t, {}).get("normalized_accuracy")
            cells.append(_f(o) + (f" → {_f(d)}" if d is not None else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "### What the diagnosis found and what was done", "",
              "| task | norm | ratio to the others | entropy / log C | flags | DisTaC |",
              "|:--|--:|--:|--:|:--|:--|"]
    for name, d in report["diagnosis"].items():
        c = report["conditioned"].get(name)
        done = "–" if c is None else (f"{c['preset']}: κ = {_f(c['kappa'], 3)}, T = ({c['teacher_temperature']:g}, "
                                      f"{c['student_temperature']:g}); ‖τ‖ {_f(c['norm_before'], 3)} → "
                                      f"{_f(c['norm_after'], 3)}")
        lines.append(f"| {markdown_cell(name)} | {_f(d['norm'], 3)} | {_f(d['norm_ratio'], 2)} | "
                     f"{_f(d['normalized_entropy'], 3)} | {', '.join(d['flags']) or 'ok'} | {done} |")
    return "\n".join(lines)


def run_card(report: dict) -> str:
    """README of a run's output directory: what was flagged, what was done, the tables, where each output is."""
    from pathlib import Path

    from ..cards import is_hub_id, markdown_cell, public_name, render_card

    pushed = report.get("pushed") or {}
    outputs = [{"what": f"merge with {m}" + (" (with DisTaC)" if "distac" in report["table"].get(m, {}) else ""),
                "where": pushed.get("merges", {}).get(m) or f"merges/{'distac' if 'distac' in report['table'].get(m, {}) else 'original'}/{m}"}
               for m in report["methods"]]
    outputs += [{"what": f"{markdown_cell(name)} conditioned with DisTaC",
                 "where": pushed.get("conditioned", {}).get(name) or f"conditioned/{Path(c['output']).name}"}
                for name, c in report["conditioned"].items()]
    sources = [d["reference"] for d in report["diagnosis"].values()]
    card_data = {"base_model": [s.split("@")[0] for s in sources if is_hub_id(s)] or None,
                 "base_model_relation": "merge" if any(is_hub_id(s) for s in sources) else None,
                 "library_name": "transformers", "tags": ["hfdistac", "distac", "model-merging", "clip"]}
    flagged = {n: c["why"] for n, c in report["conditioned"].items()}
    return render_card("run_card.md.j2", {
        "card_data": card_data, "title": f"hfdistac run: {markdown_cell(report['name'])}",
        "base": public_name(report["base"]), "n_tasks": len(report["diagnosis"]),
        "flagged": {markdown_cell(k): markdown_cell(v or "") for k, v in flagged.items()},
        "tables": table_markdown(report), "outputs": outputs, "collection": pushed.get("collection"),
        "methods": report["methods"], "stages": report.get("stages", [])})
