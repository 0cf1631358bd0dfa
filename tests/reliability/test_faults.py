"""Faults: a write that fails (ENOSPC injected, and for real from /dev/full) and commands killed with
SIGKILL at instrumented points leave the previous artifact or results loadable and hash-valid; the next
run removes what the interrupted one left behind.

The kill points come from the ``INFERSHIP_FAULT`` hook (:mod:`infership.runtime.atomic`). ``make test``
runs one kill point per command; ``INFERSHIP_FAULTS=all`` (``make fuzz``) runs every point, plus kills
after a few seconds at whatever the command is doing then.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from infership.runtime import Artifact, ArtifactWriter
from infership.runtime.atomic import FAULT_ENV, write_text_atomic
from infership.runtime.errors import StorageError

from infership import InfershipError

ALL = os.environ.get("INFERSHIP_FAULTS") == "all"


def _leftovers(*folders: Path) -> list[str]:
    """Temporary files and folders of interrupted writes (and locks) in ``folders``."""
    out = []
    for folder in folders:
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.endswith((".tmp", ".lock")) or p.name.startswith(
                    (".infership-stage", ".infership-commit")
                ):
                    out.append(str(p))
    return sorted(out)


# -------------------------------------------------------------------------------------- failed writes
def test_enospc_in_the_atomic_write_leaves_the_file(tmp_path: Path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("previous\n")
    monkeypatch.setenv(FAULT_ENV, "enospc:atomic.write")
    with pytest.raises(StorageError, match="No space left on device; nothing was replaced") as info:
        write_text_atomic(target, "new content " * 1000)
    assert isinstance(info.value, (OSError, InfershipError))
    assert target.read_text() == "previous\n"
    assert _leftovers(tmp_path) == []


def test_real_enospc_from_dev_full_leaves_the_file(tmp_path: Path, monkeypatch):
    """The kernel's own ENOSPC: the temporary file the helper writes is /dev/full."""
    import infership.runtime.atomic as atomic

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    target = tmp_path / "manifest.json"
    target.write_text("previous\n")

    def full(directory: Path, name: str, *, folder: bool = False) -> Path:
        link = directory / f".{name}.{os.getpid()}.full.tmp"
        link.symlink_to("/dev/full")
        return link

    monkeypatch.setattr(atomic, "make_temp", full)
    with pytest.raises(StorageError, match="No space left on device"):
        write_text_atomic(target, "x" * 100_000)
    assert target.read_text() == "previous\n"
    assert _leftovers(tmp_path) == []
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode), "/dev/full is untouched"


def test_devices_are_never_replaced(tmp_path: Path):
    with pytest.raises(InfershipError, match="not a regular file"):
        write_text_atomic("/dev/full", "{}")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


@pytest.mark.parametrize("write", [1, 2])  # the commit journal, then the manifest
def test_enospc_during_an_artifact_commit_keeps_the_artifact(tiny_artifact, tmp_path, monkeypatch, write):
    art = Path(shutil.copytree(tiny_artifact, tmp_path / "art"))
    before = (art / "manifest.json").read_bytes()
    files_before = sorted(p.name for p in art.rglob("*"))
    src = tmp_path / "new.onnx"
    src.write_bytes((art / "model.onnx").read_bytes())
    monkeypatch.setenv(FAULT_ENV, f"enospc:atomic.write#{write}")
    with pytest.raises(StorageError):
        with ArtifactWriter.update(Artifact.load(art)) as w:
            rel = w.add_file(src, "model.onnx")
            w.put_variant("onnx-fp16", format="onnx", precision="fp16", files=[rel])
            w.commit()
    monkeypatch.delenv(FAULT_ENV)
    assert (art / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in art.rglob("*")) == files_before, "nothing left in the artifact"
    assert _leftovers(art, tmp_path) == []
    Artifact.load(art).verify_all()


# -------------------------------------------------------------------------------------- killed commands
TINY = """
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()
"""
EXPORT = [
    "tiny.py:build",
    "--input-shape",
    "1x3x8x8",
    "--no-openvino",
    "--no-fp16",
    "--task",
    "classification",
]
QUANTIZE = ["--calibration", "calib.npy", "--target", "ort", "--samples", "16", "--no-progress"]
BENCH = ["--backend", "ort-cpu", "--duration", "0.2", "--batch", "1", "--no-overhead"]
PIPELINE = ["tiny.py:build", "--input-shape", "1x3x8x8", "--calibration", "calib.npy", "--samples", "16",
            "--int8-targets", "ort", "--backends", "ort-cpu", "--precisions", "fp32,int8", "--batch", "1",
            "--duration", "0.2", "--task", "classification"]  # fmt: skip


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tiny.py").write_text(TINY)
        np.save(
            root / "calib.npy", np.random.default_rng(0).standard_normal((32, 3, 8, 8)).astype(np.float32)
        )
        self.scratch = root / "scratch"
        self.scratch.mkdir()
        self.env = {
            **os.environ,
            "TMPDIR": str(self.scratch),
            "XDG_CACHE_HOME": str(root / "cache"),
            "XDG_DATA_HOME": str(root / "data"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        }
        self.env.pop(FAULT_ENV, None)

    def run(self, *args: str, fault: str | None = None, kill_after: float | None = None):
        env = dict(self.env)
        if fault:
            env[FAULT_ENV] = fault
        cmd = [sys.executable, "-m", "infership", "-q", *args]
        proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if kill_after is not None:
            try:
                out, _ = proc.communicate(timeout=kill_after)
                return proc.returncode, out.decode(errors="replace")
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=600)
        return proc.returncode, out.decode(errors="replace")


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    w = Workspace(tmp_path_factory.mktemp("faults"))
    rc, out = w.run("export", *EXPORT, "-o", "base")
    assert rc == 0, out
    rc, out = w.run("bench", "base", *BENCH, "--json", "base-bench.json")
    assert rc == 0, out
    return w


def _killed(rc: int, out: str, point: str | None) -> None:
    if point is None:  # killed on a timer: it may have finished first
        assert rc in (0, -signal.SIGKILL), out
    else:
        assert rc == -signal.SIGKILL, f"the fault point {point} was not reached:\n{out[-2000:]}"


def _copy(ws: Workspace, name: str) -> Path:
    dest = ws.root / name
    shutil.rmtree(dest, ignore_errors=True)
    return Path(shutil.copytree(ws.root / "base", dest, symlinks=True))


def _intact(art: Path, allowed: set[bytes]) -> None:
    loaded = Artifact.load(art)
    loaded.verify_all()
    assert (art / "manifest.json").read_bytes() in allowed, (
        "the manifest is the previous one or a complete new one"
    )


EXPORT_POINTS = ["replace_dir.exchanged"]
EXPORT_POINTS += (
    ["writer.staged#1", "writer.staged#2", "writer.commit", "atomic.before_replace", 4.0] if ALL else []
)
QUANTIZE_POINTS = ["writer.moved#1"]
QUANTIZE_POINTS += (
    ["writer.staged#1", "atomic.before_replace#1", "atomic.before_replace#2", "writer.committed", 3.0]
    if ALL
    else []
)


@pytest.mark.slow
@pytest.mark.parametrize("point", EXPORT_POINTS, ids=str)
def test_export_killed_keeps_the_previous_artifact(ws: Workspace, point):
    art = _copy(ws, f"export-{point}")
    before = (art / "manifest.json").read_bytes()
    fault = None if isinstance(point, float) else f"kill:{point}"
    rc, out = ws.run("export", *EXPORT, "-o", art.name, "--force", fault=fault,
                     kill_after=point if isinstance(point, float) else None)  # fmt: skip
    _killed(rc, out, fault)
    if point == "replace_dir.exchanged":  # killed inside the export: its scratch is still there
        assert [p for p in ws.scratch.iterdir() if "infership" in p.name], "expected the killed run's scratch"
    after_kill = (art / "manifest.json").read_bytes()
    swapped = point == "replace_dir.exchanged" or rc == 0 or isinstance(point, float)
    _intact(art, {before, after_kill} if swapped else {before})
    rc, out = ws.run("export", *EXPORT, "-o", art.name, "--force")
    assert rc == 0, out
    Artifact.load(art).verify_all()
    assert _leftovers(art, ws.root) == [], "the next run removed what the killed one left"
    # The killed export's scratch (.infership-build.PID.*.tmp, named after its dead process) is gone: the
    # next run removed it. Any other infership scratch left in TMPDIR counts too.
    SCRATCH_LEFT.extend(p.name for p in ws.scratch.iterdir() if "infership" in p.name)


SCRATCH_LEFT: list[str] = []


@pytest.mark.slow
def test_export_scratch_is_cleaned_by_the_next_run():
    assert EXPORT_POINTS, "runs after the export kill tests"
    assert SCRATCH_LEFT == [], f"scratch folders of killed exports still in TMPDIR: {SCRATCH_LEFT}"


@pytest.mark.slow
@pytest.mark.parametrize("point", QUANTIZE_POINTS, ids=str)
def test_quantize_killed_keeps_the_artifact(ws: Workspace, point):
    art = _copy(ws, f"quantize-{point}")
    before = (art / "manifest.json").read_bytes()
    fault = None if isinstance(point, float) else f"kill:{point}"
    rc, out = ws.run("quantize", art.name, *QUANTIZE, fault=fault,
                     kill_after=point if isinstance(point, float) else None)  # fmt: skip
    _killed(rc, out, fault)
    now = (art / "manifest.json").read_bytes()
    # On a timer the kill may land after the commit: the new manifest is then on disk, complete.
    committed = point == "writer.committed" or rc == 0 or (isinstance(point, float) and now != before)
    _intact(art, {before, now} if committed else {before})
    if committed:
        assert "onnx-int8" in {v.id for v in Artifact.load(art).manifest.variants}
    rc, out = ws.run("quantize", art.name, *QUANTIZE)
    assert rc == 0, out
    loaded = Artifact.load(art)
    loaded.verify_all()
    assert "onnx-int8" in {v.id for v in loaded.manifest.variants}
    listed = {f.path for v in loaded.manifest.variants for f in v.files} | {"manifest.json"}
    on_disk = {str(p.relative_to(art)) for p in art.rglob("*") if p.is_file()}
    assert on_disk == listed, f"files no manifest lists: {sorted(on_disk - listed)}"
    assert _leftovers(art, ws.root) == []


@pytest.mark.slow
@pytest.mark.parametrize("point", ["atomic.before_replace", *([1.0] if ALL else [])], ids=str)
def test_bench_json_killed_keeps_the_previous_results(ws: Workspace, point):
    results = ws.root / f"bench-{point}.json"
    shutil.copy(ws.root / "base-bench.json", results)
    before = results.read_bytes()
    fault = None if isinstance(point, float) else f"kill:{point}"
    rc, out = ws.run("bench", "base", *BENCH, "--json", results.name, fault=fault,
                     kill_after=point if isinstance(point, float) else None)  # fmt: skip
    _killed(rc, out, fault)
    assert results.read_bytes() == before or rc == 0
    json.loads(results.read_text())
    rc, out = ws.run("bench", "base", *BENCH, "--json", results.name)
    assert rc == 0, out
    assert results.read_bytes() != before
    json.loads(results.read_text())
    assert [p for p in _leftovers(ws.root) if results.name in p] == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "point", ["writer.moved#1", *(["atomic.before_replace#3", 8.0] if ALL else [])], ids=str
)
def test_pipeline_killed_resumes_and_cleans_up(ws: Workspace, point):
    out_dir = ws.root / f"pipeline-{point}"
    shutil.rmtree(out_dir, ignore_errors=True)
    fault = None if isinstance(point, float) else f"kill:{point}"
    start = time.monotonic()
    rc, out = ws.run("pipeline", *PIPELINE, "-o", out_dir.name, fault=fault,
                     kill_after=point if isinstance(point, float) else None)  # fmt: skip
    _killed(rc, out, fault)
    if (out_dir / "artifact" / "manifest.json").exists():
        Artifact.load(out_dir / "artifact").verify_all()
    for name in ("pipeline.json", "accuracy.json", "bench.json"):
        if (out_dir / name).exists():
            json.loads((out_dir / name).read_text())
    rc, out = ws.run("pipeline", *PIPELINE, "-o", out_dir.name)
    assert rc == 0, out
    Artifact.load(out_dir / "artifact").verify_all()
    assert _leftovers(out_dir, out_dir / "artifact") == []
    assert time.monotonic() - start < 1200
