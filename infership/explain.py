""" "Why is it not faster here?" — answered from measurements on this machine.

:func:`explain` reports, for an artifact:

- **int8 vs fp32 as measured**: batch-1 median of the int8 variant over the fp32 one on the same backend;
- **the share of compute running in int8**: the runtime's own profile of the int8 path (ONNX Runtime's
  per-node profiling; OpenVINO's executed graph with performance counters, whose kernel names say the
  precision each node ran in), with the time spent converting between int8 and float;
- **the top operators by time** of the profiled path;
- **thread scaling**: batch-1 median with one thread and with every usable CPU;
- **the ISA verdict** (:func:`infership.convert.int8.int8_outlook`): what int8 can do on this CPU at all.

Figures already measured by ``optimize`` are reused (its trials); what is missing is measured here, briefly.
Profiling opens the verified model file in the runtime directly: the backends do not expose the runtimes'
profilers, and profiling changes the timing of the session that runs it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infership.runtime import Artifact, Predictor, registry
from infership.runtime.atomic import scratch_dir
from infership.runtime.errors import BackendUnavailable, InferenceError, InvalidInputError
from infership.runtime.profile import usable_cpus
from infership.runtime.timing import median_ms

log = logging.getLogger(__name__)

#: ONNX Runtime kernels that compute in integers (after QDQ fusion).
ORT_INT8_OPS = frozenset(
    {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "QGemm",
     "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearGlobalAveragePool", "QLinearAveragePool",
     "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "QAttention", "DynamicQuantizeMatMul",
     "QLinearWhere", "QEmbedLayerNormalization"}
)  # fmt: skip
ORT_CONVERT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
PROFILE_RUNS = 30


@dataclass(frozen=True)
class OpTime:
    """One operator type's share of the profiled path."""

    op: str
    ms: float
    share: float
    precision: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "ms": round(self.ms, 4),
            "share": round(self.share, 3),
            "precision": self.precision,
        }


@dataclass(frozen=True)
class Explanation:
    """What was measured, and what it says (:attr:`lines`)."""

    int8_support: str
    isa_verdict: str
    isa_notes: tuple[str, ...]
    int8_speedup: dict[str, float] = field(default_factory=dict)
    profiled: str | None = None
    int8_share: float | None = None
    convert_share: float | None = None
    top_ops: tuple[OpTime, ...] = ()
    thread_scaling: dict[str, dict[int, float]] = field(default_factory=dict)
    lines: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "int8_support": self.int8_support,
            "isa_verdict": self.isa_verdict,
            "isa_notes": list(self.isa_notes),
            "int8_speedup": self.int8_speedup,
            "profiled": self.profiled,
            "int8_share": self.int8_share,
            "convert_share": self.convert_share,
            "top_ops": [o.to_dict() for o in self.top_ops],
            "thread_scaling": {b: {str(k): v for k, v in d.items()} for b, d in self.thread_scaling.items()},
            "lines": list(self.lines),
        }


def explain(
    artifact: str | os.PathLike[str] | Artifact,
    *,
    trials: Sequence[Any] = (),
    chosen: Any = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> Explanation:
    """Measure and explain why the artifact runs as fast as it does here (see the module docstring).

    Args:
        artifact: Artifact directory (or loaded artifact).
        trials: ``optimize``'s trials (:class:`infership.optimizer.Trial`): batch-1 figures reused.
        chosen: ``optimize``'s chosen trial: its path is the one profiled when it is int8.
        shapes: Input name → full shape, for inputs with dynamic axes besides the batch (a text encoder's
            sequence length); the batch axis is set to 1.

    Returns:
        The :class:`Explanation`.
    """
    from infership.convert.int8 import int8_outlook

    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    # Built on first use, once, inside each measurement's error handling (a dynamic axis without a shape
    # leaves only the figures the trials already hold).
    pool = functools.cache(lambda: _pool(art, dict(shapes or {})))
    outlook = int8_outlook()
    backends = [b for b in ("ort-cpu", "openvino") if registry.is_available(b) is None]
    speedup = _int8_speedup(art, backends, trials, pool)
    scaling = _thread_scaling(art, backends, trials, pool)
    target = _profile_target(art, backends, chosen)
    profiled, int8_share, convert_share, ops = None, None, None, ()
    if target is not None:
        backend, variant = target
        try:
            ops = tuple(_profile(art, backend, variant, pool()[0]))
        except (BackendUnavailable, InferenceError, InvalidInputError, RuntimeError) as exc:
            log.warning("profiling %s on %s failed: %s", variant, backend, exc)
        if ops:
            profiled = f"{variant} on {backend}"
            int8_share = round(sum(o.share for o in ops if o.precision == "int8"), 3)
            convert_share = round(sum(o.share for o in ops if o.precision == "convert"), 3)
    exp = Explanation(
        int8_support=outlook.int8_support, isa_verdict=outlook.verdict, isa_notes=tuple(outlook.notes),
        int8_speedup=speedup, profiled=profiled, int8_share=int8_share, convert_share=convert_share,
        top_ops=tuple(sorted(ops, key=lambda o: -o.ms)[:8]), thread_scaling=scaling,
    )  # fmt: skip
    return Explanation(**{**exp.__dict__, "lines": tuple(_sentences(exp))})


# ---------------------------------------------------------------------------------------------- figures
def _best_p50(
    trials: Sequence[Any], backend: str, precision: str, threads: int | None = None
) -> float | None:
    found = [
        t.p50_ms
        for t in trials
        if t.candidate.backend == backend and t.candidate.precision == precision and t.candidate.compute is None
        and t.candidate.batch_size == 1 and t.candidate.concurrency == 1 and t.p50_ms is not None
        and (threads is None or t.candidate.settings.get("intra_op_threads") == threads)
    ]  # fmt: skip
    return min(found) if found else None


def _measure(
    art: Artifact, backend: str, precision: str, pool: Callable[[], Any], **options: Any
) -> float | None:
    try:
        with Predictor.load(art, backend=backend, precision=precision, **options) as p:
            feeds, i = pool(), iter(range(1 << 62))
            return median_ms(lambda: p.predict(feeds[next(i) % len(feeds)]), runs=40, warmup=5, rest_s=0.1)
    except (BackendUnavailable, InvalidInputError, InferenceError) as exc:
        log.info("explain: %s %s not measured: %s", backend, precision, exc)
        return None


def _int8_speedup(
    art: Artifact, backends: Sequence[str], trials: Sequence[Any], pool: Callable[[], Any]
) -> dict[str, float]:
    out = {}
    has_int8 = any(v.precision == "int8" for v in art.manifest.variants)
    for b in backends if has_int8 else ():
        fp32 = _best_p50(trials, b, "fp32") or _measure(art, b, "fp32", pool)
        int8 = _best_p50(trials, b, "int8") or _measure(art, b, "int8", pool)
        if fp32 and int8:
            out[b] = round(fp32 / int8, 2)
    return out


def _thread_scaling(
    art: Artifact, backends: Sequence[str], trials: Sequence[Any], pool: Callable[[], Any]
) -> dict[str, dict[int, float]]:
    cpus = usable_cpus()
    out: dict[str, dict[int, float]] = {}
    for b in backends:
        precision = "int8" if any(v.precision == "int8" for v in art.manifest.variants) else "fp32"
        row = {}
        for t in sorted({1, cpus}):
            ms = _best_p50(trials, b, precision, t) or _measure(art, b, precision, pool, intra_op_threads=t)
            if ms:
                row[t] = round(ms, 4)
        if row:
            out[f"{b} {precision}"] = row
    return out


def _profile_target(art: Artifact, backends: Sequence[str], chosen: Any) -> tuple[str, str] | None:
    if chosen is not None and chosen.candidate.backend in ("ort-cpu", "openvino"):
        c = chosen.candidate
        if c.precision == "int8" or not any(v.precision == "int8" for v in art.manifest.variants):
            return c.backend, c.variant
    for b in backends:
        v = art.manifest.find(formats=registry.get_backend(b).formats, precision="int8")
        if v is not None:
            return b, v.id
    if backends:
        v = art.manifest.find(formats=registry.get_backend(backends[0]).formats, precision="fp32")
        return (backends[0], v.id) if v is not None else None
    return None


def _pool(art: Artifact, shapes: Mapping[str, Sequence[int]]) -> Any:
    """Batch-1 inputs for every measurement: token batches of the given length for a text encoder, else
    random values."""
    from infership.bench import model_pool

    return model_pool(art.manifest, art.root, batch_size=1, shapes=shapes, size=4)


def _profile(art: Artifact, backend: str, variant_id: str, feed: Mapping[str, Any]) -> list[OpTime]:
    """Per operator type: time and precision over :data:`PROFILE_RUNS` batch-1 calls."""
    v = art.manifest.variant(variant_id)
    art.verify(v)  # the profiler opens the file directly: the same hash check as a load
    path = os.fspath(art.path_of(v.files[0]))
    feed = dict(feed)
    times: dict[tuple[str, str], float] = defaultdict(float)
    if backend == "openvino":
        import openvino as ov

        xml = next((os.fspath(art.path_of(f)) for f in v.files if f.path.endswith(".xml")), path)
        compiled = ov.Core().compile_model(xml, "CPU", {"PERF_COUNT": True})
        req = compiled.create_infer_request()
        req.infer(feed)
        runs = counted = _runs(lambda: req.infer(feed))
        for _ in range(runs):
            req.infer(feed)
            for info in req.get_profiling_info():
                if str(info.status).endswith("EXECUTED"):
                    kind = info.exec_type.upper()
                    prec = "int8" if kind.endswith(("_I8", "_U8")) else "float"
                    times[(info.node_type, prec)] += info.real_time.total_seconds() * 1e3
    else:
        import onnxruntime as ort

        from infership.runtime.backends.ort import disabled_optimizers

        with scratch_dir("explain") as tmp:
            so = ort.SessionOptions()
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(tmp, "ort")
            sess = ort.InferenceSession(  # without the optimizers the backend leaves out for this task
                path,
                so,
                providers=["CPUExecutionProvider"],
                disabled_optimizers=disabled_optimizers(art.manifest.task),
            )
            sess.run(None, feed)
            runs = _runs(lambda: sess.run(None, feed))
            for _ in range(runs):
                sess.run(None, feed)
            counted = runs + 1  # every run after the first: the sizing call and the loop
            with open(sess.end_profiling()) as f:
                events = json.load(f)
        # The first run prepares kernels (weight packing): only the runs after it are counted.
        runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e.get("ts", 0))
        cutoff = runs[0]["ts"] + runs[0].get("dur", 0) if runs else 0
        for e in events:
            args = e.get("args") or {}
            if (
                e.get("ts", 0) >= cutoff
                and e.get("cat") == "Node"
                and str(e.get("name", "")).endswith("_kernel_time")
                and "op_name" in args
            ):
                op = args["op_name"]
                prec = "int8" if op in ORT_INT8_OPS else "convert" if op in ORT_CONVERT_OPS else "float"
                times[(op, prec)] += float(e.get("dur", 0)) / 1e3
    total = sum(times.values()) or 1.0
    return [OpTime(op, ms / counted, ms / total, prec) for (op, prec), ms in times.items()]


def _runs(call: Any) -> int:
    """Profiled calls: :data:`PROFILE_RUNS` at least, more for fast models (about 0.3 s of calls), so that
    the profiler's own per-node cost and the machine's noise average out."""
    from infership.runtime.timing import timed

    ms = max(timed(call)[1], 1e-3)
    return int(min(2000, max(PROFILE_RUNS, 300 / ms)))


def _sentences(e: Explanation) -> list[str]:
    out = [f"CPU int8 support: {e.int8_support} ({e.isa_verdict}). " + " ".join(e.isa_notes)]
    for b, r in e.int8_speedup.items():
        word = "faster" if r >= 1.15 else "about as fast" if r >= 0.9 else "SLOWER"
        out.append(f"{b}: int8 is {r}x fp32 at batch 1 ({word}).")
    if e.profiled:
        out.append(
            f"{e.profiled}: {100 * (e.int8_share or 0):.0f}% of operator time runs in int8, "
            f"{100 * (e.convert_share or 0):.0f}% converts between int8 and float."
        )
        if e.int8_share is not None and e.int8_share < 0.5 and "int8" in e.profiled:
            out.append("Less than half the time is int8 compute: float operators or conversions dominate.")
        top = ", ".join(f"{o.op} {100 * o.share:.0f}% ({o.precision})" for o in e.top_ops[:5])
        out.append(f"Top operators: {top}.")
    for name, row in e.thread_scaling.items():
        if len(row) == 2:
            (t1, one), (tn, many) = sorted(row.items())
            eff = one / many / tn if many else 0.0
            out.append(f"{name}: {one} ms on 1 thread, {many} ms on {tn} ({eff:.0%} parallel efficiency).")
    return out
