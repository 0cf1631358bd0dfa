"""Shared by the CI-gate studies (``gate_study.py``, ``gate_acceptance.py``): building the artifacts with the
``infership export`` command, running ``infership`` commands, and recording the machine's load."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INFERSHIP = [sys.executable, "-m", "infership.cli"]
#: Where the studies keep their recordings and figures (``/runs/`` is not committed).
RUNS = ROOT / "runs" / "bench"


def loadavg() -> str:
    """``/proc/loadavg``'s 1/5/15-minute averages (``"?"`` where there is none)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def export(model: str, shape: str, out: Path, *, name: str | None = None) -> Path:
    """``infership export MODEL -o OUT --input-shape SHAPE`` (ONNX fp32 only), unless OUT already exists."""
    if (out / "manifest.json").exists():
        return out
    cmd = [*INFERSHIP, "export", model, "-o", str(out), "--input-shape", shape, "--no-fp16", "--no-openvino",
           "--no-torch", "--force"]  # fmt: skip
    if name:
        cmd += ["--name", name]
    run(cmd)
    return out


def copy_artifact(src: Path, dest: Path) -> Path:
    """A byte-identical copy of an artifact (an 'unchanged' model built twice)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest)
    return dest


def run(cmd: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository root with the repository's packages importable; output captured."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    return proc


class Stopwatch:
    """Seconds since creation, for progress lines."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __str__(self) -> str:
        return f"{time.monotonic() - self.t0:6.0f} s"
