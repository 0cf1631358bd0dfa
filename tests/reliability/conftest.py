"""Fuzzing profiles and the tally of cases tried.

``make test`` runs the ``ci`` profile: a few tens of examples per boundary, derandomized (a fixed seed per
test), no example database. ``make fuzz`` sets ``INFERSHIP_FUZZ=fuzz``: thousands of random examples per
boundary (``INFERSHIP_FUZZ_EXAMPLES``, default 2000); a failure prints the seed that reproduces it. With
``INFERSHIP_FUZZ_REPORT=FILE`` the tally of cases per boundary and outcome is written there as JSON.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import pytest

PROFILE = os.environ.get("INFERSHIP_FUZZ", "ci")

try:
    from hypothesis import HealthCheck, settings

    _common = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck), print_blob=True)
    settings.register_profile("ci", max_examples=25, derandomize=True, **_common)
    settings.register_profile(
        "fuzz", max_examples=int(os.environ.get("INFERSHIP_FUZZ_EXAMPLES", "2000")), **_common
    )
    settings.load_profile(PROFILE)
except ImportError:  # the fuzz tests skip themselves; the rest of the folder runs without hypothesis
    pass

_TALLY: dict[str, Counter[str]] = defaultdict(Counter)


class Tally:
    """Counts fuzzed cases per boundary and outcome (``accepted`` / the error class that refused it)."""

    def add(self, boundary: str, outcome: str) -> None:
        _TALLY[boundary][outcome] += 1


@pytest.fixture(scope="session")
def tally() -> Tally:
    return Tally()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    out = os.environ.get("INFERSHIP_FUZZ_REPORT")
    if not out or not _TALLY:
        return
    report = {
        "profile": PROFILE,
        "boundaries": {
            name: {"cases": sum(c.values()), "outcomes": dict(sorted(c.items()))}
            for name, c in sorted(_TALLY.items())
        },
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
