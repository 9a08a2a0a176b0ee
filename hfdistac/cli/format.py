"""Terminal summaries of command results (the CLI prints; the library never does); tables from :mod:`hfdistac.tables`."""

from __future__ import annotations


def inspect_table(diagnosis) -> str:
    """The ``hfdistac inspect`` summary table plus one recommendation line per flagged model."""
    from ..diagnosis import diagnosis_summary

    return diagnosis_summary(diagnosis)
