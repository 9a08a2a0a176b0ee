"""Terminal summaries of command results (the CLI prints; the library never does); tables from :mod:`hfdistac.tables`."""

from __future__ import annotations

from ..tables import table


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
