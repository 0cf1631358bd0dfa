"""pytest-benchmark view of the wrapper overhead: raw runtime call vs ``Predictor.predict`` (batch 1).

Run with ``make bench`` (pytest is configured with --benchmark-disable by default, so plain ``make test``
only checks that these run). Compare the groups' medians; benchmarks/wrapper_overhead.py prints the ratio.
"""

from __future__ import annotations

import numpy as np
import pytest

from infership import Predictor

X = np.random.default_rng(0).standard_normal((1, 3, 16, 16), dtype=np.float32)


@pytest.mark.benchmark(group="ort-cpu")
def test_ort_raw(benchmark, tiny_artifact):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tiny_artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    benchmark(sess.run, None, {"x": X})


@pytest.mark.benchmark(group="ort-cpu")
def test_ort_predictor(benchmark, tiny_artifact):
    with Predictor.load(tiny_artifact, backend="ort-cpu") as p:
        benchmark(p.predict, X)


@pytest.mark.openvino
@pytest.mark.benchmark(group="openvino")
def test_openvino_raw(benchmark, tiny_artifact):
    import openvino as ov

    compiled = ov.Core().compile_model(str(tiny_artifact / "openvino" / "model.xml"), "CPU")
    req = compiled.create_infer_request()
    benchmark(req.infer, {"x": X})


@pytest.mark.openvino
@pytest.mark.benchmark(group="openvino")
def test_openvino_predictor(benchmark, tiny_artifact):
    with Predictor.load(tiny_artifact, backend="openvino") as p:
        benchmark(p.predict, X)


@pytest.mark.benchmark(group="torch")
def test_torch_raw(benchmark, tiny_artifact):
    import torch

    module = torch.export.load(str(tiny_artifact / "model.pt2")).module()

    def raw():
        with torch.inference_mode():
            return module(torch.from_numpy(X)).numpy()

    benchmark(raw)


@pytest.mark.benchmark(group="torch")
def test_torch_predictor(benchmark, tiny_artifact):
    with Predictor.load(tiny_artifact, backend="torch") as p:
        benchmark(p.predict, X)
