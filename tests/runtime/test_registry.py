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


def test_predictor_records_its_options(tiny_artifact):
    import torch

    before = torch.get_num_threads()
    with Predictor.load(tiny_artifact, backend="torch", intra_op_threads=1, hint="throughput") as p:
        assert p.options.intra_op_threads == 1 and p.options.hint.value == "throughput"
        assert p.options.device == "cpu" and p.options.precision == "fp32"
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before, "torch's process-wide thread count is restored on close"
