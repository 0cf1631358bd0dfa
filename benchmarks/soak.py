"""Long load: many threads, many loads, many calls — results stay identical, file descriptors and memory
stay flat.

Per CPU backend installed here (``ort-cpu``, ``openvino``, ``torch``), on the tiny CNN artifact of the
tests ([b,3,16,16] → [b,5]):

1. **Threads**: ``--threads`` threads (8) × ``--calls`` predictions (10,000) each on one shared Predictor,
   over a pool of 64 distinct inputs (batch 1–4); every result must equal, bit for bit, what a serial call
   gave for the same input.
2. **Load/close cycles**: ``--cycles`` (1,000) × (load, one prediction, close). Open file descriptors after
   the last cycle must equal those after cycle 100, and RSS after the last ≤ 1.05 × RSS after cycle 100.
3. **Long run**: after 2,000 warm-up calls, ``--long-calls`` (100,000) more on one Predictor; RSS may grow
   by at most 5 %.

Run it with ``make soak`` (not part of ``make test``: it takes minutes)::

    .venv/bin/python benchmarks/soak.py [--json runs/reliability/soak.json] [--backends ort-cpu,openvino]

It prints a table, writes the figures as JSON and exits 1 if any criterion fails.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
JSON_PATH = ROOT / "runs" / "reliability" / "soak.json"
BACKENDS = {"ort-cpu": "onnxruntime", "openvino": "openvino", "torch": "torch"}
RSS_CYCLES_FACTOR = 1.05
RSS_GROWTH_LIMIT = 0.05


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def open_fds() -> int:
    """Open file descriptors of this process."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "?"


def _pool() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1 + i % 4, 3, 16, 16), dtype=np.float32) for i in range(64)]


def _load(artifact: Path, backend: str):
    from infership import Predictor

    return Predictor.load(
        artifact, backend=backend, extra={"trust_program": True} if backend == "torch" else None
    )


def threads_identical(artifact: Path, backend: str, threads: int, calls: int) -> dict[str, Any]:
    pool = _pool()
    with _load(artifact, backend) as p:
        serial = [p.predict(x)["logits"] for x in pool]
        mismatches = [0] * threads
        errors: list[str] = []
        start = threading.Barrier(threads)

        def work(t: int) -> None:
            try:
                start.wait()
                for k in range(calls):
                    i = (t * 7919 + k * 31) % len(pool)
                    if not np.array_equal(p.predict(pool[i])["logits"], serial[i]):
                        mismatches[t] += 1
            except Exception as exc:  # noqa: BLE001 - any failure is a finding, reported below
                errors.append(f"thread {t}: {type(exc).__name__}: {exc}")

        t0 = time.perf_counter()
        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        seconds = time.perf_counter() - t0
    total = threads * calls
    return {
        "threads": threads,
        "calls": total,
        "mismatches": sum(mismatches),
        "errors": errors,
        "seconds": round(seconds, 1),
        "ok": not errors and sum(mismatches) == 0,
    }


def load_close_cycles(artifact: Path, backend: str, cycles: int) -> dict[str, Any]:
    x = _pool()[0]
    marks: dict[int, tuple[int, int]] = {}
    t0 = time.perf_counter()
    for i in range(1, cycles + 1):
        with _load(artifact, backend) as p:
            p.predict(x)
        if i in (100, cycles):
            gc.collect()
            marks[i] = (open_fds(), rss_bytes())
    seconds = time.perf_counter() - t0
    (fd100, rss100), (fd_end, rss_end) = marks[100], marks[cycles]
    return {
        "cycles": cycles,
        "fds_after_100": fd100,
        "fds_at_end": fd_end,
        "rss_mb_after_100": round(rss100 / 2**20, 1),
        "rss_mb_at_end": round(rss_end / 2**20, 1),
        "rss_ratio": round(rss_end / rss100, 4) if rss100 else None,
        "seconds": round(seconds, 1),
        "ok": fd_end == fd100 and (not rss100 or rss_end <= RSS_CYCLES_FACTOR * rss100),
    }


def long_run(artifact: Path, backend: str, calls: int, warmup: int = 2000) -> dict[str, Any]:
    x = _pool()[1]
    with _load(artifact, backend) as p:
        for _ in range(warmup):
            p.predict(x)
        gc.collect()
        before = rss_bytes()
        t0 = time.perf_counter()
        for _ in range(calls):
            p.predict(x)
        seconds = time.perf_counter() - t0
        gc.collect()
        after = rss_bytes()
    growth = (after - before) / before if before else 0.0
    return {
        "calls": calls,
        "rss_mb_after_warmup": round(before / 2**20, 1),
        "rss_mb_at_end": round(after / 2**20, 1),
        "rss_growth_percent": round(100 * growth, 2),
        "seconds": round(seconds, 1),
        "ok": growth <= RSS_GROWTH_LIMIT,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma list (default: all installed)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=10_000, help="predictions per thread")
    parser.add_argument("--cycles", type=int, default=1000, help="load/close cycles (>= 100)")
    parser.add_argument("--long-calls", type=int, default=100_000)
    parser.add_argument("--json", type=Path, default=JSON_PATH)
    args = parser.parse_args(argv)
    if args.cycles < 100:
        parser.error("--cycles must be at least 100 (figures are compared with cycle 100)")
    backends = [b for b in args.backends.split(",") if importlib.util.find_spec(BACKENDS.get(b, b))]
    if not backends:
        print("no backend installed here", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))  # tests.builders builds the artifact
    from tests.builders import build_artifact_for_tests, tiny_models

    report: dict[str, Any] = {
        "command": "make soak  (.venv/bin/python benchmarks/soak.py)",
        "loadavg_start": loadavg(),
        "backends": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        model, example = tiny_models.cnn()
        artifact = build_artifact_for_tests(model, example, Path(tmp) / "tiny")
        for backend in backends:
            print(f"{backend}: threads...", flush=True)
            row = {"threads": threads_identical(artifact, backend, args.threads, args.calls)}
            print(f"{backend}: load/close cycles...", flush=True)
            row["cycles"] = load_close_cycles(artifact, backend, args.cycles)
            print(f"{backend}: long run...", flush=True)
            row["long_run"] = long_run(artifact, backend, args.long_calls)
            report["backends"][backend] = row
    report["loadavg_end"] = loadavg()
    ok = all(part["ok"] for row in report["backends"].values() for part in row.values())
    report["ok"] = ok
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nload average: {report['loadavg_start']} → {report['loadavg_end']}")
    for backend, row in report["backends"].items():
        t, c, lr = row["threads"], row["cycles"], row["long_run"]
        print(
            f"{backend:9} threads {t['threads']}×{t['calls'] // t['threads']}: {t['mismatches']} mismatches "
            f"({t['seconds']} s) | cycles {c['cycles']}: fds {c['fds_after_100']}→{c['fds_at_end']}, "
            f"RSS {c['rss_mb_after_100']}→{c['rss_mb_at_end']} MB (×{c['rss_ratio']}) | "
            f"{lr['calls']} calls: RSS {lr['rss_mb_after_warmup']}→{lr['rss_mb_at_end']} MB "
            f"({lr['rss_growth_percent']:+.2f} %)  {'ok' if all(p['ok'] for p in row.values()) else 'FAIL'}"
        )
        for err in t["errors"][:5]:
            print("   ", err)
    print(f"written: {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
