"""CI outputs of a comparison: JUnit XML (failure / error / pass per statistic and gated figure) and the
Markdown summary (verdict, exit code, detectable slowdown), on synthetic comparisons."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from infership.bench.ci import junit_xml, markdown_summary, write_step_summary
from infership.bench.compare import Comparison, RunComparison, compare_results
from infership.bench.rule import Thresholds, Verdict
from infership.bench.stats import RatioInterval

from tests.bench.conftest import lognormal, synthetic_results, synthetic_run


def _row(key: str, verdict: Verdict, p50: tuple[float, float, float] | None, reasons: tuple[str, ...] = ()):
    ri = RatioInterval("p50", *p50, 0.95) if p50 else None
    return RunComparison(key, verdict, ri, None, None, (), reasons)


def _comparison() -> Comparison:
    rows = (
        _row("m/ok", Verdict.OK, (1.0, 0.98, 1.02)),
        _row("m/slow", Verdict.REGRESSION, (1.3, 1.2, 1.4), ("p50 +30.0% (CI +20.0%..+40.0%) beyond +10%",)),
        _row("m/noisy", Verdict.INCONCLUSIVE, (1.0, 0.7, 1.4), ("p50 +0.0%: this run could only detect …",)),
        _row("m/other", Verdict.NOT_COMPARABLE, None, ("the sides resolved differently: …",)),
        _row("m/gone", Verdict.MISSING, None, ("in the baseline, not measured now",)),
    )
    return Comparison(rows, Thresholds(), mode="rerun", baseline="base/", current="cand/")


def test_junit_maps_verdicts_to_failures_errors_and_passes() -> None:
    root = ET.fromstring(junit_xml(_comparison()))
    suite = root.find("testsuite")
    assert suite is not None
    cases = {(c.get("classname"), c.get("name")): c for c in suite.iter("testcase")}
    assert cases[("m/ok", "p50")].find("failure") is None and cases[("m/ok", "p50")].find("error") is None
    assert cases[("m/slow", "p50")].find("failure") is not None
    noisy = cases[("m/noisy", "p50")].find("error")
    assert noisy is not None and noisy.get("type") == "inconclusive"
    other = cases[("m/other", "run")].find("error")
    assert other is not None and other.get("type") == "not-comparable"
    assert cases[("m/gone", "run")].find("failure") is not None
    assert suite.get("failures") == "2" and suite.get("errors") == "2"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["exit_code"] == "1" and props["mode"] == "rerun"


def test_junit_has_one_case_per_gated_figure() -> None:
    base = synthetic_run(lognormal(2000, seed=1), accuracy={"accuracy": 90.0, "max_abs_err": 0.1})
    cur = synthetic_run(lognormal(2000, seed=1), accuracy={"accuracy": 80.0, "max_abs_err": 0.5})
    c = compare_results(synthetic_results(base), synthetic_results(cur))
    suite = ET.fromstring(junit_xml(c)).find("testsuite")
    assert suite is not None
    names = [case.get("name") for case in suite.iter("testcase")]
    assert names == ["run", "p50", "p99", "accuracy"]  # max_abs_err is reported, not gated
    acc = next(case for case in suite.iter("testcase") if case.get("name") == "accuracy")
    assert acc.find("failure") is not None


def test_markdown_summary_states_the_verdict_the_exit_code_and_what_could_be_detected() -> None:
    md = markdown_summary(_comparison())
    assert md.startswith("### ❌ infership compare: regression (or a baseline run missing) (exit 1)")
    assert "`base/` → `cand/` · A/B in one job" in md
    assert "| `m/noisy` | **inconclusive** | +0.0% (-30.0% … +40.0%) | - | +42.9% / - |" in md
    ok = Comparison((_row("m/ok", Verdict.OK, (1.0, 0.98, 1.02)),), Thresholds(max_slowdown=0.05))
    assert markdown_summary(ok).startswith("### ✅ infership compare: no regression (exit 0)")
    assert "median +5%, p99 +12%" in markdown_summary(ok)


def test_step_summary_is_appended_only_when_github_sets_it(tmp_path) -> None:
    assert write_step_summary("x", environ={}) is None
    target = tmp_path / "summary.md"
    target.write_text("earlier step\n")
    assert write_step_summary("### verdict", environ={"GITHUB_STEP_SUMMARY": str(target)}) == target
    assert target.read_text() == "earlier step\n### verdict\n\n"


def test_the_docs_carry_the_ci_jobs_that_check_sh_runs() -> None:
    """docs/bench.md shows the CI files of examples/ci verbatim (examples/ci/check.sh runs those files), and
    both jobs call the one gate script."""
    from pathlib import Path

    yaml = pytest.importorskip("yaml")  # PyYAML: the dev extra (and Ray) bring it
    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "bench.md").read_text(encoding="utf-8")
    for name in ("github-actions.yml", "gitlab-ci.yml", "speed-gate.sh"):
        assert (root / "examples" / "ci" / name).read_text(encoding="utf-8").rstrip() in doc, name
    gh = yaml.safe_load((root / "examples" / "ci" / "github-actions.yml").read_text())
    steps = [s.get("run", "") for s in gh["jobs"]["speed-gate"]["steps"]]
    assert any(
        r.startswith("examples/ci/speed-gate.sh artifacts/baseline artifacts/candidate") for r in steps
    )
    gl = yaml.safe_load((root / "examples" / "ci" / "gitlab-ci.yml").read_text())
    assert "examples/ci/speed-gate.sh artifacts/baseline artifacts/candidate" in gl["speed-gate"]["script"]
    assert gl["speed-gate"]["artifacts"]["reports"]["junit"] == "gate.xml"
