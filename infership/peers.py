"""Peers measured in the same run as the chosen path: what each tool gives with its own defaults.

- **torch eager fp32**: the fp32 ``nn.Module`` (``torch_model``), else the artifact's ``torch.export``
  program run eagerly, under ``torch.no_grad()``.
- **ONNX Runtime int8, quantize_static defaults**: ``onnxruntime.quantization.quantize_static`` with its
  defaults on the artifact's fp32 ONNX file, run in a default ``InferenceSession``.
- **OpenVINO int8, NNCF defaults**: ``nncf.quantize`` with its defaults on the fp32 IR, compiled with the
  default configuration for latency, and with the ``THROUGHPUT`` hint and an ``AsyncInferQueue`` of the
  optimal number of requests for throughput (OpenVINO's own recipe).
- for a transformer text encoder (an artifact with a tokenizer), NNCF is given ``model_type=TRANSFORMER``
  as its guide asks (and OpenVINO computes the float parts in f32 on the CPU, as infership's backend does:
  its bf16 default on CPUs with AMX breaks these models), and one more peer runs: **ONNX Runtime int8,
  quantize_dynamic per-channel** on the exported fp32 file (the raw recipe transformer users reach for
  first; Optimum's CPU recipe quantizes the same way after fusing the graph);
- **torch FX int8, x86 defaults**: ``prepare_fx`` / ``convert_fx`` with ``get_default_qconfig_mapping("x86")``
  on the ``nn.Module`` (only with ``torch_model``).

Every peer and the chosen path are measured in interleaved blocks with a rest before each, so that the
machine's load hits them alike: batch 1 with one caller for ``latency`` (the one timer,
:func:`infership.runtime.timing.time_calls`), the offline scenario of the harness at the chosen batch size
for the throughput objectives. The chosen path's speed over each peer's is the median over rounds of the
ratio between their blocks of the same round (a round runs one block of every side, seconds apart, each
round starting one side later than the last), so
slow and fast phases of the machine that last longer than a round fall on both sides of a pair (the pooled
ratio is reported beside it). A block that measured nothing is left out of the pairs. Every int8 peer is judged on the same
held-out data with the same task judge as the chosen path; a peer **counts** only within the same accuracy
budget.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from infership.runtime import Artifact, Predictor
from infership.runtime.atomic import scratch_dir
from infership.runtime.backends.openvino import default_inference_precision
from infership.runtime.errors import InfershipError
from infership.runtime.tasks import judge_for
from infership.runtime.timing import round_order, time_calls

from .optimize_checks import AccuracyChecks, artifact_data
from .optimize_space import Candidate

log = logging.getLogger(__name__)

#: Interleaved blocks per side, and the seconds each block measures.
BLOCKS = 5
BLOCK_S = 1.0
REST_S = 0.1
#: Calibration samples every int8 peer is calibrated with (the same ones for all).
CALIBRATION_SAMPLES = 128

Feed = Mapping[str, np.ndarray]

ORT_STATIC = "onnxruntime int8 (quantize_static defaults)"
OPENVINO = "openvino int8 (NNCF defaults)"
#: For a transformer text encoder NNCF's documentation asks for ``model_type=TRANSFORMER`` (SmoothQuant,
#: attention kept accurate): the peer uses it, as a user following NNCF's guide would.
OPENVINO_TEXT = "openvino int8 (NNCF defaults, model_type=TRANSFORMER)"
ORT_DYNAMIC = "onnxruntime int8 (quantize_dynamic per-channel)"


@dataclass
class PeerResult:
    """One side of the comparison: figures over all its blocks, and whether it counts."""

    name: str
    precision: str
    samples_ms: list[float] = field(default_factory=list)
    items: float = 0.0
    seconds: float = 0.0
    loss_points: float | None = None
    counts: bool = True
    note: str = ""
    block_speeds: list[float] = field(default_factory=list)
    """Speed in each interleaved block (1/median ms, or items per second): the pairs for :meth:`ratio_to`."""
    chosen_ratio: float | None = None
    """The chosen path's speed over this side's, paired by block (set by :func:`compare_peers`)."""

    @property
    def p50_ms(self) -> float | None:
        return float(np.median(self.samples_ms)) if self.samples_ms else None

    @property
    def throughput(self) -> float | None:
        return self.items / self.seconds if self.seconds > 0 else None

    def speed(self, objective: str) -> float | None:
        """Higher is faster: 1/p50 for latency, items per second otherwise."""
        if objective == "latency":
            return 1.0 / self.p50_ms if self.p50_ms else None
        return self.throughput

    def ratio_to(self, other: PeerResult) -> float | None:
        """This side's speed over ``other``'s: the median over rounds of the ratio between the two sides'
        blocks of the same round (measured seconds apart). Phases of the machine that last longer than a
        round — a second core busy for a while, turbo states — then slow both sides of a pair alike, where a
        ratio of pooled medians can move by a whole phase when one side happens to get one block more of it.
        Blocks that measured nothing (speed 0) are left out."""
        pairs = [
            a / b for a, b in zip(self.block_speeds, other.block_speeds, strict=False) if a > 0 and b > 0
        ]
        return float(np.median(pairs)) if pairs else None

    def to_dict(self) -> dict[str, Any]:
        p99 = float(np.percentile(self.samples_ms, 99)) if self.samples_ms else None
        return {
            "name": self.name,
            "precision": self.precision,
            "p50_ms": None if self.p50_ms is None else round(self.p50_ms, 4),
            "p99_ms": None if p99 is None else round(p99, 4),
            "throughput": None if self.throughput is None else round(self.throughput, 2),
            "loss_points": self.loss_points,
            "counts": self.counts,
            "note": self.note,
            "chosen_ratio": None if self.chosen_ratio is None else round(self.chosen_ratio, 4),
            "block_speeds": [round(v, 6) for v in self.block_speeds],
        }


@dataclass(frozen=True)
class PeersReport:
    """The chosen path against every peer, measured interleaved in one run.

    Attributes:
        ratio: The chosen path's speed over the best peer that counts (> 1: the chosen path is faster),
            paired by block (:meth:`PeerResult.ratio_to`); the best peer is the one this ratio is lowest for.
        best_peer: That peer's name.
        pooled_ratio: The same from the pooled figures (p50 over all blocks, or total items over total time).
    """

    objective: str
    batch_size: int
    chosen: PeerResult
    peers: tuple[PeerResult, ...]
    ratio: float | None
    best_peer: str | None
    load_average: tuple[float, ...]
    others: tuple[PeerResult, ...] = ()
    pooled_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "batch_size": self.batch_size,
            "chosen": self.chosen.to_dict(),
            "peers": [p.to_dict() for p in self.peers],
            "ratio_to_best_peer": None if self.ratio is None else round(self.ratio, 3),
            "pooled_ratio_to_best_peer": None if self.pooled_ratio is None else round(self.pooled_ratio, 3),
            "best_peer": self.best_peer,
            "load_average": list(self.load_average),
            "others": [o.to_dict() for o in self.others],
        }


@dataclass
class _Side:
    result: PeerResult
    call: Callable[[Feed], Any]
    offline: Callable[[list[Feed], float], tuple[float, float]] | None = None
    close: Callable[[], None] = lambda: None
    per_block: int = 5


def compare_peers(
    art: Artifact,
    chosen: Candidate,
    *,
    objective: str,
    checks: AccuracyChecks,
    calibration: str | None,
    torch_model: Any = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    blocks: int = BLOCKS,
    block_s: float = BLOCK_S,
    also: Sequence[tuple[str, Candidate]] = (),
) -> PeersReport:
    """Build the peers, judge their accuracy, and measure them interleaved with ``chosen``.

    Args:
        art: The artifact (its fp32 ONNX and IR files feed the peers).
        chosen: The path :func:`infership.optimizer.optimize` chose.
        objective: ``latency`` or a throughput objective.
        checks: The accuracy checks of the search (same data, reference and budget).
        calibration: The calibration source for the int8 peers (without it they are left out).
        torch_model: The fp32 ``nn.Module`` or a model source string (torch eager and FX peers).
        shapes: Input shapes for dynamic axes.
        blocks, block_s: Interleaved blocks per side and seconds per block.
        also: More paths through the Predictor to measure in the same interleaving, as ``(label,
            candidate)`` (e.g. what ``Predictor.load`` opens without a profile); reported in ``others``.

    Returns:
        The :class:`PeersReport`.
    """
    batch = 1 if objective == "latency" else chosen.batch_size
    with scratch_dir("peers") as tmp:
        calib = _calibration(art, calibration)
        module = _torch_module(art, torch_model)
        text = art.manifest.tokenizer is not None
        builders: list[tuple[str, str, Callable[[], _Side]]] = [
            ("torch eager fp32", "fp32", lambda: _torch_side(module, "torch eager fp32", "fp32")),
            (ORT_STATIC, "int8", lambda: _ort_side(art, calib, Path(tmp))),
            (
                OPENVINO_TEXT if text else OPENVINO,
                "int8",
                lambda: _openvino_side(art, calib, objective, text=text),
            ),
            ("torch fx int8 (x86 defaults)", "int8", lambda: _fx_side(module, calib)),
        ]
        if text:  # the raw recipe transformer users reach for first (Optimum's runs it on a fused graph)
            builders.insert(2, (ORT_DYNAMIC, "int8", lambda: _ort_dynamic_side(art, Path(tmp))))
        sides = [_predictor_side(art, f"chosen: {chosen.describe()}", chosen, batch)]
        skipped: list[PeerResult] = []
        try:
            for label, cand in also:
                sides.append(_predictor_side(art, label, replace(cand, batch_size=batch), batch))
            for name, precision, build in builders:
                try:
                    side = build()
                except (InfershipError, ImportError, RuntimeError, ValueError, TypeError) as exc:
                    # A peer that cannot be built here (no torch model, no calibration data, a tool that
                    # refuses the graph) is reported, never silently dropped.
                    skipped.append(
                        PeerResult(name, precision, counts=False, note=f"not measured: {exc}"[:300])
                    )
                    continue
                _judge(side, checks)
                sides.append(side)
            _interleave(sides, _pool(art, batch, shapes or {}), objective, batch, blocks, block_s)
        finally:
            for s in sides:
                s.close()
    others = tuple(s.result for s in sides[1 : 1 + len(also)])
    peers = tuple(s.result for s in sides[1 + len(also) :]) + tuple(skipped)
    chosen = sides[0].result
    for r in (*others, *peers):
        r.chosen_ratio = chosen.ratio_to(r)
    counting = [r for r in peers if r.counts and r.chosen_ratio]
    best = min(counting, key=lambda r: r.chosen_ratio or math.inf, default=None)
    chosen_speed, best_speed = chosen.speed(objective), best.speed(objective) if best else None
    pooled = chosen_speed / best_speed if chosen_speed and best_speed else None
    return PeersReport(objective, batch, chosen, peers, best.chosen_ratio if best else None,
                       best.name if best else None, tuple(os.getloadavg()), others, pooled)  # fmt: skip


def _predictor_side(art: Artifact, label: str, c: Candidate, batch: int) -> _Side:
    if "+" in c.backend:  # routes by length (e.g. ``ort-cpu+openvino``): what a load at this precision opens
        p = Predictor.load(art, precision=c.precision)
    else:
        p = Predictor.load(art, backend=c.backend, variant=c.variant, **c.load_options())
    return _Side(
        PeerResult(label, c.precision), p.predict, _harness_offline(p.predict, batch, c.concurrency), p.close
    )


# ---------------------------------------------------------------------------------------------- measuring
def _pool(art: Artifact, batch: int, shapes: Mapping[str, tuple[int, ...]]) -> list[Feed]:
    from infership.bench import model_pool

    pool = model_pool(art.manifest, art.root, batch_size=batch, shapes=shapes, size=8)
    return [pool[i] for i in range(len(pool))]


def _harness_offline(predict: Callable[[Feed], Any], batch: int, callers: int) -> Callable[..., Any]:
    def run(pool: list[Feed], seconds: float) -> tuple[float, float]:
        from infership.bench import Scenario, StopRule
        from infership.bench.inputs import InputPool
        from infership.bench.scenarios import run_scenario

        m = run_scenario(
            Scenario.OFFLINE, predict, InputPool(tuple(pool), "random", {}, False), batch_size=batch,
            concurrency=callers, stop=StopRule(duration_s=seconds, max_duration_s=seconds, min_queries=3),
            warmup_queries=1,
        )  # fmt: skip
        return float(len(m.latencies_ms) * batch), float(m.wall_s)

    return run


def _interleave(
    sides: list[_Side], pool: list[Feed], objective: str, batch: int, blocks: int, block_s: float
) -> None:
    for side in sides:  # warm-up, and the calls that fill one block
        side.call(pool[0])
        ms = float(np.median(time_calls(lambda s=side: s.call(pool[0]), runs=5, warmup=2)))
        side.per_block = max(5, int(block_s * 1e3 / max(ms, 1e-3)))
    for r in range(blocks):
        for side in round_order(sides, r):
            if objective == "latency":
                it = iter(range(1 << 62))
                samples = time_calls(
                    lambda s=side, it=it: s.call(pool[next(it) % len(pool)]),
                    runs=side.per_block,
                    warmup=2,
                    rest_s=REST_S,
                )
                side.result.samples_ms.extend(samples)
                side.result.block_speeds.append(1.0 / max(float(np.median(samples)), 1e-9))
            else:
                time.sleep(REST_S)
                run = side.offline or _harness_offline(side.call, batch, 1)
                items, secs = run(pool, block_s)
                side.result.items += items
                side.result.seconds += secs
                side.result.block_speeds.append(items / secs if secs > 0 else 0.0)


def _judge(side: _Side, checks: AccuracyChecks) -> None:
    """The peer's loss on the held-out data with the task's judge; an int8 peer counts within the budget."""
    if checks.data is None:
        side.result.counts = side.result.precision == "fp32"
        side.result.note = "" if side.result.counts else "not judged: no held-out data"
        return
    ref, labels = checks.reference()
    names = [s.name for s in checks.art.manifest.outputs]
    outs = []
    for batch in checks.data.batches():
        out = side.call(batch.feeds)
        outs.append(dict(zip(names, out, strict=True)) if isinstance(out, (list, tuple)) else out)
    loss = judge_for(checks.art.manifest.task).compare(ref, outs, labels=labels).loss_points
    side.result.loss_points = None if loss is None else round(float(loss), 3)
    if side.result.precision != "fp32":
        side.result.counts = loss is not None and loss <= checks.budget
        if not side.result.counts:
            side.result.note = f"outside the accuracy budget ({loss} > {checks.budget} points)"


# ---------------------------------------------------------------------------------------------- peers
def _calibration(art: Artifact, calibration: str | None) -> Any:
    if calibration is None:
        return None
    from infership.convert.int8 import HOLDOUT_FRACTION

    cset = artifact_data(art, calibration)
    return cset.split(1.0 - HOLDOUT_FRACTION)[0].sample(CALIBRATION_SAMPLES)


def _need(value: Any, what: str) -> Any:
    if value is None:
        raise ValueError(what)
    return value


def _torch_module(art: Artifact, torch_model: Any) -> Any:
    if torch_model is not None:
        if isinstance(torch_model, str):
            from infership.convert import load_model_source

            return load_model_source(torch_model).model
        return torch_model.eval()
    v = art.manifest.find(formats=("torch-export",), precision="fp32")
    if v is None or not art.program_trusted(v):
        return None
    import torch

    art.verify(v)
    return torch.export.load(os.fspath(art.path_of(v.files[0]))).module()


def _torch_call(module: Any) -> Callable[[Feed], Any]:
    import torch

    def call(feed: Feed) -> Any:
        with torch.no_grad():
            out = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in feed.values()])
        return [o.numpy() for o in (out if isinstance(out, (list, tuple)) else (out,))]

    return call


def _torch_side(module: Any, name: str, precision: str) -> _Side:
    _need(module, "no torch model (give --torch-model, or an artifact with a torch.export variant)")
    return _Side(PeerResult(name, precision), _torch_call(module))


def _fx_side(module: Any, calib: Any) -> _Side:
    _need(module, "no torch model (give --torch-model)")
    _need(calib, "no calibration data (give --calibration)")
    import copy

    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    first = calib.first().feeds
    example = tuple(torch.from_numpy(a) for a in first.values())
    prepared = prepare_fx(copy.deepcopy(module).eval(), get_default_qconfig_mapping("x86"), example)
    with torch.no_grad():
        for feeds in calib:
            prepared(*[torch.from_numpy(a) for a in feeds.values()])
    return _Side(PeerResult("torch fx int8 (x86 defaults)", "int8"), _torch_call(convert_fx(prepared)))


def _fp32_onnx(art: Artifact) -> str:
    """The artifact's fp32 ONNX file, hash-checked (what the raw ONNX Runtime peers quantize)."""
    fp32 = _need(art.manifest.find(formats=("onnx",), precision="fp32"), "no fp32 ONNX variant")
    art.verify(fp32)
    return os.fspath(art.path_of(fp32.files[0]))


def _ort_side(art: Artifact, calib: Any, tmp: Path) -> _Side:
    _need(calib, "no calibration data (give --calibration)")
    import onnxruntime as ort
    from onnxruntime.quantization import quantize_static

    from infership.calibration import to_ort_reader

    out = tmp / "ort-int8.onnx"
    quantize_static(_fp32_onnx(art), os.fspath(out), to_ort_reader(calib))
    sess = ort.InferenceSession(os.fspath(out), providers=["CPUExecutionProvider"])
    return _Side(PeerResult(ORT_STATIC, "int8"), lambda f: sess.run(None, dict(f)))


def _ort_dynamic_side(art: Artifact, tmp: Path) -> _Side:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = tmp / "ort-int8-dynamic.onnx"
    quantize_dynamic(_fp32_onnx(art), os.fspath(out), per_channel=True, weight_type=QuantType.QInt8)
    sess = ort.InferenceSession(os.fspath(out), providers=["CPUExecutionProvider"])
    return _Side(PeerResult(ORT_DYNAMIC, "int8"), lambda f: sess.run(None, dict(f)))


def openvino_peer_config(art: Artifact) -> dict[str, str]:
    """OpenVINO's own defaults for the NNCF peer on the CPU, except where they are broken: on a CPU with AMX
    its default bf16 turned a text encoder's int8 into NaN and corrupted the heap
    (runtime/backends/openvino.py), so a model with variable-length inputs runs f32, as infership's backend
    runs it."""
    pinned = default_inference_precision("int8", art.manifest.inputs, "CPU")
    return {"INFERENCE_PRECISION_HINT": pinned} if pinned else {}


def _openvino_side(art: Artifact, calib: Any, objective: str, *, text: bool = False) -> _Side:
    _need(calib, "no calibration data (give --calibration)")
    import openvino as ov

    from infership.calibration import to_nncf_dataset
    from infership.convert.int8.openvino import import_nncf

    nncf, _ = import_nncf()  # keeps the application's NNCF log level (importing nncf resets it)

    m = art.manifest
    ir = m.find(formats=("openvino",), precision="fp32") or m.find(formats=("onnx",), precision="fp32")
    _need(ir, "no fp32 IR or ONNX variant")
    art.verify(ir)
    files = [art.path_of(f) for f in ir.files]
    core = ov.Core()
    model = core.read_model(os.fspath(next((f for f in files if f.suffix == ".xml"), files[0])))
    extra = {"model_type": nncf.ModelType.TRANSFORMER} if text else {}
    q = nncf.quantize(model, to_nncf_dataset(calib), **extra)
    config = openvino_peer_config(art)
    lat = core.compile_model(q, "CPU", config)
    req = lat.create_infer_request()
    result = PeerResult(OPENVINO_TEXT if text else OPENVINO, "int8")
    if objective == "latency":
        return _Side(result, lambda f: list(req.infer(dict(f)).values()))
    thr = core.compile_model(q, "CPU", {**config, "PERFORMANCE_HINT": "THROUGHPUT"})
    n = int(thr.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue = ov.AsyncInferQueue(thr, n)

    def offline(pool: list[Feed], seconds: float) -> tuple[float, float]:
        items = len(next(iter(pool[0].values())))
        done = [0]
        queue.set_callback(lambda *_: done.__setitem__(0, done[0] + 1))
        for i in range(n):  # warm
            queue.start_async(dict(pool[i % len(pool)]))
        queue.wait_all()
        done[0] = 0
        t0 = time.perf_counter()
        i = 0
        while time.perf_counter() - t0 < seconds:
            queue.start_async(dict(pool[i % len(pool)]))
            i += 1
        queue.wait_all()
        return float(done[0] * items), time.perf_counter() - t0

    return _Side(result, lambda f: list(req.infer(dict(f)).values()), offline=offline)
