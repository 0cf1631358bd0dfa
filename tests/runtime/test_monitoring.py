"""Monitoring: Prometheus metrics, reference statistics, drift; warm-up at load; the async API."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from infership.runtime import InvalidInputError, Predictor, Task
from infership.runtime.monitoring import Monitor, MonitoredPredictor
from infership.runtime.spec import TensorSpec
from infership.runtime.statistics import REFERENCE_KEY, input_statistics, reference_statistics, row_lengths
from infership.runtime.warmup import warmup_inputs
from prometheus_client.parser import text_string_to_metric_families


def _families(monitor: Monitor) -> dict[str, list]:
    body, ctype = monitor.exposition()
    assert ctype.startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(body.decode())}


@pytest.fixture(scope="module")
def tiny(tiny_artifact: Path):
    with Predictor.load(tiny_artifact, backend="ort-cpu") as p:
        yield p


@pytest.fixture(scope="module")
def reference(tiny):
    rng = np.random.default_rng(0)
    batches = [{"x": rng.standard_normal((8, 3, 16, 16)).astype(np.float32)} for _ in range(4)]
    outputs = [tiny.predict(b) for b in batches]
    return reference_statistics(batches, outputs, task=Task.CLASSIFICATION, source="random normal")


def test_reference_statistics_record(reference):
    x = reference["inputs"]["x"]
    assert reference["samples"] == 32 and x["shape"] == [3, 16, 16] and x["dtype"] == "float32"
    assert abs(x["mean"]) < 0.05 and 0.95 < x["std"] < 1.05 and x["nan"] == 0
    assert x["quantiles"]["0.01"] < x["quantiles"]["0.5"] < x["quantiles"]["0.99"]
    logits = reference["outputs"]["logits"]
    assert len(logits["classes"]) == 5 and abs(sum(logits["classes"]) - 1) < 1e-6
    assert 0 < logits["confidence"]["mean"] <= 1


def test_statistics_count_nonfinite_and_lengths():
    a = np.array([[1.0, np.nan], [np.inf, 2.0]], np.float32)
    ids = np.array([[5, 6, 0, 0], [7, 0, 3, 0], [0, 0, 0, 0]], np.int64)
    stats = input_statistics([{"a": a, "ids": ids}])
    assert stats["a"]["nan"] == 1 and stats["a"]["inf"] == 1 and stats["a"]["mean"] == 1.5
    assert row_lengths(ids).tolist() == [2, 3, 0]
    assert stats["ids"]["lengths"]["mean"] == pytest.approx(5 / 3)
    with pytest.raises(InvalidInputError):
        input_statistics([])


def test_live_moments_match_float64_and_count_every_nonfinite():
    from infership.runtime.monitoring import DriftMonitor, _moments, nonfinite_count

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((8, 3, 224, 224)) * 50 + 100).astype(np.float32)  # a batch of images
    exact = x.astype(np.float64).reshape(-1)
    m = _moments(x, 90.0)
    assert m["count"] == x.size and m["nonfinite"] == 0
    assert m["sum"] == pytest.approx((exact - 90).sum(), rel=1e-5)
    assert m["sumsq"] == pytest.approx(float(np.square(exact - 90).sum()), rel=1e-6)
    odd = x.reshape(-1)[:10_001]  # not a whole number of blocks
    assert _moments(odd)["sumsq"] == pytest.approx(float(np.square(odd.astype(np.float64)).sum()), rel=1e-6)
    y = x.copy()
    y[0, 0, 0, :3] = np.nan
    y[1, 2, 5, 7] = -np.inf
    m = _moments(y)
    finite = exact[np.isfinite(y.reshape(-1))]
    assert m["nonfinite"] == 4 == nonfinite_count(y) and m["count"] == finite.size
    assert m["sum"] == pytest.approx(finite.sum(), rel=1e-6)
    huge = np.full(4, 3e38, np.float32)  # finite, but their float32 sum overflows
    assert nonfinite_count(huge) == 0 and _moments(huge)["nonfinite"] == 0
    assert _moments(huge)["sum"] == pytest.approx(1.2e39, rel=1e-6)
    big = np.full(5000, 1e20, np.float32)  # their float32 squares overflow
    assert _moments(big)["sumsq"] == pytest.approx(
        float(np.dot(big.astype(np.float64), big.astype(np.float64)))
    )
    assert nonfinite_count(np.array([1, 2], np.int64)) == 0
    half = np.full((8, 3, 224, 224), 1.0, np.float16)  # its float16 sum would overflow: no NaN counted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nonfinite_count(half) == 0 and _moments(half)["nonfinite"] == 0

    # Far from zero (a year, a price): the spread survives because sums are taken around the reference mean.
    for centre, spread in ((1e3, 1.0), (1e4, 1.0), (2024.0, 0.5)):
        live = (rng.standard_normal((64, 20_000)) * spread + centre).astype(np.float32)
        drift = DriftMonitor({"inputs": {"x": {"mean": centre, "std": spread}}}, task=Task.TENSOR)
        for rows in np.split(live, 8):
            drift.observe_inputs({"x": rows})
        got = drift.figures()["inputs"]["x"]
        want = live.astype(np.float64)
        assert got["mean"] == pytest.approx(want.mean(), rel=1e-7)
        assert got["std"] == pytest.approx(want.std(), rel=1e-4)
        assert got["std_ratio"] == pytest.approx(1.0, abs=0.01)


def test_metrics_and_drift(tiny, reference):
    manifest = replace(tiny.manifest, task=Task.CLASSIFICATION, extra={REFERENCE_KEY: reference})
    monitor = Monitor(manifest)
    assert monitor.drift is not None and monitor.drift_off_reason is None
    served = MonitoredPredictor(tiny, monitor)
    rng = np.random.default_rng(1)
    for _ in range(5):
        served.predict(rng.standard_normal((4, 3, 16, 16)).astype(np.float32))
    calm = monitor.drift.figures()["inputs"]["x"]["mean_shift"]
    with pytest.raises(InvalidInputError):
        served.predict(np.zeros((1, 3, 4, 4), np.float32))
    bad = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    bad[0, 0, 0, :3] = np.nan
    served.predict(bad)
    for _ in range(30):
        served.predict((rng.standard_normal((4, 3, 16, 16)) + 3).astype(np.float32))
    shifted = monitor.drift.figures()
    assert calm < 0.2 and shifted["inputs"]["x"]["mean_shift"] > 2
    assert 0 <= shifted["outputs"]["logits"]["class_distance"] <= 1
    fam = _families(monitor)
    count = {
        s.labels.get("type"): s.value for s in fam["infership_request_errors"] if s.name.endswith("_total")
    }
    assert count == {"InvalidInputError": 1}
    assert [s.value for s in fam["infership_requests"] if s.name.endswith("_total")] == [37]
    assert [s.value for s in fam["infership_input_nonfinite"] if s.name.endswith("_total")] == [3]
    drift = {s.labels["figure"]: s.value for s in fam["infership_input_drift"]}
    assert drift["mean_shift"] > 2 and "std_ratio" in drift
    assert {s.labels["figure"] for s in fam["infership_output_drift"]} >= {
        "class_distance",
        "confidence_mean",
    }
    assert [s.value for s in fam["infership_drift_enabled"]] == [1]


def test_sampled_drift_still_counts_every_nonfinite_value(tiny, reference):
    manifest = replace(tiny.manifest, task=Task.CLASSIFICATION, extra={REFERENCE_KEY: reference})
    monitor = Monitor(manifest, sample_every=2)
    rng = np.random.default_rng(4)
    for k in range(5):
        x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
        x[0, 0, 0, : k + 1] = np.nan  # 1, 2, 3, 4, 5 NaN values
        monitor.observe_data({"x": x}, tiny.predict(np.nan_to_num(x)))
    fam = _families(monitor)
    assert [s.value for s in fam["infership_input_nonfinite"] if s.name.endswith("_total")] == [15]
    window = monitor.drift._inputs["x"].totals()  # batches 1, 3 and 5 were sampled
    assert window["nonfinite"] == 1 + 3 + 5 and window["count"] == 3 * 2 * 3 * 16 * 16 - 9


def test_drift_off_says_why(tiny):
    monitor = Monitor(tiny.manifest)
    assert monitor.drift is None and REFERENCE_KEY in monitor.drift_off_reason
    MonitoredPredictor(tiny, monitor).predict(np.zeros((1, 3, 16, 16), np.float32))
    assert [s.value for s in _families(monitor)["infership_drift_enabled"]] == [0]
    assert "caller" in Monitor(tiny.manifest, drift=False).drift_off_reason


def test_warmup_runs_n_calls_before_load_returns(tiny_artifact):
    seen: list[tuple[int, ...]] = []

    def fn(feeds: Mapping[str, np.ndarray], outputs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
        seen.append(feeds["x"].shape)
        return {"logits": np.zeros((feeds["x"].shape[0], 5), np.float32)}

    with Predictor.load(tiny_artifact, backend="fake", extra={"fn": fn}, warmup=3):
        assert seen == [(1, 3, 16, 16)] * 3
    with pytest.raises(InvalidInputError, match="warmup"):
        Predictor.load(tiny_artifact, backend="fake", warmup=-1)


def test_warmup_inputs_follow_reference_statistics(tmp_path):
    from tests.runtime.serving_models import build_token_model

    root = build_token_model(tmp_path / "tokens")
    with Predictor.load(root, backend="ort-cpu", warmup=2) as p:
        plain = warmup_inputs(p, 1)[0]
        assert plain["ids"].shape == (1, 16)  # nothing records a length: the default
        ids = np.random.default_rng(0).integers(3, 9, size=(4, 11))
        ref = reference_statistics([{"ids": ids, "mask": np.ones_like(ids)}])
        p.artifact.manifest = replace(p.manifest, extra={REFERENCE_KEY: ref})
        drawn = warmup_inputs(p, 2)
    assert drawn[0]["ids"].shape == (1, 11) and drawn[0]["ids"].dtype == np.int64
    assert drawn[0]["ids"].min() >= 3 and drawn[0]["ids"].max() <= 8
    assert not np.array_equal(drawn[0]["ids"], drawn[1]["ids"])


def test_image_model_warms_up_through_its_preprocessing(tiny_artifact):
    from infership.runtime import Preprocessing

    with Predictor.load(tiny_artifact, backend="fake") as p:
        p.artifact.manifest = replace(
            p.manifest, preprocessing=Preprocessing(input="x", resize=20, crop=(16, 16))
        )
        items = warmup_inputs(p, 2)
        assert items[0].shape == (16, 16, 3) and items[0].dtype == np.uint8
        assert p.predict(items[0])["logits"].shape == (1, 5)


def test_predictor_apredict(tiny):
    x = np.random.default_rng(5).standard_normal((3, 3, 16, 16)).astype(np.float32)
    got = asyncio.run(tiny.apredict(x))
    np.testing.assert_allclose(got["logits"], tiny.predict(x)["logits"], rtol=1e-6, atol=1e-6)
    with pytest.raises(InvalidInputError):
        asyncio.run(tiny.apredict(np.zeros((1, 3), np.float32)))
