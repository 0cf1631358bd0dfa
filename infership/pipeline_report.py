"""What the pipeline shows: one row per backend × precision (accuracy joined with speed), the console
table, and the report (the bench report with the accuracy table on top), written atomically."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def summary_rows(
    accuracy: Mapping[str, Any], results: Any
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Join accuracy entries with single-stream/offline benchmark runs into one row per backend × precision."""
    runs = list(results.runs)
    torch_fp32 = next(
        (
            r
            for r in runs
            if r.backend == "torch"
            and r.precision == "fp32"
            and r.scenario == "single-stream"
            and r.batch_size == 1
        ),
        None,
    )
    rows, skipped = [], []
    for e in accuracy.get("entries", []):
        label = f"{e['backend']}/{e['precision']}"
        if "skipped" in e:
            skipped.append((label, e["skipped"]))
            continue
        row: dict[str, Any] = {
            "backend": e["backend"],
            "precision": e["precision"],
            "accuracy": e.get("accuracy"),
            "agreement": e.get("agreement_with_torch_fp32"),
        }
        single = next(
            (
                r
                for r in runs
                if r.backend == e["backend"]
                and r.precision == e["precision"]
                and r.scenario == "single-stream"
                and r.batch_size == 1
            ),
            None,
        )
        if single is not None:
            row["p50_ms"] = single.latency_ms.p50
            row["p99_ms"] = single.latency_ms.p99
            if torch_fp32 is not None:
                row["speedup_vs_torch"] = torch_fp32.latency_ms.p50 / single.latency_ms.p50
        offline = [
            r
            for r in runs
            if r.backend == e["backend"] and r.precision == e["precision"] and r.scenario == "offline"
        ]
        if offline:
            best = max(offline, key=lambda r: r.throughput)
            row["throughput"] = best.throughput
            row["throughput_batch"] = best.batch_size
        rows.append(row)
    for s in getattr(results, "skipped", ()):
        if (s.backend, s.precision) == ("torch", "fp16"):
            continue  # by design, see _step_accuracy
        label = f"{s.backend}/{s.precision}"
        if label not in {k for k, _ in skipped} and not any(
            f"{r['backend']}/{r['precision']}" == label for r in rows
        ):
            skipped.append((label, s.reason))
    return rows, _group_skipped(skipped)


def _group_skipped(skipped: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """One line per backend when every precision was skipped for the same reason."""
    by_reason: dict[tuple[str, str], list[str]] = {}
    for label, why in skipped:
        backend, _, precision = label.partition("/")
        key = (backend, why.split("; variants:")[0])
        by_reason.setdefault(key, []).append(precision)
    return [(f"{b}/{','.join(precs)}", why) for (b, why), precs in by_reason.items()]


def _fmt(v: Any, spec: str = ".2f", suffix: str = "") -> str:
    return "–" if v is None else f"{v:{spec}}{suffix}"


def summary_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["backend", "prec", "acc %", "agree %", "p50 ms", "p99 ms", "speedup", "items/s"]
    body = []
    for r in rows:
        tp = r.get("throughput")
        body.append(
            [
                r["backend"],
                r["precision"],
                _fmt(r.get("accuracy")),
                _fmt(r.get("agreement")),
                _fmt(r.get("p50_ms"), ".3f"),
                _fmt(r.get("p99_ms"), ".3f"),
                _fmt(r.get("speedup_vs_torch"), ".1f", "×"),
                "–" if tp is None else f"{tp:,.0f}",
            ]
        )
    return headers, body


def write_pipeline_report(
    model_name: str,
    results: Any,
    rows: Sequence[Mapping[str, Any]],
    skipped: Sequence[tuple[str, str]],
    report_dir: Path,
) -> None:
    """Write the bench report with the accuracy-and-speed table on top into ``report_dir``, replacing the
    previous report only once the new one is complete."""
    from infership.bench.report import write_report
    from infership.runtime.atomic import make_temp, remove_stale_temporaries, replace_dir

    # Named after this process, so a later run removes what a killed one left next to the report.
    remove_stale_temporaries(report_dir.parent, "report")
    tmp = make_temp(report_dir.parent, "report", folder=True)
    try:
        md = write_report(results, tmp, title=f"infership pipeline: {model_name}")
        headers, body = summary_table(rows)
        lines = [
            "## Accuracy and speed per backend × precision",
            "",
            "| " + " | ".join(headers) + " |",
            "|" + "---|" * len(headers),
            *("| " + " | ".join(r) + " |" for r in body),
            "",
        ]
        if skipped:
            lines += ["Not run here:", "", *(f"- `{k}`: {why}" for k, why in skipped), ""]
        text = md.read_text(encoding="utf-8")
        head, sep, rest = text.partition("\n\n")
        md.write_text(head + sep + "\n".join(lines) + "\n" + rest, encoding="utf-8")
        replace_dir(tmp, report_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
