"""Terminal tables for command results (the CLI prints; the library never does)."""

from __future__ import annotations

from collections.abc import Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A GitHub-flavoured markdown table (also readable in a terminal)."""

    def fmt(v: object) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":" if a == "r" else ":" + "-" * (w + 1))
                         for w, a in zip(widths, align, strict=True)) + "|"
    body = ["| " + " | ".join(c.rjust(w) if a == "r" else c.ljust(w)
                              for c, w, a in zip(r, widths, align, strict=True)) + " |" for r in cells]
    return "\n".join([line, sep, *body])


def inspect_table(diagnosis) -> str:
    """The ``hfdistac inspect`` summary table plus one recommendation line per flagged model."""
    rows = []
    for m in diagnosis.models:
        rows.append([m.name, m.norm, m.norm_ratio, m.entropy, m.normalized_entropy, m.max_prob, m.accuracy, m.ece,
                     ", ".join(m.flags) or "ok"])
    out = [table(["model", "norm", "ratio", "entropy", "H/logC", "max p", "acc %", "ECE", "verdict"], rows,
                 align="lrrrrrrrl")]
    recs = [(m.name, m.recommendation) for m in diagnosis.models if m.recommendation.get("action") == "distac"]
    if recs:
        out.append("")
        for name, r in recs:
            kappa = f"kappa={r['kappa']:.3g}, " if r.get("target_norm") else ""
            out.append(f"{name}: {r['reason']} -> DisTaC preset '{r['preset']}' ({kappa}T_teacher="
                       f"{r['teacher_temperature']:g}, T_student={r['student_temperature']:g})")
            if r.get("command"):
                out.append(f"    {r['command']}")
    else:
        out.append("\nNo harmful task vectors found: ready to merge.")
    return "\n".join(out)
