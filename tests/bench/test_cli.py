"""``infership bench / compare / report`` end to end, exit codes, and light imports."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from infership.runtime import hardware

from infership.cli import main

SHORT = [
    "--duration",
    "0.2",
    "--max-duration",
    "0.2",
    "--min-queries",
    "5",
    "--warmup",
    "2",
    "--warmup-seconds",
    "0",
]


@pytest.fixture(scope="module")
def bench_json(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "bench.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # module-scoped: capsys is per test, so keep the table here
        rc = main(["bench", str(tiny_artifact), "--backend", "ort-cpu,nope", "--batch", "1,2",
                   "--concurrency", "2", "--scenario", "single-stream,offline", "--threads", "1",
                   "--json", str(out), *SHORT])  # fmt: skip
    assert rc == 0
    out.with_suffix(".stdout.txt").write_text(printed.getvalue())
    return out


def test_bench_writes_results_and_prints_a_table(bench_json: Path) -> None:
    data = json.loads(bench_json.read_text())
    assert data["format"] == "infership-bench-results"
    keys = [r["key"] for r in data["runs"]]
    assert keys == [
        "tiny/ort-cpu@cpu/fp32/single-stream/b1/c1",
        "tiny/ort-cpu@cpu/fp32/single-stream/b2/c1",
        "tiny/ort-cpu@cpu/fp32/offline/b1/c2",
        "tiny/ort-cpu@cpu/fp32/offline/b2/c2",
    ]
    assert all(r["settings"]["intra_op_threads"] == 1 for r in data["runs"])
    assert data["skipped"][0]["backend"] == "nope"
    # the environment is recorded, and the fingerprint is the hash of what was recorded
    assert isinstance(data["environment"]["cpu"]["flags"], list)
    assert data["environment"]["cpu"]["model"] == hardware.environment()["cpu"]["model"]
    assert data["fingerprint"] == hardware.fingerprint(data["environment"])
    # the table is printed (rich, to stdout) with one row per run and the skipped backend named
    out = bench_json.with_suffix(".stdout.txt").read_text()
    assert f"fingerprint {data['fingerprint']}" in out
    assert out.count("ort-cpu") >= len(keys) and "skipped nope auto" in out


def test_compare_same_file_is_no_regression_and_says_what_it_could_detect(
    bench_json: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 0.2-second runs: whether their own spread could show a slowdown depends on the machine's load (exit 0
    # or 3, "inconclusive"; a busy machine can spread one run's medians by half), but the same samples are
    # never a regression at any threshold, and steady samples decide a loose one.
    for limit in ("10%", "100%"):
        assert main(["compare", str(bench_json), str(bench_json), "--max-slowdown", limit]) in (0, 3)
        out = capsys.readouterr().out
        assert "detectable p50 / p99" in out and "regression(s)" not in out
    steady = _steady_copy(bench_json, tmp_path / "steady.json")
    assert main(["compare", str(steady), str(steady), "--max-slowdown", "100%"]) == 0
    assert "no regression" in capsys.readouterr().out


def _steady_copy(src: Path, dest: Path) -> Path:
    """The runs with their samples replaced by a steady series around each run's median (±1 %), as a quiet
    machine would give: what the gate decides must then not depend on the load the fixture ran under."""
    data = json.loads(src.read_text())
    for run in data["runs"]:
        median = float(np.median(run["samples_ms"]))
        run["samples_ms"] = [median * (1 + 0.01 * math.sin(i)) for i in range(len(run["samples_ms"]))]
    dest.write_text(json.dumps(data))
    return dest


def _slowed_copy(src: Path, dest: Path, factor: float) -> Path:
    data = json.loads(src.read_text())
    for run in data["runs"]:
        run["samples_ms"] = [s * factor for s in run["samples_ms"]]
    dest.write_text(json.dumps(data))
    return dest


def test_compare_exits_1_on_regression_and_names_the_runs(bench_json: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    base = _steady_copy(bench_json, tmp_path / "steady.json")  # a 3x slowdown must not hide in load noise
    slow = _slowed_copy(base, tmp_path / "slow.json", 3.0)
    out_json = tmp_path / "cmp.json"
    rc = main(["compare", str(base), str(slow), "--max-slowdown", "10%", "--json", str(out_json),
               "--report", str(tmp_path / "rep")])  # fmt: skip
    assert rc == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "4 regression(s)" in out and "offline/b2/c2" in out
    cmp = json.loads(out_json.read_text())
    assert cmp["exit_code"] == 1 and cmp["rows"][0]["p50"]["estimate"] == pytest.approx(3.0)
    assert (tmp_path / "rep" / "report.md").read_text().count("| REGRESSION |") == 4


def test_compare_exits_2_when_not_comparable_and_4_on_a_bad_file(bench_json: Path, tmp_path: Path,
                                                                  tiny_artifact: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    other = json.loads(_steady_copy(bench_json, tmp_path / "steady.json").read_text())
    other["fingerprint"] = "0123456789abcdef"
    other["environment"]["libraries"]["onnxruntime-gpu"] = "0.0.1"
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main(["compare", str(bench_json), str(tmp_path / "other.json")]) == 2
    assert "libraries.onnxruntime-gpu" in capsys.readouterr().err
    assert (
        main(["compare", str(tmp_path / "steady.json"), str(tmp_path / "other.json"), "--force",
              "--max-slowdown", "100%"])
        == 0
    )  # fmt: skip
    # a file that is missing, foreign or malformed is an error (4): the gate could not run
    assert main(["compare", str(bench_json), str(tiny_artifact / "manifest.json")]) == 4
    assert "looks like an artifact manifest" in capsys.readouterr().err
    assert main(["compare", str(bench_json), str(tmp_path / "missing.json")]) == 4
    assert "results file not found" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["compare", str(tmp_path / "bad.json"), str(bench_json)]) == 4


def test_compare_usage_errors_exit_4_not_2(bench_json: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken invocation must not read as "not comparable" (argparse's own code is 2)."""
    for argv in (
        ["compare", str(bench_json)],  # CURRENT missing
        ["compare", str(bench_json), str(bench_json), "--bogus"],  # unknown option
        ["compare", str(bench_json), str(bench_json), "--confidence", "high"],  # bad value
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 4, argv
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    # options that only make sense for an A/B rerun are refused on stored results rather than ignored
    assert main(["compare", str(bench_json), str(bench_json), "--batch", "8", "--validation", "x.npz"]) == 4
    assert "--batch, --validation: apply only with --rerun" in capsys.readouterr().err


def test_threshold_parsing_refuses_ambiguous_numbers(
    bench_json: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(bench_json), str(bench_json), "--max-slowdown", "10"])
    assert exc.value.code == 4
    assert "ambiguous: write 10% or 0.1" in capsys.readouterr().err
    out_json = bench_json.parent / "thresholds.json"
    rc = main(["compare", str(bench_json), str(bench_json), "--max-slowdown", "0.1", "--max-p99-slowdown", "off",
               "--json", str(out_json)])  # fmt: skip
    assert rc in (0, 3)  # 3: the 0.2-second runs were too noisy to vouch for 10 % (never a regression)
    assert json.loads(out_json.read_text())["thresholds"] == {
        "max_slowdown": 0.1, "max_p99_slowdown": None, "max_accuracy_drop": 1.0, "confidence": 0.95,
        "n_resamples": 2000, "job_drift": 0.1,
    }  # fmt: skip


def test_report_renders_markdown_html_and_plots(bench_json: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main(["report", str(bench_json), "--out", str(out), "--baseline", str(bench_json)]) == 0
    md = (out / "report.md").read_text()
    assert "## Runs" in md
    assert "## Comparison with the baseline: no regression" in md or (
        "## Comparison with the baseline: inconclusive" in md  # 0.2-second runs may be too noisy to decide
    )
    assert "Harness overhead per query" in md and "nope auto" in md
    for png in ("latency_cdf.png", "latency_box.png", "throughput_vs_batch.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in md
    html = (out / "report.html").read_text()
    assert "<table>" in html and 'src="latency_cdf.png"' in html


def test_bench_exits_1_when_nothing_could_run(
    tiny_artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", str(tiny_artifact), "--backend", "nope", "--no-overhead", *SHORT]) == 1
    assert "no configuration could run" in capsys.readouterr().err


def test_shape_and_image_size_options_are_parsed_by_the_data_layer(
    tiny_artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from infership.bench.cli import _config_from_args

    from infership.cli import build_parser

    args = build_parser().parse_args(["bench", str(tiny_artifact), "--shape", "x:2x3x16x16",
                                      "--shape", "y=1x4", "--image-size", "32x24"])  # fmt: skip
    config = _config_from_args(args)
    assert config.shapes == {"x": (2, 3, 16, 16), "y": (1, 4)} and config.image_size == (32, 24)
    assert build_parser().parse_args(["bench", "a", "--image-size", "48"]).image_size == (48, 48)
    assert main(["bench", str(tiny_artifact), "--shape", "1x3x16x16", "--no-overhead", *SHORT]) == 1
    assert "--shape '1x3x16x16': expected a shape like 'x:1x3x224x224' (NAME:DIMS)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", str(tiny_artifact), "--image-size", "32xx"])
    assert "--image-size '32xx': expected N or HxW" in capsys.readouterr().err


def test_importing_the_bench_package_and_cli_stays_light() -> None:
    code = (
        "import sys, infership.bench, infership.bench.cli, infership.bench.pytest_plugin, infership.cli;"
        "infership.cli.build_parser();"
        "heavy = [m for m in ('torch', 'onnxruntime', 'openvino', 'matplotlib', 'scipy') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bench_url_measures_a_served_model(tiny_artifact: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """``--url URL`` is ``--backend http --device URL``: the harness drives a prediction server on loopback."""
    from infership.runtime import Predictor

    from tests.runtime.test_http_backend import _server  # the http backend's protocol test server

    with Predictor.load(tiny_artifact, backend="ort-cpu") as local:
        server = _server(local)
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}"
            out = tmp_path / "served.json"
            assert (
                main(["bench", str(tiny_artifact), "--url", url, "--no-overhead", "--json", str(out), *SHORT])
                == 0
            )
        finally:
            server.shutdown()
            server.server_close()
    (run,) = json.loads(out.read_text())["runs"]
    assert run["backend"] == "http" and run["device"] == url and run["latency_ms"]["count"] >= 5
    assert main(["bench", str(tiny_artifact), "--url", url, "--backend", "ort-cpu", *SHORT]) == 1
    assert "--url URL means --backend http --device URL" in capsys.readouterr().err
