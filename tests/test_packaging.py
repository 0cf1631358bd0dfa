"""pyproject's explicit package list must match the source folders (setuptools package-dir mapping)."""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: the backport, installed by the project's own dependencies there
    import tomli as tomllib  # type: ignore[no-redef]

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
        "infership.serve": "serve",
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


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _names(reqs: list[str]) -> set[str]:
    import re

    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].strip().lower() for r in reqs}


def test_documented_converter_extras_give_a_working_converter():
    """`[torch,convert,ort]` (CPU) and `[torch,convert,gpu]` must bring torch, onnx, OpenVINO (the default int8
    target) and exactly one ONNX Runtime build (export checks and int8 validation run on it)."""
    extras = _extras()
    readme = (ROOT / "README.md").read_text()
    for combo in (("torch", "convert", "ort"), ("torch", "convert", "gpu")):
        names = set().union(*(_names(extras[e]) for e in combo))
        assert {"torch", "onnx", "openvino", "nncf"} <= names, combo
        assert len(names & {"onnxruntime", "onnxruntime-gpu"}) == 1, combo
    assert "infership[torch,convert,ort]" in readme


def test_no_extra_installs_both_onnxruntime_builds():
    extras = _extras()

    def expand(name: str) -> set[str]:
        out: set[str] = set()
        for req in extras[name]:
            if req.startswith("infership["):
                for inner in req[len("infership[") : req.index("]")].split(","):
                    out |= expand(inner)
            else:
                out |= _names([req])
        return out

    for name in extras:
        both = {"onnxruntime", "onnxruntime-gpu"} <= expand(name)
        assert not both, f"extra {name!r} installs both onnxruntime and onnxruntime-gpu"
    assert "onnxruntime" in expand("all") and "onnxruntime-gpu" not in expand("all")
    assert "onnxruntime-gpu" in expand("all-gpu") and "onnxruntime" not in expand("all-gpu")
    assert expand("all") - {"onnxruntime"} == expand("all-gpu") - {"onnxruntime-gpu"}
