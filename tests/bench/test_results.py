"""Results files: round trip, and clear errors for malformed or foreign JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from infership.bench.results import ResultsError, RunNotFound, load_results, save_results
from infership.runtime.errors import InfershipError

from tests.bench.conftest import lognormal, synthetic_results, synthetic_run


@pytest.fixture
def results_file(tmp_path: Path) -> Path:
    res = synthetic_results(
        synthetic_run(lognormal(50, seed=1)), synthetic_run(lognormal(50, seed=2), backend="openvino")
    )
    return save_results(res, tmp_path / "r.json")


def test_round_trip_keeps_everything(results_file: Path) -> None:
    loaded = load_results(results_file)
    again = save_results(loaded, results_file.with_name("again.json"))
    assert load_results(again).to_dict() == loaded.to_dict()
    run = loaded.runs[0]
    assert run.key == "m/ort-cpu@cpu/fp32/single-stream/b1/c1"
    assert len(run.samples_ms) == 50
    data = json.loads(results_file.read_text())
    assert data["format"] == "infership-bench-results" and data["schema_version"] == 1
    assert set(data["runs"][0]["latency_ms"]) == {
        "count",
        "mean",
        "std",
        "min",
        "p50",
        "p90",
        "p95",
        "p99",
        "max",
    }
    # one line per run's samples, not one per sample
    assert results_file.read_text().count("\n") < 200


def _write(tmp_path: Path, payload: object) -> Path:
    p = tmp_path / "x.json"
    p.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return p


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "expected a JSON object"),
        ({"benchmarks": [], "machine_info": {}}, "looks like a pytest-benchmark file"),
        ({"schema_version": 1, "name": "m", "inputs": [], "variants": []}, "looks like an artifact manifest"),
        ({"format": "infership-bench-results", "schema_version": 99}, "schema_version 99 is not supported"),
        (
            {"format": "infership-bench-results", "schema_version": 1, "runs": []},
            "missing field 'fingerprint'",
        ),
    ],
)
def test_foreign_or_malformed_files_get_a_clear_error(tmp_path: Path, payload: object, message: str) -> None:
    with pytest.raises(ResultsError, match=message):
        load_results(_write(tmp_path, payload))


def test_a_malformed_run_names_its_index_and_field(results_file: Path, tmp_path: Path) -> None:
    data = json.loads(results_file.read_text())
    del data["runs"][1]["latency_ms"]
    with pytest.raises(ResultsError, match=r"runs\[1\] is malformed \(missing field 'latency_ms'\)"):
        load_results(_write(tmp_path, data))
    data = json.loads(results_file.read_text())
    data["runs"][0]["samples_ms"] = "fast"
    with pytest.raises(ResultsError, match=r"runs\[0\] is malformed .*samples_ms must be a list"):
        load_results(_write(tmp_path, data))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="not found"):
        load_results(tmp_path / "nope.json")


def test_duplicate_run_keys_are_refused() -> None:
    run = synthetic_run([1.0, 2.0])
    with pytest.raises(ResultsError, match="duplicate run keys"):
        synthetic_results(run, run)


def test_round_sizes_must_add_up(results_file: Path, tmp_path: Path) -> None:
    data = json.loads(results_file.read_text())
    data["runs"][0]["rounds"] = [10, 10]
    with pytest.raises(ResultsError, match=r"runs\[0\] is malformed .*do not add up to the 50 samples"):
        load_results(_write(tmp_path, data))


def test_an_unknown_run_key_is_a_results_error_and_a_key_error(results_file: Path) -> None:
    results = load_results(results_file)
    key = "m/ort-cpu@cpu/fp32/single-stream/b1/c1"
    assert results.run(key).key == key
    with pytest.raises(RunNotFound) as info:
        results.run("m/torch@cpu/fp32/single-stream/b1/c1")
    assert isinstance(info.value, ResultsError) and isinstance(info.value, InfershipError)
    assert isinstance(info.value, KeyError)  # callers that caught the KeyError still do
    # The message as written (KeyError would quote it), listing the keys there are.
    assert str(info.value) == (
        "no run 'm/torch@cpu/fp32/single-stream/b1/c1'; runs: "
        "['m/ort-cpu@cpu/fp32/single-stream/b1/c1', 'm/openvino@cpu/fp32/single-stream/b1/c1']"
    )
