"""How often the CI gate's rule cries wolf, and how often it catches a real slowdown, on this machine.

The study records real latency samples of one model here, then replays them through the decision rule:

1. **A/B in one job** (``infership compare --rerun``): two copies of the same artifact measured interleaved
   for ``--ab-seconds`` (the A/B runner itself, with an impossible threshold so it records to its budget).
   Every window of consecutive block pairs is one trial of an A/B run of a given ``--duration``, replayed
   with the runner's own extension rule (``bench.ab.more_pairs``: a quarter more pairs while the median's
   detectable slowdown exceeds the threshold, up to 4× the duration) and judged by ``bench.ab.judge_pairs``.
2. **Stored baseline** (``infership bench --json`` twice, then ``infership compare``): ``--sessions``
   separate ``infership bench`` processes (half before the A/B recording, half after, so they span
   minutes), each in one-second rounds with the reference workload timed before each round. Every ordered
   pair of sessions is one trial; a setting takes each session's first ``D`` seconds as ``R`` rounds and
   compares them with ``bench.compare.compare_runs`` (raw, or normalised by the reference workload).

A/A trials give the false-alarm rate (and how often the verdict is "inconclusive"); the same trials with the
candidate's samples multiplied by 1.05, 1.10 and 1.20 (the reference workload left as measured: a slower
model does not slow the machine) give the detection rates, "inconclusive" counting as missed. Windows of one
recording overlap, so the trials are not independent: read the rates as this machine's, with the trial
counts as an upper bound on the evidence.

    .venv/bin/python benchmarks/gate_study.py                   # record (~6 min) and replay
    .venv/bin/python benchmarks/gate_study.py --replay DIR      # replay an earlier recording
    .venv/bin/python benchmarks/gate_study.py --write-doc       # also rewrite the table in docs/bench.md

Recordings and figures go to ``runs/bench/gate_study/`` (``study.json``, ``table.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gate_common import INFERSHIP, ROOT, RUNS, Stopwatch, copy_artifact, export, loadavg, run

OUT = RUNS / "gate_study"
DOC = ROOT / "docs" / "bench.md"
BEGIN, END = "<!-- gate-study:begin -->", "<!-- gate-study:end -->"
SLOWDOWNS = (0.05, 0.10, 0.20)
BLOCK_S = 0.5  # the A/B runner's default block
#: A/B settings: (seconds per side at least, threshold, p99 gated, confirm). The budget is 4× the duration.
AB_SETTINGS = [
    (5.0, 0.05, False, True),
    (10.0, 0.05, False, True),
    (10.0, 0.05, False, False),
    (15.0, 0.05, False, True),
    (15.0, 0.05, True, True),
    (10.0, 0.10, False, True),
]
#: Stored settings: (seconds per run, rounds, normalised, threshold, job drift, reference recorded).
#: The first is plain defaults; the last one the rule without any allowance for drift between jobs.
STORED_SETTINGS = [
    (10.0, 1, False, 0.10, 0.10, True),
    (10.0, 5, False, 0.10, 0.10, True),
    (10.0, 1, True, 0.10, 0.10, True),
    (10.0, 1, False, 0.10, 0.0, True),
    (10.0, 1, False, 0.10, 0.10, False),
    (10.0, 1, False, 0.10, 0.0, False),
]


# ---------------------------------------------------------------------------------------------- recording
def record(args: argparse.Namespace, out: Path) -> None:
    """Record the A/B blocks and the stored sessions into ``out``."""
    clock = Stopwatch()
    arts = out / "artifacts"
    base = export(args.model, args.shape, arts / "model")
    copy = copy_artifact(base, arts / "model-copy")
    load = {"start": loadavg()}
    half = args.sessions // 2
    for k in range(half):
        _session(base, out / f"session{k}.json", args)
        print(f"[{clock}] stored session {k + 1}/{args.sessions}", flush=True)
    _record_ab(base, copy, out / "ab.json", args)
    print(f"[{clock}] A/B recording ({args.ab_seconds:g} s per side)", flush=True)
    for k in range(half, args.sessions):
        _session(base, out / f"session{k}.json", args)
        print(f"[{clock}] stored session {k + 1}/{args.sessions}", flush=True)
    load["end"] = loadavg()
    meta = {
        "model": args.model,
        "shape": args.shape,
        "backend": args.backend,
        "threads": args.threads,
        "load": load,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


def _session(artifact: Path, path: Path, args: argparse.Namespace) -> None:
    seconds = str(args.session_seconds)
    cmd = [*INFERSHIP, "bench", str(artifact), "--backend", args.backend, "--duration", seconds, "--max-duration",
           seconds, "--rounds", str(int(args.session_seconds)), "--warmup-seconds", "0.2", "--no-overhead",
           "--json", str(path)]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    run(cmd)


def _record_ab(base: Path, copy: Path, path: Path, args: argparse.Namespace) -> None:
    from infership.bench.ab import ABConfig, run_ab
    from infership.bench.config import BenchConfig
    from infership.bench.results import save_results
    from infership.bench.rule import Thresholds

    sweep = BenchConfig(artifact=copy, backends=(args.backend,), duration_s=args.ab_seconds,
                        max_duration_s=args.ab_seconds, intra_op_threads=args.threads or None)  # fmt: skip
    # An impossible threshold: the runner extends to its budget, recording every block.
    outcome = run_ab(
        ABConfig(baseline=base, sweep=sweep, block_s=BLOCK_S), thresholds=Thresholds(max_slowdown=0.0)
    )
    save_results(outcome.baseline, path.with_name("ab-baseline.json"))
    save_results(outcome.candidate, path.with_name("ab-candidate.json"))


# ---------------------------------------------------------------------------------------------- replay
def _blocks(run: Any) -> list[np.ndarray]:
    return [np.asarray(p) for p in run.round_samples]


def replay_ab(out: Path) -> list[dict[str, Any]]:
    from infership.bench.ab import more_pairs
    from infership.bench.paired import MIN_PAIRS, paired_median_ratio
    from infership.bench.results import load_results
    from infership.bench.rule import Thresholds

    a = _blocks(load_results(out / "ab-baseline.json").runs[0])
    b = _blocks(load_results(out / "ab-candidate.json").runs[0])
    rows = []
    for duration, limit, p99, confirm in AB_SETTINGS:
        th = Thresholds(max_slowdown=limit, max_p99_slowdown=None if p99 else math.inf, n_resamples=1000)
        n_min = max(MIN_PAIRS, math.ceil(duration / BLOCK_S))
        n_min += n_min % 2
        counts = _Counts()
        for base, cand in ((a, b), (b, a)):  # each copy plays the candidate once
            for start in range(0, len(base) - n_min + 1, 2):
                target = n_min
                while True:
                    end = min(start + target, len(base))
                    wa, wb = base[start:end], cand[start:end]
                    used = max(sum(float(x.sum()) for x in wa), sum(float(x.sum()) for x in wb)) / 1e3
                    p50 = paired_median_ratio(wa, wb, confidence=th.confidence)
                    grow = more_pairs(p50, th, pairs=len(wa), used_s=used, budget_s=4 * duration)
                    if grow == 0 or end == len(base):
                        break
                    target += grow
                for s in (0.0, *SLOWDOWNS):
                    verdict = _judged(wa, wb, s, th)
                    if confirm and verdict == "regression":
                        # The runner measures as many pairs again (on fresh loads) and judges them all; here
                        # the next pairs of the recording stand in for them (same loads: a harder test).
                        more = slice(end, min(end + len(wa), len(base)))
                        verdict = _judged(wa + base[more], wb + cand[more], s, th)
                    counts.add(s, verdict, len(wa))
        setting = f"--duration {duration:g} (budget {4 * duration:g} s/side)" + (
            "" if confirm else ", no confirmation"
        )
        rows.append({"mode": "A/B in one job", "setting": setting, "threshold": limit, "p99_gated": p99,
                     **counts.rates()})  # fmt: skip
    return rows


def _judged(wa: list[np.ndarray], wb: list[np.ndarray], slowdown: float, th: Any) -> str:
    from infership.bench.ab import judge_pairs
    from infership.bench.rule import verdict_of

    _, _, j = judge_pairs(wa, [x * (1 + slowdown) for x in wb], th)
    return verdict_of(worse=j.worse, better=j.better, undecided=j.undecided).value


def _session_run(run: Any, seconds: float, rounds: int) -> Any:
    """The first ``seconds`` one-second rounds of a session, regrouped into ``rounds`` rounds."""
    parts = run.round_samples[: int(seconds)]
    refs = run.reference_ms[: int(seconds)]
    per = len(parts) // rounds
    groups = [parts[i * per : (i + 1) * per] for i in range(rounds)]
    samples = [s for g in groups for p in g for s in p]
    sizes = tuple(sum(len(p) for p in g) for g in groups)
    ref = tuple(float(np.mean(refs[i * per : (i + 1) * per])) for i in range(rounds))
    return dataclasses.replace(
        run, samples_ms=tuple(samples), rounds=sizes if rounds > 1 else (), reference_ms=ref
    )


def replay_stored(out: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    from infership.bench.compare import compare_runs, normalised_samples
    from infership.bench.results import load_results
    from infership.bench.rule import Thresholds

    sessions = [load_results(p).runs[0] for p in sorted(out.glob("session*.json"))]
    rows = []
    for seconds, rounds, norm, limit, drift, referenced in STORED_SETTINGS:
        th = Thresholds(max_slowdown=limit, n_resamples=1000, job_drift=drift)
        runs = [_session_run(r, seconds, rounds) for r in sessions]
        if not referenced:
            runs = [dataclasses.replace(r, reference_ms=()) for r in runs]
        counts = _Counts()
        for i, base in enumerate(runs):
            for j, cur in enumerate(runs):
                if i == j:
                    continue
                for s in (0.0, *SLOWDOWNS):
                    slowed = dataclasses.replace(cur, samples_ms=tuple(x * (1 + s) for x in cur.samples_ms))
                    row = compare_runs(base, slowed, thresholds=th, normalise=norm, seed=i * 100 + j)
                    counts.add(s, row.verdict.value, 0)
        setting = f"--duration {seconds:g} --rounds {rounds}" + (" --normalise" if norm else "")
        setting += f" --job-drift {drift:.0%}" + ("" if referenced else ", no reference workload")
        rows.append({"mode": "stored baseline", "setting": setting, "threshold": limit, "p99_gated": True,
                     **counts.rates()})  # fmt: skip
    raw = [float(np.median(r.samples_ms)) for r in sessions]
    normed = [float(np.median(normalised_samples(_session_run(r, len(r.rounds), 1)))) for r in sessions]
    cv = {"raw": float(np.std(raw) / np.mean(raw)), "normalised": float(np.std(normed) / np.mean(normed))}
    return rows, cv


class _Counts:
    def __init__(self) -> None:
        self.verdicts: dict[float, list[str]] = {}
        self.pairs: list[int] = []

    def add(self, slowdown: float, verdict: str, pairs: int) -> None:
        self.verdicts.setdefault(slowdown, []).append(verdict)
        if slowdown == 0.0 and pairs:
            self.pairs.append(pairs)

    def rates(self) -> dict[str, Any]:
        aa = self.verdicts.get(0.0, [])
        if not aa:  # the recording is shorter than one trial of this setting
            return {"trials": 0, "false_alarm": None, "inconclusive": None, "median_pairs": None,
                    **{f"detected_{round(s * 100)}": None for s in SLOWDOWNS}}  # fmt: skip
        out: dict[str, Any] = {
            "trials": len(aa),
            "false_alarm": aa.count("regression") / len(aa),
            "inconclusive": aa.count("inconclusive") / len(aa),
            "median_pairs": float(np.median(self.pairs)) if self.pairs else None,
        }
        for s in SLOWDOWNS:
            out[f"detected_{round(s * 100)}"] = self.verdicts[s].count("regression") / len(self.verdicts[s])
        return out


# ---------------------------------------------------------------------------------------------- output
def table(rows: list[dict[str, Any]], meta: dict[str, Any], cv: dict[str, float], command: str) -> str:
    head = ("| mode | setting | threshold | p99 gated | trials | false alarms | inconclusive (A/A) | "
            "detected +5 % | +10 % | +20 % |\n|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    lines = [head]

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{v:.0%}"

    for r in rows:
        lines.append(
            f"| {r['mode']} | `{r['setting']}` | {r['threshold']:.0%} | {'yes' if r['p99_gated'] else 'no'} | "
            f"{r['trials']} | {pct(r['false_alarm'])} | {pct(r['inconclusive'])} | {pct(r['detected_5'])} | "
            f"{pct(r['detected_10'])} | {pct(r['detected_20'])} |"
        )
    load = meta.get("load", {})
    lines += [
        "",
        f"Model `{meta['model']}` ({meta['shape']}, `{meta['backend']}`, "
        f"{meta.get('threads') or 'default'} intra-op thread(s)); load average {load.get('start')} at the "
        f"start, {load.get('end')} at the end. Session-to-session spread of the median (coefficient of "
        f"variation over the stored sessions): {cv['raw']:.1%} raw, {cv['normalised']:.1%} normalised by the "
        f"reference workload. Regenerate: `{command}`.",
    ]
    return "\n".join(lines)


def write_doc(text: str) -> None:
    doc = DOC.read_text(encoding="utf-8")
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC}: markers {BEGIN} … {END} not found")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", default="torchvision:resnet18", help="infership export source (default: ResNet-18)"
    )
    p.add_argument("--shape", default="1x3x224x224", help="input shape (default: 1x3x224x224)")
    p.add_argument("--backend", default="ort-cpu")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads, 0: the runtime's (default: 1, as the CI recipe)",
    )
    p.add_argument(
        "--ab-seconds", type=float, default=90.0, help="A/B recording, seconds per side (default: 90)"
    )
    p.add_argument("--sessions", type=int, default=8, help="stored-baseline sessions (default: 8)")
    p.add_argument("--session-seconds", type=float, default=10.0, help="seconds per session (default: 10)")
    p.add_argument("--replay", type=Path, help="replay the recording in this directory instead of recording")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument(
        "--write-doc", action="store_true", help=f"rewrite the table between the markers in {DOC.name}"
    )
    args = p.parse_args(argv)
    out = args.replay or args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.replay is None:
        record(args, out)
    meta = json.loads((out / "meta.json").read_text())
    rows = replay_ab(out)
    stored, cv = replay_stored(out)
    rows += stored
    command = ".venv/bin/python benchmarks/gate_study.py --write-doc"
    text = table(rows, meta, cv, command)
    (out / "study.json").write_text(json.dumps({"meta": meta, "rows": rows, "cv": cv}, indent=1))
    (out / "table.md").write_text(text + "\n")
    print(text)
    if args.write_doc:
        write_doc(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
