"""One behaviour suite, run over every backend. CUDA/TensorRT params skip here with the reason."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from infership import InvalidInputError, Predictor
from tests.builders import reference_outputs, tiny_models

BACKENDS = [
    pytest.param("torch", id="torch"),
    pytest.param("ort-cpu", id="ort-cpu"),
    pytest.param("openvino", id="openvino", marks=pytest.mark.openvino),
    pytest.param("ort-cuda", id="ort-cuda", marks=pytest.mark.gpu),
    pytest.param("ort-trt", id="ort-trt", marks=[pytest.mark.gpu, pytest.mark.tensorrt]),
]
# Tolerance of fp32 outputs against eager torch. Different kernels sum in different orders; for these
# small models the observed error is ~1e-6, so 1e-4 leaves room without hiding a real mismatch.
ATOL = RTOL = 1e-4


def _rng_input(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16), dtype=np.float32)


@pytest.fixture(scope="module")
def reference_model():
    model, _ = tiny_models.cnn()
    return model


@pytest.mark.parametrize("backend", BACKENDS)
class TestContract:
    def test_load_reports_specs_and_backend(self, tiny_artifact, backend):
        with Predictor.load(tiny_artifact, backend=backend) as p:
            assert p.backend == backend
            assert p.placement.backend == backend
            assert [s.name for s in p.inputs] == ["x"]
            assert p.inputs[0].shape == ("batch", 3, 16, 16)
            assert p.outputs[0].name == "logits" and p.outputs[0].shape == ("batch", 5)
            assert p.variant.precision == "fp32"
            assert p.placement.providers, "placement must name where the model runs"

    def test_outputs_agree_with_torch(self, tiny_artifact, reference_model, backend):
        x = _rng_input(3)
        want = reference_outputs(reference_model, {"x": x}, ["logits"])["logits"]
        with Predictor.load(tiny_artifact, backend=backend) as p:
            got = p.predict(x)
        assert set(got) == {"logits"}
        assert got["logits"].dtype == np.float32 and got["logits"].shape == (3, 5)
        np.testing.assert_allclose(got["logits"], want, atol=ATOL, rtol=RTOL)

    def test_accepts_mapping_torch_tensors_and_any_layout(self, tiny_artifact, backend):
        import torch

        x = _rng_input(2, seed=1)
        with Predictor.load(tiny_artifact, backend=backend) as p:
            base = p.predict({"x": x})["logits"]
            from_torch = p.predict(torch.from_numpy(x))["logits"]
            mapped_torch = p.predict({"x": torch.from_numpy(x)})["logits"]
            mapped_fortran = p.predict({"x": np.asfortranarray(x)})["logits"]
            fortran = p.predict(np.asfortranarray(x))["logits"]
            spaced = np.zeros((4, 3, 16, 16), np.float32)
            spaced[::2] = x
            strided = p.predict(spaced[::2])["logits"]  # a non-contiguous view
            half = p.predict(x.astype(np.float16))["logits"]  # lossless widening is allowed
            widened = p.predict(x.astype(np.float16).astype(np.float32))["logits"]
        np.testing.assert_allclose(from_torch, base, atol=1e-6)
        np.testing.assert_allclose(mapped_torch, base, atol=1e-6)
        np.testing.assert_allclose(mapped_fortran, base, atol=1e-6)
        np.testing.assert_allclose(fortran, base, atol=1e-6)
        np.testing.assert_allclose(strided, base, atol=1e-6)
        np.testing.assert_allclose(half, widened, atol=1e-6)

    @pytest.mark.parametrize(
        "bad, message",
        [
            (np.zeros((3, 16, 16), np.float32), "expected rank 4"),
            (np.zeros((1, 4, 16, 16), np.float32), "expected size 3 on axis 1"),
            (np.zeros((1, 3, 16, 15), np.float32), "expected size 16 on axis 3"),
            (np.zeros((1, 3, 16, 16), np.float64), "expected dtype float32, got float64"),
            (np.zeros((1, 3, 16, 16), np.int64), "expected dtype float32, got int64"),
            ({"y": np.zeros((1, 3, 16, 16), np.float32)}, "missing ['x']"),
            ({"x": np.zeros((1, 3, 16, 16), np.float32), "z": np.zeros(1)}, "unexpected ['z']"),
            ("not an array", "expected a numpy array or torch tensor"),
            # the same checks when the arrays come in a mapping (its own fast path for numpy arrays)
            ({"x": np.zeros((3, 16, 16), np.float32)}, "expected rank 4"),
            ({"x": np.zeros((1, 3, 16, 15), np.float32)}, "expected size 16 on axis 3"),
            ({"x": np.zeros((1, 3, 16, 16), np.float64)}, "expected dtype float32, got float64"),
            ({"x": "not an array"}, "expected a numpy array or torch tensor"),
        ],
    )
    def test_bad_input_is_a_clear_value_error(self, tiny_artifact, backend, bad, message):
        with Predictor.load(tiny_artifact, backend=backend) as p:
            with pytest.raises(InvalidInputError) as info:
                p.predict(bad)
        assert isinstance(info.value, ValueError)
        assert message in str(info.value)

    def test_context_manager_closes(self, tiny_artifact, backend):
        with Predictor.load(tiny_artifact, backend=backend) as p:
            p.predict(_rng_input(1))
        with pytest.raises(InvalidInputError, match="closed"):
            p.predict(_rng_input(1))
        p.close()  # idempotent

    def test_threads_match_serial(self, tiny_artifact, backend):
        inputs = [_rng_input(1 + i % 3, seed=i) for i in range(24)]
        with Predictor.load(tiny_artifact, backend=backend) as p:
            serial = [p.predict(x)["logits"] for x in inputs]
            start = threading.Barrier(4)

            def work(i: int) -> np.ndarray:
                if i < 4:
                    start.wait()
                return p.predict(inputs[i])["logits"]

            with ThreadPoolExecutor(max_workers=4) as pool:
                parallel = list(pool.map(work, range(len(inputs))))
        for a, b in zip(serial, parallel, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)

    def test_max_batch_splits_and_reassembles(self, tiny_artifact, backend):
        x = _rng_input(7, seed=3)
        with Predictor.load(tiny_artifact, backend=backend) as whole:
            want = whole.predict(x)["logits"]
        with Predictor.load(tiny_artifact, backend=backend, max_batch=3) as p:
            got = p.predict(x)["logits"]
        assert got.shape == (7, 5)
        np.testing.assert_allclose(got, want, atol=1e-5)

    def test_static_batch_model_splits_and_pads(self, static_artifact, backend):
        x = _rng_input(10, seed=4)
        with Predictor.load(static_artifact, backend=backend) as p:
            assert p.inputs[0].shape[0] == 4
            got = p.predict(x)["logits"]
            one = np.concatenate(
                [p.predict(np.repeat(x[i : i + 1], 4, axis=0))["logits"][:1] for i in range(10)]
            )
        assert got.shape == (10, 5)
        np.testing.assert_allclose(got, one, atol=1e-5)

    def test_two_inputs_two_outputs(self, two_io_artifact, backend):
        model, _ = tiny_models.two_in_two_out()
        rng = np.random.default_rng(5)
        feeds = {
            "image": rng.standard_normal((3, 3, 8, 8), dtype=np.float32),
            "extra": rng.standard_normal((3, 4), dtype=np.float32),
        }
        want = reference_outputs(model, feeds, ["logits", "embed"])
        with Predictor.load(two_io_artifact, backend=backend) as p:
            assert [s.name for s in p.inputs] == ["image", "extra"]
            got = p.predict(feeds)
            with pytest.raises(InvalidInputError, match="pass a mapping"):
                p.predict(feeds["image"])
        assert set(got) == {"logits", "embed"}
        for k in want:
            np.testing.assert_allclose(got[k], want[k], atol=ATOL, rtol=RTOL)
