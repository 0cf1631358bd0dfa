"""pyproject's explicit package list must match the source folders (setuptools package-dir mapping)."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_package_list_matches_folders():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = cfg["package-dir"]
    assert mapping == {
        "infership": "infership",
        "infership.convert": "convert",
        "infership.runtime": "runtime",
        "infership.calibration": "calibration",
        "infership.bench": "bench",
    }
    found = set()
    for pkg, folder in mapping.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([pkg, *rel.parts]))
    assert set(cfg["packages"]) == found


def test_console_script_and_plugin_declared():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert proj["scripts"]["infership"] == "infership.cli:main"
    assert proj["entry-points"]["pytest11"]["infership"] == "infership.bench.pytest_plugin"
    assert "torch==2.14.1" in proj["optional-dependencies"]["torch"]
