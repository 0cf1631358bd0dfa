"""A/B in one job on real runtimes: ``infership compare --rerun BASELINE CANDIDATE`` measures both artifacts
interleaved, block by block, and judges the paired blocks; accuracy is re-measured on a validation set with
the task's judge; CI outputs (JUnit, Markdown, $GITHUB_STEP_SUMMARY) are written."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from infership.bench.ab import ABConfig, run_ab
from infership.bench.config import BenchConfig
from infership.bench.rule import Thresholds, Verdict

from infership.cli import main

#: Short A/B runs: 1 s per side at least, 2 s at most, in 0.1 s blocks with a short rest.
SHORT = {"duration_s": 1.0, "max_duration_s": 2.0, "warmup_queries": 3, "warmup_s": 0.0}
SHORT_ARGS = ["--duration", "1", "--max-duration", "2", "--block", "0.1", "--rest", "0.02", "--warmup", "3",
              "--warmup-seconds", "0", "--backend", "ort-cpu", "--threads", "1"]  # fmt: skip


def _ab(base: Path, cand: Path, **kw) -> ABConfig:
    validation = kw.pop("validation", None)
    sweep = BenchConfig(artifact=cand, backends=("ort-cpu",), intra_op_threads=1, **{**SHORT, **kw})
    return ABConfig(baseline=base, sweep=sweep, block_s=0.1, rest_s=0.02, validation=validation)


def test_the_same_model_twice_is_no_regression_and_the_sides_are_interleaved(ab_artifacts) -> None:
    out = run_ab(_ab(ab_artifacts["base"], ab_artifacts["same"]), thresholds=Thresholds(max_slowdown=0.5))
    (row,) = out.comparison.rows
    assert row.verdict in (Verdict.OK, Verdict.IMPROVEMENT) and out.comparison.exit_code == 0
    assert row.method == "paired blocks" and row.pairs is not None and row.pairs >= 10 and row.pairs % 2 == 0
    assert row.p50 is not None and row.p50.low <= 1.5 and row.detectable is not None and row.detectable < 0.5
    # each side's run keeps its blocks as rounds, so the saved results can be compared again later
    base_run, cand_run = out.baseline.runs[0], out.candidate.runs[0]
    assert len(base_run.rounds) == len(cand_run.rounds) == row.pairs
    assert base_run.model == "base" and cand_run.model == "same" and row.key == cand_run.key


def test_a_real_slowdown_is_a_regression(ab_artifacts) -> None:
    """The same weights on a 96×96 input instead of 16×16: 36× the convolution work."""
    out = run_ab(_ab(ab_artifacts["base"], ab_artifacts["big"]), thresholds=Thresholds(max_slowdown=0.10))
    (row,) = out.comparison.rows
    assert row.verdict is Verdict.REGRESSION and out.comparison.exit_code == 1
    assert row.p50 is not None and row.p50.estimate > 2 and row.p50.low > 1.5
    assert row.reasons[0].startswith("p50 +") and "beyond +10%" in row.reasons[0]
    # a regression is measured again on fresh loads before it is reported, and judged on every pair
    assert any("more on fresh loads to confirm a regression" in r for r in row.reasons)
    assert (
        len(out.candidate.runs[0].rounds)
        == row.pairs
        >= 2 * _ab(ab_artifacts["base"], ab_artifacts["big"]).min_pairs
    )


def test_a_run_too_noisy_to_decide_extends_itself_then_says_inconclusive(ab_artifacts) -> None:
    """A threshold no real run can resolve (0.01 %): the run extends to its budget, then says inconclusive."""
    config = _ab(ab_artifacts["base"], ab_artifacts["same"])
    out = run_ab(config, thresholds=Thresholds(max_slowdown=0.0001, max_p99_slowdown=float("inf")))
    (row,) = out.comparison.rows
    assert row.pairs is not None and row.pairs > config.min_pairs  # it extended itself
    assert any("budget" in r for r in row.reasons)  # ... until its budget ran out
    if row.verdict is Verdict.INCONCLUSIVE:
        assert out.comparison.exit_code == 3 and any("could only detect" in r for r in row.reasons)
    else:
        # Two loaded sessions of one model can differ by a real sliver on a busy machine (thread placement);
        # at a 0.01 % threshold a significant sliver is reported as measured, never as "ok".
        assert row.verdict in (Verdict.IMPROVEMENT, Verdict.REGRESSION), row.verdict


def test_sides_that_resolve_differently_are_not_comparable(ab_artifacts, tiny_artifact) -> None:
    """``auto`` runs an artifact that has an OpenVINO variant from its IR, and one that has not from its ONNX
    file: timing one variant against the other would not be a regression test."""
    pytest.importorskip("openvino")
    sweep = BenchConfig(artifact=ab_artifacts["base"], backends=("auto",), **SHORT)
    out = run_ab(ABConfig(baseline=tiny_artifact, sweep=sweep, block_s=0.1, rest_s=0.02))
    (row,) = out.comparison.rows
    assert row.verdict is Verdict.NOT_COMPARABLE and out.comparison.exit_code == 2
    assert "baseline openvino variant openvino-fp32" in row.reasons[0]
    assert "variant onnx-fp32" in row.reasons[0].split("candidate")[1]


def test_accuracy_is_re_measured_and_judged_both_ways(ab_artifacts, validation_npz) -> None:
    same = run_ab(_ab(ab_artifacts["base"], ab_artifacts["same"], validation=str(validation_npz)),
                  thresholds=Thresholds(max_slowdown=0.5))  # fmt: skip
    figures = {f.metric: f for f in same.comparison.rows[0].figures}
    assert figures["accuracy"].baseline == figures["accuracy"].current == 100.0
    assert figures["accuracy_drop"].current == 0 and not any(f.regression for f in figures.values())
    assert same.candidate.runs[0].accuracy["source"] == f"measured on {validation_npz}"  # type: ignore[index]
    # the flipped classifier loses accuracy: accuracy (higher is better) falls and accuracy_drop (lower is
    # better) rises, and both fail
    worse = run_ab(_ab(ab_artifacts["base"], ab_artifacts["flipped"], validation=str(validation_npz)),
                   thresholds=Thresholds(max_slowdown=0.5))  # fmt: skip
    (row,) = worse.comparison.rows
    figures = {f.metric: f for f in row.figures}
    assert row.verdict is Verdict.REGRESSION and worse.comparison.exit_code == 1
    assert figures["accuracy"].regression and figures["accuracy"].change == "worse"
    assert figures["accuracy_drop"].regression and figures["accuracy_drop"].current > 10
    assert figures["top1_agreement"].regression
    assert any(r.startswith("accuracy_drop worse by") for r in row.reasons)
    # the other way round the candidate is better: nothing fails on accuracy
    better = run_ab(_ab(ab_artifacts["flipped"], ab_artifacts["base"], validation=str(validation_npz)),
                    thresholds=Thresholds(max_slowdown=0.5))  # fmt: skip
    figures = {f.metric: f for f in better.comparison.rows[0].figures}
    assert figures["accuracy"].change == "better" and not figures["accuracy"].regression


def test_cli_rerun_writes_json_junit_markdown_and_the_step_summary(
    ab_artifacts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    step = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    rc = main(["compare", "--rerun", str(ab_artifacts["base"]), str(ab_artifacts["big"]), *SHORT_ARGS,
               "--json", str(tmp_path / "cmp.json"), "--junit", str(tmp_path / "junit.xml"),
               "--summary", str(tmp_path / "summary.md"), "--save-runs", str(tmp_path / "runs")])  # fmt: skip
    assert rc == 1
    out = capsys.readouterr().out
    assert "A/B in this job" in out and "regression(s)" in out and "(exit 1)" in out
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    assert cmp["mode"] == "rerun" and cmp["exit_code"] == 1 and cmp["rows"][0]["method"] == "paired blocks"
    assert cmp["rows"][0]["detectable_slowdown"] > 0
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and int(suite.get("failures", "0")) >= 1
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["p50"].find("failure") is not None and cases["run"].find("failure") is None
    md = (tmp_path / "summary.md").read_text()
    assert md.startswith("### ❌ infership compare: regression") and "| run | verdict |" in md
    assert step.read_text().strip() == md.strip()
    assert {p.name for p in (tmp_path / "runs").iterdir()} == {"baseline.json", "candidate.json"}
    # each side's runs are saved as results files, blocks as rounds
    from infership.bench.results import load_results

    saved = load_results(tmp_path / "runs" / "candidate.json").runs[0]
    assert saved.model == "big" and len(saved.rounds) == cmp["rows"][0]["pairs"]


def test_cli_rerun_errors_exit_4(ab_artifacts, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--rerun", str(tmp_path / "nope"), str(ab_artifacts["base"]), *SHORT_ARGS]) == 4
    assert "error:" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    assert main(["compare", "--rerun", str(ab_artifacts["base"]), str(ab_artifacts["same"]), *SHORT_ARGS,
                 "--validation", str(bad)]) == 4  # fmt: skip
    assert main(["compare", "--rerun", "a", "b", "--force"]) == 4


def test_bench_validation_records_measured_accuracy_not_the_manifests(
    ab_artifacts, validation_npz, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    for name in ("base", "flipped"):
        rc = main(["bench", str(ab_artifacts[name]), "--backend", "ort-cpu", "--duration", "0.2", "--max-duration",
                   "0.2", "--min-queries", "5", "--warmup", "2", "--no-overhead", "--validation",
                   str(validation_npz), "--json", str(tmp_path / f"{name}.json")])  # fmt: skip
        assert rc == 0
    base = json.loads((tmp_path / "base.json").read_text())["runs"][0]
    assert base["accuracy"] == {"samples": 64, "source": f"measured on {validation_npz}", "accuracy": 100.0}
    assert len(base["reference_ms"]) == 1 and base["spread"]["parts"] == "5 consecutive parts"
    flipped = json.loads((tmp_path / "flipped.json").read_text())["runs"][0]
    assert flipped["accuracy"]["accuracy"] < 90
    # a stored baseline with measured accuracy gates the stored current one (keys differ by model name, so
    # compare the file with a copy under the baseline's name)
    flipped_as_base = {**json.loads((tmp_path / "flipped.json").read_text())}
    for run in flipped_as_base["runs"]:
        run["model"] = "base"
    out.write_text(json.dumps(flipped_as_base))
    assert main(["compare", str(tmp_path / "base.json"), str(out), "--max-slowdown", "100%"]) == 1
    assert main(["compare", "--rerun", "a", "b", "--job-drift", "5%"]) == 4  # a stored-results option
