"""The harness on real runtimes: scenarios, sweeps, cold start, inputs, settings, overhead."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from infership.bench.config import BenchConfig, plan_runs
from infership.bench.harness import run_sweep
from infership.bench.inputs import InputPool, array_pool, random_pool, resolve_shape
from infership.bench.runner import run_benchmark
from infership.bench.scenarios import Scenario, StopRule
from infership.bench.stats import summarize
from infership.runtime import InvalidInputError, Predictor, TensorSpec

SHORT = dict(duration_s=0.2, max_duration_s=0.2, min_queries=5, warmup_queries=2, warmup_s=0.0)


def test_sweep_runs_every_planned_configuration(tiny_artifact: Path) -> None:
    config = BenchConfig(
        artifact=tiny_artifact, backends=("ort-cpu", "no-such-backend"), batch_sizes=(1, 2),
        concurrency=(2,), scenarios=tuple(Scenario), **SHORT,
    )  # fmt: skip
    seen: list[tuple[int, int, str]] = []
    results = run_sweep(config, progress=lambda d, t, s: seen.append((d, t, s)))

    # single-stream runs at concurrency 1 only; the others at the swept concurrency
    assert [(p.scenario, p.concurrency) for p in plan_runs(config)][:2] == [(Scenario.SINGLE_STREAM, 1)] * 2
    assert len(results.runs) == 8  # ort-cpu × 4 scenarios × 2 batch sizes
    assert len({r.key for r in results.runs}) == 8
    assert [s.backend for s in results.skipped] == ["no-such-backend"]
    assert "unknown backend" in results.skipped[0].reason
    assert seen[-1] == (16, 16, "done")
    for run in results.runs:
        assert run.backend == "ort-cpu" and run.placement["backend"] == "ort-cpu"
        assert run.latency_ms == summarize(run.samples_ms)
        assert run.latency_ms.count == len(run.samples_ms) >= 5
        assert run.throughput > 0 and run.duration_s > 0
        assert (
            run.cold_start is not None
            and run.cold_start.load_ms > 0
            and run.cold_start.first_inference_ms > 0
        )
        assert run.settings.pool_size >= 2 and run.settings.input_source == "random"
        assert run.settings.input_shapes == {"x": [run.batch_size, 3, 16, 16]}
        # ONNX Runtime has no performance hint: it is not given one, and the record says so
        assert run.settings.hint == "n/a (backend has no performance hint)"
        assert "ignored_options" not in run.placement["details"]
        assert run.settings.warmup_queries >= 2
    multi = next(r for r in results.runs if r.scenario == "multi-stream" and r.batch_size == 2)
    assert multi.throughput == pytest.approx(multi.queries_per_s * 2 * 2)  # streams × batch per query
    server = next(r for r in results.runs if r.scenario == "server")
    assert server.server is not None and server.server.target_qps_source.startswith("auto")
    assert server.key.endswith("/qps=auto")
    # the harness's own cost, on the empty predictor
    assert [o.backend for o in results.overhead] == ["fake", "fake"]
    assert results.environment["cpu"]["model"] and len(results.fingerprint) == 16


def test_rounds_interleave_runs_and_record_round_sizes(tiny_artifact: Path) -> None:
    config = BenchConfig(artifact=tiny_artifact, backends=("ort-cpu",), batch_sizes=(1, 2), rounds=3,
                         measure_overhead=False, duration_s=0.3, max_duration_s=0.3, min_queries=6,
                         warmup_queries=2, warmup_s=0.0)  # fmt: skip
    seen: list[str] = []
    results = run_sweep(config, progress=lambda d, t, s: seen.append(s))
    assert seen[:3] == ["ort-cpu auto single-stream b1 c1 (round 1/3)",
                        "ort-cpu auto single-stream b2 c1 (round 1/3)",
                        "ort-cpu auto single-stream b1 c1 (round 2/3)"]  # fmt: skip
    for run in results.runs:
        assert run.precision == "fp32"  # auto on a named backend: what Predictor.load opens there (fp32)
        assert len(run.rounds) == 3 and sum(run.rounds) == len(run.samples_ms)
        assert min(run.rounds) >= 2  # min_queries split over the rounds
        assert run.stability.windows == 3  # stability = do the rounds agree
        assert run.settings.warmup_queries >= 3 * 2  # each round warms up again (idle gaps)
    assert results.runs[0].cold_start == results.runs[1].cold_start  # one load for both


def test_server_at_a_given_rate_judges_the_bound(tiny_artifact: Path) -> None:
    with Predictor.load(tiny_artifact, backend="ort-cpu") as p:
        stop = StopRule(duration_s=0.3, max_duration_s=0.3, min_queries=5)
        loose = run_benchmark(
            p, scenario="server", concurrency=2, target_qps=200, latency_bound_ms=1e4, stop=stop
        )
        tight = run_benchmark(
            p, scenario="server", concurrency=2, target_qps=200, latency_bound_ms=1e-6, stop=stop
        )
    assert loose.server is not None and tight.server is not None
    assert loose.server.target_qps == 200 and loose.server.target_qps_source == "given"
    assert loose.key.endswith("/server/b1/c2/qps=200")
    assert loose.server.bound_met is True and tight.server.bound_met is False
    # Poisson arrivals at 200/s for 0.3 s: about 60 queries, not the thousands a closed loop would run
    assert 15 < loose.latency_ms.count < 200


def test_count_stop_gives_exactly_that_many_samples(tiny_artifact: Path) -> None:
    with Predictor.load(tiny_artifact, backend="ort-cpu") as p:
        run = run_benchmark(p, stop=StopRule(duration_s=None, max_queries=37), warmup_queries=1)
    assert len(run.samples_ms) == 37
    assert run.cold_start is None  # the caller loaded it


def test_multi_input_models_get_a_feed_per_input(two_io_artifact: Path) -> None:
    with Predictor.load(two_io_artifact, backend="ort-cpu") as p:
        run = run_benchmark(p, batch_size=3, scenario="multi-stream", concurrency=2,
                            stop=StopRule(duration_s=None, max_queries=4), warmup_queries=1)  # fmt: skip
    assert run.settings.input_shapes == {"image": [3, 3, 8, 8], "extra": [3, 4]}
    assert len(run.samples_ms) == 4 and run.settings.hint == "latency"  # read from Predictor.options


def test_single_stream_refuses_concurrency(tiny_artifact: Path) -> None:
    with (
        Predictor.load(tiny_artifact, backend="ort-cpu") as p,
        pytest.raises(InvalidInputError, match="concurrency must be 1"),
    ):
        run_benchmark(
            p, scenario="single-stream", concurrency=2, stop=StopRule(duration_s=None, max_queries=3)
        )


def test_runtime_errors_in_worker_threads_reach_the_caller(tiny_artifact: Path) -> None:
    with Predictor.load(tiny_artifact, backend="ort-cpu") as p:
        bad = {"x": np.zeros((1, 3, 17, 16), np.float32)}  # axis 2 is fixed at 16
        pool = InputPool((bad, bad), "random", {"x": [1, 3, 17, 16]}, False)
        with pytest.raises(InvalidInputError, match="axis 2"):
            run_benchmark(p, scenario="offline", concurrency=2, pool=pool, stop=StopRule(duration_s=0.1))


def test_random_pool_rotates_distinct_inputs_and_needs_shapes_for_dynamic_axes() -> None:
    spec = TensorSpec("x", "float32", ("batch", 3, "h", "w"))
    with pytest.raises(InvalidInputError, match=r"dynamic axis 2 \(h\).*--shape x:"):
        random_pool([spec], batch_size=4)
    pool = random_pool([spec], batch_size=4, shapes={"x": (1, 3, 32, 24)}, size=5)
    assert len(pool) == 5 and pool.shapes == {"x": [4, 3, 32, 24]}
    assert not np.array_equal(pool[0]["x"], pool[1]["x"])
    assert pool[5] is pool[0]  # rotation wraps
    with pytest.raises(InvalidInputError, match="fixed at 3"):
        resolve_shape(spec, 1, {"x": (1, 4, 8, 8)})


def test_real_inputs_from_npy(tmp_path: Path, tiny_artifact: Path) -> None:
    data = np.random.default_rng(0).standard_normal((10, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    with Predictor.load(tiny_artifact, backend="ort-cpu") as p:
        pool = array_pool(p.inputs, {"x": tmp_path / "x.npy"}, batch_size=4)
        run = run_benchmark(p, batch_size=4, pool=pool, stop=StopRule(duration_s=None, max_queries=5))
    assert len(pool) == 3  # ceil(10 / 4) distinct batches, wrapping around the samples
    np.testing.assert_array_equal(pool[0]["x"], data[:4])
    np.testing.assert_array_equal(pool[2]["x"], data[[8, 9, 0, 1]])
    assert run.settings.input_source == "npy"
    with pytest.raises(InvalidInputError, match="expected arrays for"):
        array_pool(p.inputs, {"y": data}, batch_size=1)


def test_preprocessing_can_be_included_in_the_timed_call(tmp_path: Path, tiny_artifact: Path) -> None:
    from infership.runtime import Artifact, ArtifactWriter, Preprocessing

    root = tmp_path / "with_pre"
    shutil.copytree(tiny_artifact, root)
    w = ArtifactWriter.update(Artifact.load(root))
    w.set_manifest(preprocessing=Preprocessing(input="x", resize=(20, 20), crop=(16, 16)))
    w.commit()
    config = BenchConfig(artifact=root, backends=("ort-cpu",), batch_sizes=(2,),
                         include_preprocessing=True, measure_overhead=False, **SHORT)  # fmt: skip
    run = run_sweep(config).runs[0]
    assert run.settings.include_preprocessing is True
    assert run.settings.input_shapes == {"x": [2, 20, 20, 3]}  # raw HWC uint8 images
    assert run.key.endswith("/preprocessing")
    with pytest.raises(InvalidInputError, match="records no preprocessing"):
        run_sweep(
            BenchConfig(artifact=tiny_artifact, backends=("ort-cpu",), include_preprocessing=True, **SHORT)
        )


@pytest.mark.openvino
def test_openvino_offline_uses_the_throughput_hint(tiny_artifact: Path) -> None:
    config = BenchConfig(artifact=tiny_artifact, backends=("openvino",),
                         scenarios=("single-stream", "offline"), concurrency=(2,), measure_overhead=False,
                         **SHORT)  # fmt: skip
    runs = {r.scenario: r for r in run_sweep(config).runs}
    assert runs["offline"].settings.hint == "throughput" and runs["single-stream"].settings.hint == "latency"
    # loaded twice (one per hint): each load has its own cold start
    assert runs["offline"].cold_start != runs["single-stream"].cold_start


@pytest.mark.openvino
def test_offline_runs_as_many_callers_as_the_device_wants_unless_told(tiny_artifact: Path) -> None:
    """The default concurrency is the loaded model's best parallelism for offline (OpenVINO under the
    throughput hint: its optimal number of infer requests, one per stream), 1 for the other scenarios
    and backends; an explicit number always wins. Results record the number that ran."""
    from infership.bench.config import AUTO_CONCURRENCY, parse_concurrency

    assert BenchConfig(artifact="a").concurrency == (AUTO_CONCURRENCY,)
    assert parse_concurrency("auto,2") == (AUTO_CONCURRENCY, 2)
    with Predictor.load(tiny_artifact, backend="openvino", hint="throughput") as p:
        wanted = p.optimal_concurrency
        assert wanted == int(p._session._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        assert p.placement.details["optimal_number_of_infer_requests"] == str(wanted)
    with Predictor.load(tiny_artifact, backend="ort-cpu") as p:
        assert p.optimal_concurrency == 1  # one ONNX Runtime call already uses every intra-op thread
    config = BenchConfig(artifact=tiny_artifact, backends=("openvino", "ort-cpu"),
                         scenarios=("single-stream", "offline", "multi-stream"), measure_overhead=False,
                         **SHORT)  # fmt: skip
    ran = {(r.backend, r.scenario): r.concurrency for r in run_sweep(config).runs}
    assert ran == {
        ("openvino", "single-stream"): 1, ("openvino", "offline"): wanted, ("openvino", "multi-stream"): 1,
        ("ort-cpu", "single-stream"): 1, ("ort-cpu", "offline"): 1, ("ort-cpu", "multi-stream"): 1,
    }  # fmt: skip
    told = replace(config, backends=("openvino",), scenarios=(Scenario.OFFLINE,), concurrency=(3,))
    assert [r.concurrency for r in run_sweep(told).runs] == [3]


def test_thread_settings_are_recorded(fake_artifact: Path) -> None:
    config = BenchConfig(
        artifact=fake_artifact, backends=("fake",), intra_op_threads=1, measure_overhead=False, **SHORT
    )
    run = run_sweep(config).runs[0]
    assert run.settings.intra_op_threads == 1 and run.settings.num_streams is None
    assert run.accuracy == {"top1_agreement": 0.99, "tolerance": {"min_top1": 0.9}}  # from the manifest


def test_config_validation() -> None:
    with pytest.raises(InvalidInputError, match="batch sizes must be >= 1"):
        BenchConfig(artifact="a", batch_sizes=(0,))
    with pytest.raises(InvalidInputError, match=r"concurrency must be >= 1 \(or 0: auto\), got \[-1\]"):
        BenchConfig(artifact="a", concurrency=(-1,))
    with pytest.raises(InvalidInputError, match="is empty"):
        BenchConfig(artifact="a", backends=())
    with pytest.raises(InvalidInputError, match="duration_s, max_queries"):
        BenchConfig(artifact="a", duration_s=None)
    with pytest.raises(InvalidInputError, match="unknown scenario 'closed'"):
        BenchConfig(artifact="a", scenarios=("closed",))
    assert BenchConfig(artifact="a", scenarios=("offline", "offline")).scenarios == (Scenario.OFFLINE,)
    with pytest.raises(TypeError, match="positional"):
        BenchConfig("a")  # type: ignore[misc]  # every field is keyword-only


def _fails_at_run_time(root: Path) -> Path:
    """An artifact that loads (the batch is symbolic) and whose every run fails in ONNX Runtime: it reshapes
    four values per row into three rows."""
    import onnx
    from infership.runtime import ArtifactWriter, Manifest
    from infership.runtime.artifact import read_onnx_specs
    from onnx import TensorProto as T
    from onnx import helper as h

    graph = h.make_graph(
        [h.make_node("Reshape", ["x", "shape"], ["y"])],
        "fails",
        [h.make_tensor_value_info("x", T.FLOAT, ["batch", 4])],
        [h.make_tensor_value_info("y", T.FLOAT, [3, "rest"])],
        [onnx.numpy_helper.from_array(np.array([3, -1], np.int64), "shape")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    path = root.parent / "fails.onnx"
    onnx.save(model, str(path))
    inputs, outputs = read_onnx_specs(path)
    w = ArtifactWriter.create(root, Manifest(name="fails", inputs=inputs, outputs=outputs))
    w.put_variant("onnx-fp32", format="onnx", precision="fp32", files=[w.add_file(path, "model.onnx")])
    w.commit()
    return root


def test_a_run_that_fails_is_recorded_as_failed_and_an_absent_backend_is_not(tmp_path: Path) -> None:
    from infership.bench.results import BenchResults, load_results, save_results

    art = _fails_at_run_time(tmp_path / "fails")
    config = BenchConfig(artifact=art, backends=("ort-cpu", "no-such-backend"), batch_sizes=(1,), **SHORT)
    results = run_sweep(config)
    assert results.runs == ()
    by_backend = {s.backend: s for s in results.skipped if s.backend != "fake"}
    assert by_backend["ort-cpu"].failed and "failed" in by_backend["ort-cpu"].reason
    assert not by_backend["no-such-backend"].failed
    save_results(results, tmp_path / "bench.json")
    again: BenchResults = load_results(tmp_path / "bench.json")
    assert [s.failed for s in again.skipped] == [s.failed for s in results.skipped]
    from infership.bench.results import SkippedRun

    assert not SkippedRun.from_dict(
        {"backend": "b", "precision": "fp32", "reason": "r"}
    ).failed  # older files
