"""Fixtures shared with tests/ (artifacts, markers), and the wrapper-overhead summary of ``make bench``."""

from __future__ import annotations

import pytest

from tests.conftest import *  # noqa: F403 - share the artifact fixtures and markers

#: The command that regenerates the figures printed below (``make bench`` runs it).
BENCH_COMMAND = ".venv/bin/python -m pytest benchmarks --benchmark-enable --benchmark-only"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the wrapper overhead measured in this session and record it as JSON (only when measured)."""
    from benchmarks.wrapper_overhead import RECORDED, write_json

    if not RECORDED:
        return
    terminalreporter.section("Predictor.predict overhead over the raw runtime call")
    for row in RECORDED:
        terminalreporter.write_line(row.line())
    path = write_json(RECORDED, command=BENCH_COMMAND)
    terminalreporter.write_line(f"written: {path} (regenerate: make bench = {BENCH_COMMAND})")
