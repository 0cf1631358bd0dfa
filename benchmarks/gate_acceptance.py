"""The CI gate's acceptance runs, for real on this machine (not replays):

1. **A/B recipe, unchanged model**: ``--pairs`` runs of ``infership compare --rerun`` with the recommended CI
   recipe (:data:`RECIPE`, the flags of ``examples/ci/speed-gate.sh``) between two exports of the same
   ResNet-18 (224×224). Goal: no false alarm (at most 1 in 20) and at most 2 in 20 "inconclusive".
2. **A/B recipe, a real slowdown**: the same, with the candidate exported for a 224×256 input (+14 % compute).
   Its true slowdown is measured in the same script with the raw runtime (plain ONNX Runtime sessions,
   interleaved blocks, no infership code in the timed call), before and after the runs. Goal: flagged in at
   least 19 of 20 ("inconclusive" counts as missed).
3. **Stored baseline, plain defaults**: ``--stored-pairs`` + 1 runs of ``infership bench MODEL --json`` (every
   option at its default), each compared with ``infership compare`` (defaults) to the one before.
   Goal: at most 1 false alarm in 10, the output saying when the noise was too large to decide.

    .venv/bin/python benchmarks/gate_acceptance.py --pairs 20 --stored-pairs 10   # over an hour
    .venv/bin/python benchmarks/gate_acceptance.py --pairs 2 --stored-pairs 2     # a smoke run, ~10 min

Each ``compare`` runs as its own process, as in CI. Results: ``runs/bench/gate_acceptance/acceptance.json``
and ``summary.md`` (with the load average before and after).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gate_common import INFERSHIP, RUNS, Stopwatch, copy_artifact, export, loadavg, run

OUT = RUNS / "gate_acceptance"
#: The recommended CI recipe (the flags of examples/ci/speed-gate.sh): ≤ 2 minutes of measuring per model.
RECIPE = ["--backend", "ort-cpu", "--threads", "1", "--batch", "1", "--duration", "10", "--max-duration", "40",
          "--max-slowdown", "5%", "--max-p99-slowdown", "off"]  # fmt: skip
EXIT_NAMES = {0: "ok", 1: "regression", 2: "not comparable", 3: "inconclusive", 4: "error"}


def raw_ratio(base: Path, wide: Path, *, blocks: int = 20, calls: int = 15) -> float:
    """Median latency of ``wide`` over ``base`` with plain ONNX Runtime sessions (the recipe's thread count), measured
    in alternating blocks with a rest before each: the true cost of the larger input on this machine."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if "--threads" in RECIPE:  # the same thread count as the gate's runs
        options.intra_op_num_threads = int(RECIPE[RECIPE.index("--threads") + 1])

    def session(art: Path) -> tuple[Any, dict[str, np.ndarray]]:
        sess = ort.InferenceSession(str(art / "model.onnx"), options, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        shape = [1 if not isinstance(d, int) else d for d in inp.shape]
        return sess, {inp.name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}

    sides = [session(base), session(wide)]
    times: list[list[float]] = [[], []]
    for b in range(blocks):
        for i in (0, 1) if b % 2 == 0 else (1, 0):
            sess, feed = sides[i]
            time.sleep(0.1)
            sess.run(None, feed)  # untimed: the first call after a rest
            for _ in range(calls):
                t0 = time.perf_counter_ns()
                sess.run(None, feed)
                times[i].append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(times[1]) / statistics.median(times[0])


def ab(baseline: Path, candidate: Path, out: Path, tag: str) -> dict[str, Any]:
    t0 = time.monotonic()
    js = out / f"{tag}.json"
    proc = run(
        [*INFERSHIP, "compare", "--rerun", str(baseline), str(candidate), *RECIPE, "--json", str(js)],
        check=False,
    )
    row = json.loads(js.read_text())["rows"][0] if js.exists() else {}
    p50 = row.get("p50") or {}
    return {
        "tag": tag, "exit": proc.returncode, "verdict": EXIT_NAMES.get(proc.returncode, "?"),
        "p50": p50.get("estimate"), "p50_low": p50.get("low"), "detectable": row.get("detectable_slowdown"),
        "pairs": row.get("pairs"), "seconds": round(time.monotonic() - t0, 1), "load": loadavg(),
        "stderr": proc.stderr[-500:] if proc.returncode == 4 else "",
    }  # fmt: skip


def stored(model: Path, out: Path, n: int, clock: Stopwatch) -> list[dict[str, Any]]:
    files = []
    rows = []
    for k in range(n + 1):
        f = out / f"stored{k}.json"
        run([*INFERSHIP, "bench", str(model), "--json", str(f)])
        files.append(f)
        if k:
            proc = run([*INFERSHIP, "compare", str(files[k - 1]), str(f), "--json", str(out / f"cmp{k}.json")],
                       check=False)  # fmt: skip
            row = json.loads((out / f"cmp{k}.json").read_text())["rows"][0]
            rows.append({"exit": proc.returncode, "verdict": EXIT_NAMES.get(proc.returncode, "?"),
                         "p50": row["p50"]["estimate"], "detectable": row.get("detectable_slowdown"),
                         "load": loadavg()})  # fmt: skip
            print(
                f"[{clock}] stored pair {k}/{n}: {rows[-1]['verdict']} (p50 {rows[-1]['p50']:.3f})",
                flush=True,
            )
    return rows


def summary(result: dict[str, Any]) -> str:
    aa, slow, st = result["aa"], result["slow"], result["stored"]

    def count(rows: list[dict[str, Any]], verdict: str) -> int:
        return sum(r["verdict"] == verdict for r in rows)

    lines = [
        "| runs | n | ok | regression | inconclusive | other | goal |",
        "|---|---|---|---|---|---|---|",
        f"| A/B recipe, unchanged ResNet-18 | {len(aa)} | {count(aa, 'ok')} | {count(aa, 'regression')} | "
        f"{count(aa, 'inconclusive')} | {len(aa) - count(aa, 'ok') - count(aa, 'regression') - count(aa, 'inconclusive')} "
        "| ≤ 1 false alarm in 20, ≤ 2 inconclusive |",
        f"| A/B recipe, 224×256 input (true ratio {result['true_ratio']}) | {len(slow)} | {count(slow, 'ok')} | "
        f"{count(slow, 'regression')} | {count(slow, 'inconclusive')} | "
        f"{len(slow) - count(slow, 'ok') - count(slow, 'regression') - count(slow, 'inconclusive')} | flagged ≥ 19 in 20 |",
        f"| stored baseline, plain defaults | {len(st)} | {count(st, 'ok')} | {count(st, 'regression')} | "
        f"{count(st, 'inconclusive')} | {len(st) - count(st, 'ok') - count(st, 'regression') - count(st, 'inconclusive')} "
        "| ≤ 1 false alarm in 10 |",
        "",
        f"Recipe: `infership compare --rerun BASE CAND {' '.join(RECIPE)}`. Load average {result['load']['start']} "
        f"before, {result['load']['end']} after; {result['minutes']:.0f} minutes. Regenerate: "
        f"`.venv/bin/python benchmarks/gate_acceptance.py --pairs {len(aa)} --stored-pairs {len(st)}`.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=20, help="A/B runs of each kind (default: 20)")
    p.add_argument("--stored-pairs", type=int, default=10, help="stored-baseline comparisons (default: 10)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    clock = Stopwatch()
    load = {"start": loadavg()}
    arts = out / "artifacts"
    base = export("torchvision:resnet18", "1x3x224x224", arts / "resnet18", name="resnet18")
    same = copy_artifact(base, arts / "resnet18-again")
    wide = export("torchvision:resnet18", "1x3x224x256", arts / "resnet18-224x256", name="resnet18")
    ratios = [raw_ratio(base, wide)]
    print(f"[{clock}] raw ONNX Runtime ratio 224×256 / 224×224: {ratios[0]:.3f}", flush=True)
    aa, slow = [], []
    for i in range(args.pairs):
        aa.append(ab(base, same, out, f"aa{i}"))
        print(f"[{clock}] A/A {i + 1}/{args.pairs}: {aa[-1]['verdict']} (p50 {aa[-1]['p50']}, could detect "
              f"{aa[-1]['detectable']}, {aa[-1]['pairs']} pairs)", flush=True)  # fmt: skip
        slow.append(ab(base, wide, out, f"slow{i}"))
        print(f"[{clock}] 224×256 {i + 1}/{args.pairs}: {slow[-1]['verdict']} (p50 {slow[-1]['p50']}, "
              f"{slow[-1]['pairs']} pairs)", flush=True)  # fmt: skip
    ratios.append(raw_ratio(base, wide))
    st = stored(base, out, args.stored_pairs, clock)
    load["end"] = loadavg()
    result = {
        "recipe": RECIPE, "true_ratio": " / ".join(f"{r:.3f}" for r in ratios), "aa": aa, "slow": slow,
        "stored": st, "load": load, "minutes": (time.monotonic() - clock.t0) / 60,
    }  # fmt: skip
    (out / "acceptance.json").write_text(json.dumps(result, indent=1))
    text = summary(result)
    (out / "summary.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
