"""ONNX Runtime on the CPU: the backend calls the compiled session directly (the Predictor has checked the
feeds), with the same results and errors as ``InferenceSession.run``."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from infership.runtime import Artifact, BackendOptions, get_backend

from infership import InferenceError


def test_the_cpu_session_runs_the_compiled_session_with_the_same_results(tiny_artifact):
    art = Artifact.load(tiny_artifact)
    session = get_backend("ort-cpu").open(
        art, art.manifest.find(formats=("onnx",), precision="fp32"), BackendOptions()
    )
    try:
        assert session._core is not None  # the direct path is in use on the CPU
        x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
        got = session.run({"x": x})
        variant = art.manifest.find(formats=("onnx",), precision="fp32")
        public = ort.InferenceSession(
            str(art.root / variant.files[0].path), providers=["CPUExecutionProvider"]
        )
        np.testing.assert_array_equal(got["logits"], public.run(["logits"], {"x": x})[0])
        with pytest.raises(InferenceError, match="onnxruntime run failed"):  # the C++ session checks too
            session.run({"x": x[:, :, :8]})
        with pytest.raises(InferenceError, match="onnxruntime run failed"):
            session.run({"y": x})
    finally:
        session.close()
    with pytest.raises(InferenceError, match="closed"):
        session.run({"x": x})


def test_a_changed_direct_call_falls_back_to_the_python_api_once(tiny_artifact, caplog):
    art = Artifact.load(tiny_artifact)
    session = get_backend("ort-cpu").open(
        art, art.manifest.find(formats=("onnx",), precision="fp32"), BackendOptions()
    )

    class Changed:  # a compiled session whose run() takes other arguments
        def run(self, *args):
            raise TypeError("run(): incompatible function arguments")

    try:
        session._core = Changed()
        x = np.zeros((1, 3, 16, 16), np.float32)
        assert session.run({"x": x})["logits"].shape == (1, 5)
        assert session._core is None and "refused the direct call" in caplog.text
        assert session.run({"x": x})["logits"].shape == (1, 5)
    finally:
        session.close()
