"""Production code that only predicts must not pay for torch, onnxruntime or openvino at import."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "onnxruntime", "openvino", "nncf", "onnx", "matplotlib")


@pytest.mark.parametrize(
    "statement",
    [
        "import infership",
        "import infership.runtime",
        "from infership import Predictor, Artifact, TensorSpec, BackendUnavailable",
        "import infership.convert, infership.calibration, infership.bench",
        "import infership.cli; infership.cli.build_parser()",
    ],
)
def test_import_is_light(statement):
    code = f"{statement}\nimport sys\nprint(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"{statement!r} imported {out}"


def test_backend_loads_its_runtime_on_first_use(tiny_artifact):
    code = (
        "import sys\nfrom infership import Predictor\n"
        f"p = Predictor.load({str(tiny_artifact)!r}, backend='ort-cpu')\n"
        "print('onnxruntime' in sys.modules, 'torch' in sys.modules, 'openvino' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["True", "False", "False"]


def test_every_public_name_resolves():
    code = "import infership\nfor n in infership.__all__:\n    getattr(infership, n)\nprint(len(infership.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) > 30
