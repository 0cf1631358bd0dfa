"""The serve commands: registered, fast to list (no Ray imported), and batch-predict end to end."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from infership.runtime import Predictor

from infership.cli import main
from tests.serve.conftest import needs_ray


def test_help_lists_the_commands_without_importing_ray():
    code = (
        "import sys; from infership.cli import build_parser; p = build_parser(); "
        "p.parse_args(['serve', 'a', '--replicas', '2']); p.parse_args(['batch-predict', 'a', 'b', '-o', 'c']); "
        "p.parse_args(['triton-repo', 'a', '-o', 'd']); "
        "bad = [m for m in ('ray', 'prometheus_client', 'onnxruntime', 'torch') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_serve_refuses_a_missing_artifact_before_starting_ray(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 1
    assert "artifact not found" in capsys.readouterr().err


def test_serve_refuses_the_haproxy_ingress_on_a_cluster_before_joining_it(tiny_artifact, capsys):
    assert main(["serve", str(tiny_artifact), "--ingress", "haproxy", "--address", "auto"]) != 0
    assert "chosen when the cluster starts" in capsys.readouterr().err


@pytest.mark.slow
@needs_ray
def test_batch_predict_command(local_ray, tiny_artifact, tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((7, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    args = [
        "batch-predict",
        str(tiny_artifact),
        str(tmp_path / "x.npy"),
        "-o",
        str(out),
        "--backend",
        "ort-cpu",
    ]
    assert main([*args, "--batch-size", "3", "--concurrency", "2"]) == 0
    assert "7 rows" in capsys.readouterr().out
    with Predictor.load(tiny_artifact, backend="ort-cpu") as p:
        np.testing.assert_array_equal(np.load(out)["logits"], p.predict(x)["logits"])
