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


def test_a_scratch_still_locked_is_kept_even_when_its_process_id_looks_dead(tmpdir_env: Path):
    # Another PID namespace (a container sharing TMPDIR) makes a live process's id look dead here: the
    # folder's lock, held by a live process, decides. Simulated: a live child holds the lock of a folder
    # named after a process id that does not exist.
    import os

    stale_name = tmpdir_env / ".infership-build.999999999.abcd.tmp"
    stale_name.mkdir()
    code = (
        "import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(30)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(stale_name)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with scratch_dir("build"):
            assert stale_name.exists(), "a folder in use by a live process was removed"
    finally:
        holder.kill()
        holder.wait(timeout=10)
    with scratch_dir("build"):
        assert not stale_name.exists(), "once its holder is gone, the next run removes it"
    assert os.listdir(tmpdir_env) == []
