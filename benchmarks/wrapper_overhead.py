"""What ``Predictor.predict`` costs over calling the raw runtime, per CPU backend, and the rule it must meet.

For each backend installed here (``ort-cpu``, ``openvino``, ``torch``) the same tiny CNN artifact
([1,3,16,16] → [1,5], batch 1) is run through the raw runtime call and through ``Predictor.predict``, in
alternating blocks of calls on the same input, so machine noise hits both alike; each side's figure is the
median of all its calls (timed with :func:`infership.runtime.timing.time_calls`). The wrapper may cost at
most ``max(5 % of the raw call, 20 µs)`` (:func:`allowed_overhead_us`).

``make bench`` measures it (``benchmarks/test_wrapper_overhead.py``), prints the table and writes
``runs/bench/wrapper_overhead.json``; a backend over the limit fails the run. Standalone:

    .venv/bin/python benchmarks/wrapper_overhead.py [--reps 5000] [--json runs/bench/wrapper_overhead.json]

exits 1 when a backend is over the limit (2 when no backend is installed).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: Where ``make bench`` records the figures (``/runs/`` is not committed).
JSON_PATH = ROOT / "runs" / "bench" / "wrapper_overhead.json"
#: The rule: the wrapper may cost this share of the raw call...
MAX_OVERHEAD_FRACTION = 0.05
#: ...or this many microseconds, whichever is larger (a fixed cost matters little next to a slow model).
MAX_OVERHEAD_US = 20.0
#: Filled by ``benchmarks/test_wrapper_overhead.py`` for the summary and JSON that ``make bench`` writes.
RECORDED: list[Overhead] = []
#: Backends measured, with the package each needs.
BACKENDS = {"ort-cpu": "onnxruntime", "openvino": "openvino", "torch": "torch"}
#: The input every call gets (batch 1 of the tiny CNN).
X = np.random.default_rng(0).standard_normal((1, 3, 16, 16), dtype=np.float32)

#: A raw runtime call: the input array in, the logits array (owned by the caller) out.
RawCall = Callable[[np.ndarray], np.ndarray]


def allowed_overhead_us(raw_us: float) -> float:
    """The most ``Predictor.predict`` may add over a raw call of ``raw_us`` microseconds."""
    return max(MAX_OVERHEAD_FRACTION * raw_us, MAX_OVERHEAD_US)


def installed_backends() -> list[str]:
    """The measured backends whose runtime is installed here."""
    return [b for b, package in BACKENDS.items() if importlib.util.find_spec(package) is not None]


@dataclass(frozen=True)
class Overhead:
    """One backend's figures (microseconds, medians over ``calls`` calls per side)."""

    backend: str
    raw_call: str
    raw_us: float
    predict_us: float
    calls: int

    @property
    def overhead_us(self) -> float:
        return self.predict_us - self.raw_us

    @property
    def overhead_pct(self) -> float:
        return 100.0 * self.overhead_us / self.raw_us

    @property
    def allowed_us(self) -> float:
        return allowed_overhead_us(self.raw_us)

    @property
    def ok(self) -> bool:
        return self.overhead_us <= self.allowed_us

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "overhead_us": self.overhead_us,
            "overhead_pct": self.overhead_pct,
            "allowed_us": self.allowed_us,
            "ok": self.ok,
        }

    def line(self) -> str:
        verdict = "ok" if self.ok else "OVER THE LIMIT"
        return (
            f"{self.backend:9} raw {self.raw_us:8.1f} µs  predict {self.predict_us:8.1f} µs  "
            f"overhead {self.overhead_us:+7.1f} µs ({self.overhead_pct:+5.1f} %)  "
            f"allowed {self.allowed_us:5.1f} µs  {verdict}   raw: {self.raw_call}"
        )


def raw_call(root: Path, backend: str) -> tuple[str, RawCall]:
    """The raw runtime call for ``backend`` on the artifact at ``root``, as a careful user would write it:
    (description, call).

    Like for like with the Predictor's session on the same variant, so that the difference is the
    wrapper's cost and nothing else: the same runtime settings (no thread counts set: each runtime's default,
    as ``Predictor.load`` without ``intra_op_threads``; OpenVINO's latency hint and f32 arithmetic), the
    same C-contiguous float32 input passed without a copy, and an output the caller owns, which the
    Predictor guarantees (ONNX Runtime and torch return fresh arrays; OpenVINO's shared output buffers are
    overwritten by the next call, so the raw call copies them once, as the Predictor does).
    """
    if backend == "ort-cpu":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # the Predictor's default
        sess = ort.InferenceSession(str(root / "model.onnx"), so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]  # named once, as the Predictor does
        return "sess.run(names, {'x': x})[0]", lambda a: sess.run(names, {"x": a})[0]
    if backend == "openvino":
        import openvino as ov

        # The Predictor's configuration for an fp32 variant: f32 pinned (else a bf16-capable CPU runs bf16,
        # a different computation) and the latency hint.
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        compiled = ov.Core().compile_model(str(root / "openvino" / "model.xml"), "CPU", config)
        req = compiled.create_infer_request()

        def infer(a: np.ndarray) -> np.ndarray:
            # No copy in, views of the request's buffers out; one copy so the caller owns the result.
            res = req.infer({"x": a}, share_inputs=True, share_outputs=True)
            return np.array(res[0], copy=True)

        return "np.array(req.infer({'x': x}, share_inputs=True, share_outputs=True)[0], copy=True)", infer
    if backend == "torch":
        import torch

        module = torch.export.load(str(root / "model.pt2")).module()

        def run(a: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(a)).numpy()

        return "module(torch.from_numpy(x)).numpy() under inference_mode", run
    from infership.runtime.errors import InvalidInputError

    raise InvalidInputError(f"no raw call for backend {backend!r}; known: {sorted(BACKENDS)}")


def measure_interleaved(
    raw: Callable[[], Any], wrapped: Callable[[], Any], *, reps: int, block: int = 100
) -> tuple[float, float, int]:
    """Medians (µs) of ``raw`` and ``wrapped`` over about ``reps`` calls each (whole blocks), in alternating
    blocks of ``block`` calls after a common warm-up, and the calls per side. Garbage collection is off
    while timing (a collection would land on one side at random)."""
    from infership.runtime.timing import time_calls

    time_calls(raw, runs=1, warmup=200)
    time_calls(wrapped, runs=1, warmup=200)
    r: list[float] = []
    w: list[float] = []
    gc.disable()
    try:
        for _ in range(max(1, reps // block)):
            r += time_calls(raw, runs=block, warmup=0)
            w += time_calls(wrapped, runs=block, warmup=0)
    finally:
        gc.enable()
    return 1000.0 * statistics.median(r), 1000.0 * statistics.median(w), len(r)


def measure_backend(root: Path, backend: str, *, reps: int = 5000) -> Overhead:
    """The wrapper overhead of ``backend`` on the artifact at ``root`` (see the module docstring)."""
    from infership import Predictor

    what, call = raw_call(root, backend)
    with Predictor.load(root, backend=backend) as p:
        raw_us, predict_us, calls = measure_interleaved(lambda: call(X), lambda: p.predict(X), reps=reps)
    return Overhead(backend, what, raw_us, predict_us, calls)


def write_json(rows: list[Overhead], path: Path = JSON_PATH, *, command: str) -> Path:
    """Record ``rows`` (with the rule and the command that measured them) as JSON at ``path``."""
    from infership.runtime import hardware

    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "what": "Predictor.predict over the raw runtime call, tiny CNN [1,3,16,16] -> [1,5], batch 1",
        "rule": f"overhead_us <= max({MAX_OVERHEAD_FRACTION:.0%} of raw_us, {MAX_OVERHEAD_US:g} us)",
        "command": command,
        "fingerprint": hardware.fingerprint(),
        "backends": {r.backend: r.to_dict() for r in rows},
    }
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """Measure every installed backend, print the figures and write the JSON.

    Returns:
        0 when every backend is within the limit, 1 when one is over it, 2 when no backend is installed.
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5000, help="calls per side and backend (default 5000)")
    ap.add_argument("--json", type=Path, default=JSON_PATH, help=f"where to write the figures ({JSON_PATH})")
    args = ap.parse_args(argv)

    backends = installed_backends()
    if not backends:
        packages = ", ".join(BACKENDS.values())
        print(
            f"no backend to measure: none of {packages} is installed (pip install 'infership[all]')",
            file=sys.stderr,
        )
        return 2
    sys.path.insert(0, str(ROOT))  # tests.builders builds the artifact
    from tests.builders import build_artifact_for_tests, tiny_models

    model, example = tiny_models.cnn()
    with tempfile.TemporaryDirectory() as tmp:
        root = build_artifact_for_tests(model, example, Path(tmp) / "tiny")
        rows = [measure_backend(root, b, reps=args.reps) for b in backends]
    print(
        f"tiny CNN [1,3,16,16] → [1,5], batch 1, median of {rows[0].calls} calls per side, interleaved blocks"
    )
    for row in rows:
        print(row.line())
    command = f".venv/bin/python benchmarks/wrapper_overhead.py --reps {args.reps}"
    print(f"written: {write_json(rows, args.json, command=command)}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
