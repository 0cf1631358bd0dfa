"""The runtime's CLI commands, run as a user would."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "220"}  # rich wraps table cells on narrow terminals
    return subprocess.run(
        [sys.executable, "-m", "infership", *args], capture_output=True, text=True, check=check, env=env
    )


def test_help_lists_commands():
    out = run("--help").stdout
    for cmd in ("backends", "info", "predict"):
        assert cmd in out
    assert run("backends", "--help").stdout.startswith("usage: infership backends")


def test_info_shows_variants_and_integrity(tiny_artifact):
    out = run("info", str(tiny_artifact)).stdout
    assert "onnx-fp32" in out and "openvino-fp32" in out and "torch-fp32" in out
    assert "ok" in out


def test_info_fails_on_tampered_file(tiny_artifact, tmp_path):
    import shutil

    dest = tmp_path / "t"
    shutil.copytree(tiny_artifact, dest)
    p = dest / "model.onnx"
    b = bytearray(p.read_bytes())
    b[-1] ^= 1
    p.write_bytes(bytes(b))
    res = run("info", str(dest), check=False)
    assert res.returncode == 1


def test_missing_artifact_is_one_line_error(tmp_path):
    res = run("info", str(tmp_path / "nope"), check=False)
    assert res.returncode == 1
    assert "artifact not found" in res.stderr
    assert "Traceback" not in res.stderr


def test_predict_npy(tiny_artifact, tmp_path):
    x = np.zeros((2, 3, 16, 16), np.float32)
    np.save(tmp_path / "x.npy", x)
    res = run("predict", str(tiny_artifact), str(tmp_path / "x.npy"), "--backend", "ort-cpu")
    assert "backend ort-cpu" in res.stdout


def test_info_prints_shapes_and_list_values_literally(tiny_artifact):
    out = run("info", str(tiny_artifact)).stdout
    assert "[batch, 3, 16, 16]" in out  # rich would swallow unescaped [..] as markup
    assert "[batch, 5]" in out
