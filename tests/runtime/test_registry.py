"""Third-party backends plug in through the registry; the fake backend serves users' own tests."""

from __future__ import annotations

import numpy as np
import pytest
from infership.runtime import register_backend
from infership.runtime.backends.fake import FakeBackend
from infership.runtime.registry import backend_names

from infership import Predictor


class DoublingBackend(FakeBackend):
    name = "doubling"


def test_register_and_use_a_custom_backend(tiny_artifact):
    register_backend("doubling", DoublingBackend, description="test plug-in")
    assert "doubling" in backend_names()
    calls = []

    def fn(feeds, outputs):
        calls.append(feeds["x"].shape)
        return {"logits": np.full((feeds["x"].shape[0], 5), 2.0, np.float32)}

    with Predictor.load(tiny_artifact, backend="doubling", extra={"fn": fn}) as p:
        out = p.predict(np.zeros((3, 3, 16, 16), np.float32))
    assert calls == [(3, 3, 16, 16)]
    np.testing.assert_array_equal(out["logits"], 2.0)


def test_fake_backend_runs_real_input_checks(tiny_artifact):
    with Predictor.load(tiny_artifact, backend="fake") as p:
        assert p.predict(np.zeros((2, 3, 16, 16), np.float32))["logits"].shape == (2, 5)
        with pytest.raises(ValueError, match="expected size 16 on axis 2"):
            p.predict(np.zeros((2, 3, 8, 16), np.float32))


def test_entry_point_group_is_read(monkeypatch):
    from importlib import metadata

    from infership.runtime import registry

    ep = metadata.EntryPoint(
        name="viaentry", value="tests.runtime.test_registry:DoublingBackend", group=registry.ENTRY_POINT_GROUP
    )
    real = metadata.entry_points
    monkeypatch.setattr(
        metadata,
        "entry_points",
        lambda **kw: [ep] if kw.get("group") == registry.ENTRY_POINT_GROUP else real(**kw),
    )
    monkeypatch.setattr(registry, "_entries", None)
    try:
        assert "viaentry" in registry.backend_names()
        assert isinstance(registry.get_backend("viaentry"), DoublingBackend)
    finally:
        registry._entries = None
        registry._instances.pop("viaentry", None)


def test_predictor_records_its_options_and_what_the_backend_ignored(tiny_artifact):
    import torch

    before = torch.get_num_threads()
    with Predictor.load(tiny_artifact, backend="torch", intra_op_threads=1, hint="throughput") as p:
        assert p.options.intra_op_threads == 1 and p.options.device == "cpu" and p.options.precision == "fp32"
        assert torch.get_num_threads() == 1
        # torch has no performance hint: recorded as ignored, never reported as applied
        assert p.placement.details["ignored_options"] == ["hint"]
    assert torch.get_num_threads() == before, "torch's process-wide thread count is restored on close"
    with Predictor.load(tiny_artifact, backend="openvino", hint="throughput", num_streams=1) as q:
        assert "ignored_options" not in q.placement.details
        assert q.placement.details["performance_hint"] == "PerformanceMode.THROUGHPUT" or "THROUGHPUT" in str(
            q.placement.details["performance_hint"]
        )


def test_overlapping_torch_sessions_restore_the_original_thread_count_last(tiny_artifact):
    import torch

    before = torch.get_num_threads()
    a = Predictor.load(tiny_artifact, backend="torch", intra_op_threads=1)
    b = Predictor.load(tiny_artifact, backend="torch", intra_op_threads=1)
    a.close()
    assert torch.get_num_threads() == 1, "b still runs with the count it asked for"
    b.close()
    assert torch.get_num_threads() == before


def test_bad_options_are_value_errors_before_any_work(tiny_artifact, static_artifact):
    with pytest.raises(ValueError, match="max_batch must be an integer >= 1"):
        Predictor.load(tiny_artifact, backend="ort-cpu", max_batch=0)
    with pytest.raises(ValueError, match="smaller than the model's static batch of 4"):
        Predictor.load(static_artifact, backend="ort-cpu", max_batch=3)
    with pytest.raises(ValueError, match="graph_optimization_level must be one of"):
        Predictor.load(tiny_artifact, backend="ort-cpu", extra={"graph_optimization_level": "max"})
    for backend in ("ort-cpu", "openvino", "torch"):
        with pytest.raises(ValueError, match="unknown extra option"):
            Predictor.load(tiny_artifact, backend=backend, extra={"nope": 1})


@pytest.mark.parametrize("backend", ["ort-cpu", "openvino", "torch"])
def test_session_closed_under_a_caller_raises_inference_error(tiny_artifact, backend):
    from infership.runtime import Artifact, BackendOptions, get_backend

    from infership import InferenceError

    art = Artifact.load(tiny_artifact)
    be = get_backend(backend)
    variant = art.manifest.find(formats=be.formats, precision="fp32")
    session = be.open(art, variant, BackendOptions(device=be.default_device))
    session.close()
    with pytest.raises(InferenceError, match="closed"):
        session.run({"x": np.zeros((1, 3, 16, 16), np.float32)})
