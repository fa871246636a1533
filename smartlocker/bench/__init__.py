"""Benchmarks (``smartlocker bench``). Here rather than in ``bench/`` because the CLI
imports them; they need a source checkout for ``scripts/`` (private PostgreSQL)."""
