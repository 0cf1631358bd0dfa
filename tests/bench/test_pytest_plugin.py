"""The ``predictor_benchmark`` fixture inside a user's own pytest run (a subprocess, like a real suite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

USER_TEST = """
import os
from infership import Predictor

def test_latency(predictor_benchmark):
    with Predictor.load(os.environ["ARTIFACT"], backend="ort-cpu") as p:
        out = predictor_benchmark(p, batch_size=2, pool_size=4, warmup=2)
    assert out["logits"].shape == (2, 5)
"""


def test_fixture_benchmarks_a_predictor_and_records_where_it_ran(tiny_artifact: Path, tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TEST))
    out = tmp_path / "bench.json"
    env = {**os.environ, "ARTIFACT": str(tiny_artifact)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-enable",
         "--benchmark-max-time=0.05", "--benchmark-min-rounds=3", "--benchmark-warmup=off",
         f"--benchmark-json={out}", "test_user.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bench = json.loads(out.read_text())["benchmarks"][0]
    info = bench["extra_info"]
    assert info["backend"] == "ort-cpu" and info["variant"] == "onnx-fp32" and info["batch_size"] == 2
    assert info["pool_size"] == 4 and info["input_shapes"] == {"x": [2, 3, 16, 16]}
    assert info["placement"]["providers"] == ["CPUExecutionProvider"]
    assert info["threads"] == {"intra_op": None, "inter_op": None, "streams": None, "hint": "latency"}
    assert len(info["fingerprint"]) == 16
    assert bench["stats"]["rounds"] >= 3
