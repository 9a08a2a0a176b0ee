"""Markdown tables (GitHub-flavoured, also readable in a terminal) for reports, cards and the CLI.

A library helper: ``merge`` writes its results table into ``results.md`` and cards, the demo writes
``table1.md``, and the CLI prints the same text. The CLI imports this module, never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence


def format_cell(v: object) -> str:
    """One cell: ``-`` for missing values, 4 significant digits for floats."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A GitHub-flavoured markdown table with padded columns.

    Args:
        headers: Column titles.
        rows: Cell values (floats are shown to 4 significant digits, ``None`` as ``-``).
        align: One letter per column, ``l`` or ``r`` (default: first left, the rest right).
    """
    cells = [[format_cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":" if a == "r" else ":" + "-" * (w + 1))
                         for w, a in zip(widths, align, strict=True)) + "|"
    body = ["| " + " | ".join(c.rjust(w) if a == "r" else c.ljust(w)
                              for c, w, a in zip(r, widths, align, strict=True)) + " |" for r in cells]
    return "\n".join([line, sep, *body])
