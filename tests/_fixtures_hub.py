"""Fixtures for the loopback Hub server (filled in by the Hub publishing work)."""
