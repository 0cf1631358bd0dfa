"""Scratch folders: removed on exit, and what a killed process left is removed by the next one."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from infership.runtime.atomic import scratch_dir


@pytest.fixture
def tmpdir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    yield tmp_path
    tempfile.tempdir = None


def test_scratch_is_removed_on_exit_and_on_error(tmpdir_env: Path):
    with scratch_dir("build") as path:
        assert path.is_dir() and path.parent == tmpdir_env
        (path / "model.onnx").write_bytes(b"x" * 10)
    assert not path.exists()
    with pytest.raises(RuntimeError), scratch_dir("build") as path:
        raise RuntimeError("step failed")
    assert not path.exists()


def test_scratch_of_a_killed_process_is_removed_by_the_next(tmpdir_env: Path):
    # A real process that makes a scratch and dies without cleaning up (os._exit skips the context exit).
    code = (
        "import os\nfrom infership.runtime.atomic import scratch_dir\n"
        "cm = scratch_dir('build')\np = cm.__enter__()\n(p / 'big').write_bytes(b'x')\nos._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**_env(), "TMPDIR": str(tmpdir_env)})
    left = [p for p in tmpdir_env.iterdir() if "infership-build" in p.name]
    assert len(left) == 1, left
    other = tmpdir_env / "unrelated.tmp"
    other.write_text("kept")
    with scratch_dir("build") as mine:
        assert not left[0].exists(), "a dead process's scratch outlived the next run"
        assert mine.exists() and other.exists()


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
