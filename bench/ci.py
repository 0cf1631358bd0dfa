"""CI-native output of a comparison: JUnit XML for test-report views (GitLab, Jenkins, GitHub test
reporters) and a Markdown summary fit for a pull-request comment or ``$GITHUB_STEP_SUMMARY``.

JUnit: one test suite, one test case per judged statistic and gated figure of every run key
(``classname`` = the run key, ``name`` = ``p50``, ``p99``, ``accuracy``...), plus one ``run`` case per key
for what concerns the run as a whole (missing, not comparable, server bound). A regression is a
``<failure>``; a statistic too noisy to decide (inconclusive) or a run that is not comparable is an
``<error>`` (the gate could not vouch for it); everything else passes, with the figures in
``<system-out>``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from .compare import Comparison, RunComparison
from .report import detectable_text
from .rule import EXIT_CODES, Thresholds, Verdict, judge_latency
from .stats import RatioInterval

_ICON = {0: "✅", 1: "❌", 2: "⛔", 3: "⚠️", 4: "⛔"}


def _delta(ri: RatioInterval | None) -> str:
    if ri is None:
        return "-"
    return f"{ri.estimate - 1:+.1%} ({ri.low - 1:+.1%} … {ri.high - 1:+.1%})"


def _thresholds_text(t: Thresholds) -> str:
    p99 = f"p99 +{t.p99_slowdown:.0%}" if t.p99_gated else "p99 not gated"
    return (
        f"median +{t.max_slowdown:.0%}, {p99}, quality figures {t.max_accuracy_drop:g} point(s), "
        f"{t.confidence:.0%} intervals"
    )


def _mode_text(c: Comparison) -> str:
    if c.mode == "rerun":
        return "A/B in one job (baseline and candidate measured in interleaved blocks)"
    return "against stored results"


def markdown_summary(comparison: Comparison, *, title: str = "infership compare") -> str:
    """A Markdown summary of ``comparison``: the verdict with its exit code, what was compared and how, one
    table row per run key (median and p99 change with intervals, the smallest slowdown the run could have
    detected, figures, reasons), and a short legend."""
    code = comparison.exit_code
    lines = [f"### {_ICON.get(code, '')} {title}: {EXIT_CODES.get(code, str(code))} (exit {code})", ""]
    if comparison.baseline or comparison.current:
        lines.append(f"`{comparison.baseline}` → `{comparison.current}` · {_mode_text(comparison)}")
    else:
        lines.append(_mode_text(comparison))
    lines += [f"Thresholds: {_thresholds_text(comparison.thresholds)}.", ""]
    lines += [
        "| run | verdict | median Δ (95% CI) | p99 Δ (95% CI) | could detect | figures | why |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in comparison.rows:
        det = " / ".join(detectable_text(r) for r in (row.p50, row.p99)) if row.p50 else "-"
        figures = ", ".join(
            f"{f.metric} {f.baseline:g}→{f.current:g}{' ❌' if f.regression else ''}"
            for f in row.figures
            if f.gated
        )
        cells = [
            f"`{row.key}`",
            f"**{row.verdict.value}**",
            _delta(row.p50),
            _delta(row.p99),
            det,
            figures or "-",
        ]
        cells.append("; ".join(row.reasons) or "-")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    for diff in comparison.environment_differences:
        lines.append(f"\n> environment differs (compared with --force): {diff}")
    lines += [
        "",
        "<details><summary>How to read this</summary>",
        "",
        "Δ is candidate / baseline − 1 with its 95% interval. A statistic regresses when Δ exceeds its threshold "
        "and the interval excludes 0. *could detect* (median / p99) is the smallest slowdown this run's own "
        "spread could tell from no change; when it is larger than the threshold and nothing regressed, the "
        "verdict is *inconclusive* (exit 3): measure longer or on a quieter runner. Exit codes: 0 no regression, "
        "1 regression, 2 not comparable, 3 inconclusive, 4 error.",
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def write_step_summary(
    markdown: str, *, environ: os._Environ[str] | dict[str, str] | None = None
) -> Path | None:
    """Append ``markdown`` to the file named by ``$GITHUB_STEP_SUMMARY`` when set (GitHub Actions shows it
    on the run's page); returns the path written, or ``None``."""
    env = os.environ if environ is None else environ
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as f:
        f.write(markdown.rstrip() + "\n\n")
    return path


def junit_xml(comparison: Comparison, *, suite: str = "infership compare") -> str:
    """The comparison as JUnit XML (see the module docstring for the mapping)."""
    cases: list[ET.Element] = []
    for row in comparison.rows:
        cases += _cases(row, comparison.thresholds)
    failures = sum(1 for c in cases if c.find("failure") is not None)
    errors = sum(1 for c in cases if c.find("error") is not None)
    attrs = {
        "name": suite,
        "tests": str(len(cases)),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": "0",
    }
    root = ET.Element("testsuites", attrs)
    ts = ET.SubElement(root, "testsuite", attrs)
    props = ET.SubElement(ts, "properties")
    for name, value in (
        ("mode", comparison.mode),
        ("baseline", comparison.baseline),
        ("current", comparison.current),
        ("exit_code", str(comparison.exit_code)),
        ("thresholds", _thresholds_text(comparison.thresholds)),
    ):
        ET.SubElement(props, "property", {"name": name, "value": value})
    ts.extend(cases)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _case(
    classname: str, name: str, *, failure: str = "", error: str = "", kind: str = "", out: str = ""
) -> ET.Element:
    case = ET.Element("testcase", {"classname": classname, "name": name, "time": "0"})
    if failure:
        ET.SubElement(case, "failure", {"message": failure, "type": kind or "regression"}).text = failure
    elif error:
        ET.SubElement(case, "error", {"message": error, "type": kind}).text = error
    if out:
        ET.SubElement(case, "system-out").text = out
    return case


def _cases(row: RunComparison, thresholds: Thresholds) -> list[ET.Element]:
    key = row.key
    out: list[ET.Element] = []
    run_failure = ""
    run_error = ""
    if row.verdict is Verdict.MISSING:
        run_failure = "; ".join(row.reasons) or "missing"
    elif row.verdict is Verdict.NOT_COMPARABLE:
        run_error = "; ".join(row.reasons) or "not comparable"
    bound = [r for r in row.reasons if r.startswith("p99 bound")]
    run_failure = run_failure or "; ".join(bound)
    kind = "not-comparable" if run_error else ("missing" if row.verdict is Verdict.MISSING else "regression")
    out.append(_case(key, "run", failure=run_failure, error=run_error, kind=kind, out="; ".join(row.reasons)))
    for ratio in (row.p50, row.p99):
        if ratio is None:
            continue
        j = judge_latency((ratio,), thresholds)
        text = f"{ratio.statistic} {_delta(ratio)}, could detect {detectable_text(ratio)}"
        out.append(
            _case(key, ratio.statistic, failure="; ".join(j.worse), error="; ".join(j.undecided),
                  kind="inconclusive" if j.undecided else "regression", out=text)
        )  # fmt: skip
    for f in row.figures:
        if not f.gated:
            continue
        text = f"{f.metric}: {f.baseline:g} → {f.current:g} {f.unit} ({f.better} is better)"
        out.append(_case(key, f.metric, failure=text if f.regression else "", out=text))
    return out


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` (parents created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p
