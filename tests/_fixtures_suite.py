"""Fixtures that build a small example suite once per session (filled in by the example-suite work)."""
