"""Micro-batching: concurrent callers share runs, each gets its own rows back, errors stay with their caller."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from infership.runtime import InferenceError, InvalidInputError, Predictor
from infership.runtime.batching import BatchingPredictor, merge_feeds, pad_feeds, split_outputs
from infership.runtime.spec import TensorSpec

from tests.runtime.serving_models import build_token_model, token_request

# ORT CPU may pick other kernels for a batch than for one row: the batch-vs-single tolerance.
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _concurrently(n: int, fn) -> list:
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def call(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 - the test inspects what each caller got
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


@pytest.fixture(scope="module")
def tiny(tiny_artifact: Path):
    with Predictor.load(tiny_artifact, backend="ort-cpu") as p:
        yield p


def test_concurrent_callers_get_their_own_rows(tiny):
    x = np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)
    singles = [tiny.predict(x[i : i + 1])["logits"] for i in range(16)]
    sizes: list[int] = []

    class Sizes:  # records batch sizes through the monitor hook
        def observe_request(self, latency_s, *, error=None):
            pass

        def observe_batch(self, rows, waits):
            sizes.append(rows)

        def observe_data(self, feeds, outputs):
            pass

    with BatchingPredictor(tiny, max_batch=16, max_wait_ms=50, monitor=Sizes()) as bp:
        got = _concurrently(16, lambda i: bp.predict(x[i : i + 1])["logits"])
    for i in range(16):
        np.testing.assert_allclose(got[i], singles[i], **TOL)
    assert sum(sizes) == 16
    assert max(sizes) > 1, f"no request shared a run: {sizes}"
    assert max(sizes) <= 16


def test_several_batches_in_flight(tiny):
    x = np.random.default_rng(6).standard_normal((12, 3, 16, 16)).astype(np.float32)
    with BatchingPredictor(tiny, max_batch=3, max_wait_ms=20, max_concurrent_batches=3) as bp:
        assert len(bp._workers) == 3
        got = _concurrently(12, lambda i: bp.predict(x[i : i + 1])["logits"])
    np.testing.assert_allclose(np.concatenate(got), tiny.predict(x)["logits"], **TOL)
    assert not any(w.is_alive() for w in bp._workers)
    with pytest.raises(InvalidInputError, match="max_concurrent_batches"):
        BatchingPredictor(tiny, max_concurrent_batches=0)


def test_by_default_one_batch_in_flight_per_stream_the_runtime_runs(tiny, tiny_artifact: Path):
    # One batch at a time under OpenVINO's throughput hint keeps one stream's cores busy and the rest idle.
    with BatchingPredictor(tiny) as bp:
        assert len(bp._workers) == 1  # ONNX Runtime: one call already uses every intra-op thread
    with Predictor.load(tiny_artifact, backend="openvino", hint="throughput") as ov:
        streams = int(ov.placement.details["optimal_number_of_infer_requests"])
        x = np.random.default_rng(7).standard_normal((8, 3, 16, 16)).astype(np.float32)
        with BatchingPredictor(ov, max_batch=2, max_wait_ms=5) as bp:
            assert len(bp._workers) == streams == ov.optimal_concurrency
            got = _concurrently(8, lambda i: bp.predict(x[i : i + 1])["logits"])
        np.testing.assert_allclose(np.concatenate(got), ov.predict(x)["logits"], rtol=1e-4, atol=1e-4)


def test_bad_input_fails_only_its_caller(tiny):
    x = np.random.default_rng(1).standard_normal((8, 3, 16, 16)).astype(np.float32)
    with BatchingPredictor(tiny, max_batch=8, max_wait_ms=20) as bp:

        def call(i: int):
            return bp.predict(np.zeros((1, 3, 8, 8), np.float32) if i == 3 else x[i : i + 1])["logits"]

        got = _concurrently(8, call)
    assert isinstance(got[3], InvalidInputError) and "axis 2" in str(got[3])
    for i in set(range(8)) - {3}:
        np.testing.assert_allclose(got[i], tiny.predict(x[i : i + 1])["logits"], **TOL)


def test_a_failing_run_is_retried_alone_so_only_the_culprit_fails(tiny_artifact):
    def fn(feeds: Mapping[str, np.ndarray], outputs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
        x = feeds["x"]
        if (x == 666).any():
            raise InferenceError("poisoned row")
        return {"logits": x[:, 0, 0, :2]}

    with (
        Predictor.load(tiny_artifact, backend="fake", extra={"fn": fn}) as p,
        BatchingPredictor(p, max_batch=6, max_wait_ms=50) as bp,
    ):
        got = _concurrently(
            6, lambda i: bp.predict(np.full((1, 3, 16, 16), 666.0 if i == 2 else i, np.float32))
        )
    assert isinstance(got[2], InferenceError) and "poisoned" in str(got[2])
    for i in set(range(6)) - {2}:
        assert got[i]["logits"].tolist() == [[float(i), float(i)]]


def test_apredict_does_not_block_the_event_loop(tiny):
    x = np.random.default_rng(2).standard_normal((6, 3, 16, 16)).astype(np.float32)

    async def main():
        ticks = 0
        stop = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        with BatchingPredictor(tiny, max_batch=6, max_wait_ms=30) as bp:
            outs = await asyncio.gather(*(bp.apredict(x[i : i + 1]) for i in range(6)))
        direct = await tiny.apredict(x)
        stop.set()
        await t
        return outs, direct, ticks

    outs, direct, ticks = asyncio.run(main())
    np.testing.assert_allclose(np.concatenate([o["logits"] for o in outs]), direct["logits"], **TOL)
    assert ticks > 1  # the loop ran other tasks while the model ran


def test_buckets_pad_and_cut_back(tmp_path):
    root = build_token_model(tmp_path / "tokens")
    rng = np.random.default_rng(3)
    lengths = [3, 5, 7, 8, 2, 6]
    requests = [token_request(rng, n) for n in lengths]
    with Predictor.load(root, backend="ort-cpu") as p:
        singles = [p.predict(r) for r in requests]
        with BatchingPredictor(p, max_batch=8, max_wait_ms=50, buckets=(4, 8)) as bp:
            got = _concurrently(len(requests), lambda i: bp.predict(requests[i]))
    for n, g, s in zip(lengths, got, singles, strict=True):
        assert g["tokens"].shape == (1, n, 4)  # cut back to the caller's own length
        np.testing.assert_allclose(g["tokens"], s["tokens"], **TOL)
        np.testing.assert_allclose(g["pooled"], s["pooled"], **TOL)


def test_unequal_shapes_without_buckets_run_apart(tmp_path):
    root = build_token_model(tmp_path / "tokens2")
    rng = np.random.default_rng(4)
    requests = [token_request(rng, n) for n in (3, 3, 6)]
    with (
        Predictor.load(root, backend="ort-cpu") as p,
        BatchingPredictor(p, max_batch=8, max_wait_ms=30) as bp,
    ):
        got = _concurrently(3, lambda i: bp.predict(requests[i]))
        for r, g in zip(requests, got, strict=True):
            np.testing.assert_allclose(g["pooled"], p.predict(r)["pooled"], **TOL)


def test_merge_split_and_pad_helpers():
    a = {"x": np.ones((2, 3), np.float32)}
    b = {"x": np.zeros((1, 3), np.float32)}
    merged, rows = merge_feeds([a, b])
    assert merged["x"].shape == (3, 3) and rows == [2, 1]
    parts = split_outputs({"y": merged["x"][:, :1]}, rows)
    assert [p["y"].shape[0] for p in parts] == [2, 1]
    with pytest.raises(InferenceError, match="not a batch of 3"):
        split_outputs({"y": np.zeros((1,))}, rows)
    spec = TensorSpec("ids", "int64", ("batch", "seq"))
    padded, sizes = pad_feeds({"ids": np.ones((1, 5), np.int64)}, [spec], (4, 8), pad_value=0)
    assert (
        padded["ids"].shape == (1, 8) and padded["ids"][0, 5:].tolist() == [0, 0, 0] and sizes == {"seq": 5}
    )
    beyond, _ = pad_feeds({"ids": np.ones((1, 9), np.int64)}, [spec], (4, 8))
    assert beyond["ids"].shape == (1, 9)


def test_options_and_close(tiny):
    with pytest.raises(InvalidInputError):
        BatchingPredictor(tiny, max_batch=0)
    with pytest.raises(InvalidInputError):
        BatchingPredictor(tiny, buckets=())
    bp = BatchingPredictor(tiny, max_batch=4, max_wait_ms=1)
    bp.close()
    bp.close()
    with pytest.raises(InferenceError, match="closed"):
        bp.predict(np.zeros((1, 3, 16, 16), np.float32))
    assert not tiny._closed  # the front never closes the caller's Predictor
