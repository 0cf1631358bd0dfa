"""Find the layers int8 breaks, and repair a model by keeping the worst of them in float.

**Ranking.** For every activation the int8 model quantizes, the fp32 model's own activation (taken from the
fp32 ONNX graph with that tensor exposed as an output) is passed through the very quantizer the int8 model
uses — its scale and zero point (ONNX Runtime QDQ) or its FakeQuantize range (OpenVINO/NNCF) — and the
resulting noise is measured. Because the input is the fp32 activation, each figure is the error introduced
*at* that tensor, not the error accumulated from upstream layers, so the culprit stands out instead of
everything after it. The score is the mean per-channel SQNR: a tensor whose range is set by one outlier
channel crushes every other channel to a few levels while its total SQNR (dominated by the outlier) still
looks fine.

**Repair.** :func:`repair` excludes the nodes that quantize the worst tensor (its producer and consumers),
re-quantizes, re-validates, and repeats until the loss (:attr:`Agreement.loss_points
<infership.runtime.figures.Agreement.loss_points>`: the accuracy drop, or the top-1 disagreement without
labels) is within budget or a step limit is reached. Each step's figures and latency are reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from infership.calibration.dataset import CalibrationSet
from infership.runtime.errors import ConversionError
from infership.runtime.figures import Agreement, sqnr_db

from .types import Evaluation, LayerError, RepairResult, RepairStep

log = logging.getLogger(__name__)

#: The ranking clip: per-channel SQNR values (dB) are clipped to this range before they are averaged into a
#: layer's ranking score (``LayerError.channel_sqnr_db``), so that a perfectly represented channel cannot hide
#: a destroyed one. It shapes that score only; the whole-tensor figure (``LayerError.sqnr_db``, reported as
#: ``worst_layers[].sqnr_db``) is :func:`infership.runtime.figures.sqnr_db`, capped like every SQNR figure at
#: :data:`infership.runtime.figures.SQNR_CAP_DB`.
RANKING_SQNR_CLIP_DB = (-10.0, 60.0)

FakeQuant = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------------- quantizers
@dataclass(frozen=True)
class TensorQuantizer:
    """How an int8 model quantizes one activation: a fake-quantizer, and the ONNX nodes whose exclusion
    removes it (``None``: the tensor's producer and consumers in the ONNX graph)."""

    fake_quant: FakeQuant
    nodes: tuple[str, ...] | None = None


def ort_quantizers(qdq_path: Path) -> dict[str, TensorQuantizer]:
    """Tensor name → the quantizer a QDQ model applies to that activation (its scale and zero point).

    In QDQ format a tensor is quantized by its producer (output) and by its consumers (inputs), so
    excluding it means excluding its neighbours in the graph.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(qdq_path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    out: dict[str, TensorQuantizer] = {}
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits:
            continue
        scale = inits.get(node.input[1])
        zp = inits.get(node.input[2]) if len(node.input) > 2 else np.zeros((), np.uint8)
        if scale is None or zp is None or scale.size != 1:
            continue  # per-axis activation scales are not produced by the static quantizer
        info = np.iinfo(zp.dtype)
        fq = _affine(float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0]), info.min, info.max)
        out[node.input[0]] = TensorQuantizer(fq)
    return out


def _affine(scale: float, zero_point: int, qmin: int, qmax: int) -> FakeQuant:
    def fq(x: np.ndarray) -> np.ndarray:
        q = np.clip(np.rint(x / scale) + zero_point, qmin, qmax)
        return ((q - zero_point) * scale).astype(np.float32)

    return fq


#: OpenVINO ops NNCF moves quantizers across (they do not change values): the op that asked for a
#: FakeQuantize is the first op after the quantizer that is not one of these.
_QUANT_AGNOSTIC = frozenset(
    {
        "Reshape",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "MaxPool",
        "Concat",
        "Split",
        "VariadicSplit",
        "StridedSlice",
        "Slice",
        "Gather",
        "Pad",
        "DepthToSpace",
        "SpaceToDepth",
        "Convert",
    }
)


def openvino_quantizers(ov_model: Any, onnx_nodes: Sequence[str]) -> dict[str, TensorQuantizer]:
    """Tensor name (as in the ONNX model) → the FakeQuantize an NNCF model applies to that activation, with
    the ONNX nodes that asked for it (the ops it feeds, through value-preserving ops such as Reshape).

    Args:
        ov_model: The quantized OpenVINO model.
        onnx_nodes: Node names of the fp32 ONNX model it was made from.
    """
    out: dict[str, TensorQuantizer] = {}
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        src = op.input(0).get_source_output()
        if src.get_node().get_type_name() == "Constant":
            continue  # a weight
        src, smooth = _smoothed_source(src)
        names = sorted(src.get_names())
        if not names:
            continue
        consts = []
        for i in range(1, 5):
            node = op.input(i).get_source_output().get_node()
            if node.get_type_name() != "Constant":
                break
            consts.append(np.asarray(node.get_data(), dtype=np.float32))
        if len(consts) != 4:
            continue
        levels = int(op.get_attributes()["levels"])
        requesters = []
        for consumer in _requesting_ops(op):
            onnx_name = _onnx_node_for_op(consumer, onnx_nodes)
            if onnx_name is not None and onnx_name not in requesters:
                requesters.append(onnx_name)
        fq = _fake_quantize(*consts, levels)
        if smooth is not None:
            fq = _rescaled(fq, smooth)
        out[names[0]] = TensorQuantizer(fq, tuple(requesters))
    return out


def _smoothed_source(src: Any) -> tuple[Any, np.ndarray | None]:
    """SmoothQuant (NNCF's transformer model type) puts ``Multiply(x, scale)`` between an activation and its
    FakeQuantize: the activation is ``x``, and the quantizer sees ``x * scale``."""
    node = src.get_node()
    if node.get_type_name() != "Multiply":
        return src, None
    for i, j in ((0, 1), (1, 0)):
        scale = node.input(j).get_source_output().get_node()
        if scale.get_type_name() == "Constant" and not src.get_names():
            return node.input(i).get_source_output(), np.asarray(scale.get_data(), dtype=np.float32)
    return src, None


def _rescaled(fq: FakeQuant, scale: np.ndarray) -> FakeQuant:
    """The error ``fq`` makes on ``x * scale``, expressed on ``x``."""
    safe = np.where(scale == 0, 1.0, scale)

    def smoothed(x: np.ndarray) -> np.ndarray:
        return (fq(x * scale) / safe).astype(np.float32)

    return smoothed


def _requesting_ops(fq: Any) -> list[str]:
    """Friendly names of the ops downstream of ``fq`` up to and including the first non-agnostic ones."""
    names: list[str] = []
    frontier = [t.get_node() for out in fq.outputs() for t in out.get_target_inputs()]
    seen: set[str] = set()
    while frontier:
        node = frontier.pop()
        name = node.get_friendly_name()
        if name in seen:
            continue
        seen.add(name)
        names.append(name)
        if node.get_type_name() in _QUANT_AGNOSTIC:
            frontier.extend(t.get_node() for out in node.outputs() for t in out.get_target_inputs())
    return names


def _onnx_node_for_op(op_name: str, onnx_nodes: Sequence[str]) -> str | None:
    best = None
    for node in onnx_nodes:
        if (op_name == node or op_name.startswith(node + "/")) and (best is None or len(node) > len(best)):
            best = node
    return best


def _fake_quantize(il: np.ndarray, ih: np.ndarray, ol: np.ndarray, oh: np.ndarray, levels: int) -> FakeQuant:
    def fq(x: np.ndarray) -> np.ndarray:
        span = np.where(ih - il == 0, 1.0, ih - il)
        q = np.rint((np.clip(x, il, ih) - il) / span * (levels - 1))
        return (q / (levels - 1) * (oh - ol) + ol).astype(np.float32)

    return fq


# ---------------------------------------------------------------------------------------------- ranking
def tensor_nodes(onnx_path: Path) -> dict[str, tuple[str, ...]]:
    """Tensor name → names of the nodes producing or consuming it in an ONNX graph."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    out: dict[str, list[str]] = {}
    for node in graph.node:
        for t in [*node.input, *node.output]:
            if t and node.name not in out.setdefault(t, []):
                out[t].append(node.name)
    return {k: tuple(v) for k, v in out.items()}


def session_exposing(model: Any, tensors: Sequence[str], name: str) -> Any:
    """An ONNX Runtime CPU session of ``model`` (an ``onnx.ModelProto``, changed in place) with ``tensors``
    added as outputs and no graph optimisation, so that every tensor is kept.

    Raises:
        ConversionError: ONNX Runtime cannot run the model so (``name`` says which model).
    """
    import onnx
    import onnxruntime as ort

    existing = {o.name for o in model.graph.output}
    for t in tensors:
        if t not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=t))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    try:
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own native types
        raise ConversionError(f"cannot run {name} with intermediate outputs: {exc}") from exc


def rank_layers(
    fp32_onnx: Path,
    quantizers: Mapping[str, TensorQuantizer],
    cset: CalibrationSet,
    *,
    quantizable_nodes: Callable[[str], bool] | None = None,
) -> list[LayerError]:
    """Rank the quantized activations of a model by the error their quantizer introduces, worst first.

    Args:
        fp32_onnx: The fp32 ONNX model whose tensor names ``quantizers`` uses.
        quantizers: Tensor name → quantizer (:func:`ort_quantizers`, :func:`openvino_quantizers`).
        cset: Inputs to measure on (bound to the model); a few dozen samples suffice.
        quantizable_nodes: Filter for the nodes reported with each tensor (default: all).

    Returns:
        One :class:`LayerError` per tensor found in the fp32 graph, lowest ``channel_sqnr_db`` first.

    Raises:
        ConversionError: The fp32 model cannot be run with the tensors exposed.
    """
    import onnx

    model = onnx.load(str(fp32_onnx))
    graph_inputs = {i.name for i in model.graph.input}
    produced = {o for n in model.graph.node for o in n.output}
    tensors = [t for t in quantizers if t in produced or t in graph_inputs]
    fetch = [t for t in tensors if t in produced]
    sess = session_exposing(model, fetch, fp32_onnx.name)
    signal: dict[str, np.ndarray] = {}
    noise: dict[str, np.ndarray] = {}
    for feeds in cset:
        values = dict(zip(fetch, sess.run(fetch, feeds), strict=True))
        values.update({t: feeds[t] for t in tensors if t in graph_inputs})
        for t in tensors:
            x = np.asarray(values[t], dtype=np.float32)
            err = x - quantizers[t].fake_quant(x)
            channel = _channel_axis(x.ndim)
            axes = tuple(i for i in range(x.ndim) if i != channel) if x.ndim >= 2 else (0,)
            sig = np.sum(x.astype(np.float64) ** 2, axis=axes)
            noi = np.sum(err.astype(np.float64) ** 2, axis=axes)
            if t in signal and np.shape(signal[t]) != sig.shape:  # a channel axis that varies: totals only
                sig, noi = np.atleast_1d(sig.sum()), np.atleast_1d(noi.sum())
                signal[t], noise[t] = np.atleast_1d(np.sum(signal[t])), np.atleast_1d(np.sum(noise[t]))
            signal[t] = signal.get(t, 0.0) + sig
            noise[t] = noise.get(t, 0.0) + noi
    owners = tensor_nodes(fp32_onnx)
    out = []
    for t in tensors:
        nodes = quantizers[t].nodes if quantizers[t].nodes is not None else owners.get(t, ())
        if quantizable_nodes is not None:
            nodes = tuple(n for n in nodes if quantizable_nodes(n))
        out.append(
            LayerError(
                t,
                nodes,
                _channel_sqnr(signal[t], noise[t]),
                sqnr_db(float(signal[t].sum()), float(noise[t].sum())),
            )
        )
    out.sort(key=lambda e: e.channel_sqnr_db)
    return out


def _channel_axis(ndim: int) -> int:
    """The channel axis of an activation: axis 1 for images and attention maps (``[batch, channels or
    heads, ...]``), the last axis for token tensors (``[batch, sequence, hidden]``, whose axis 1 varies)."""
    return 1 if ndim >= 4 else ndim - 1


def _channel_sqnr(signal: np.ndarray, noise: np.ndarray) -> float:
    live = signal > 0
    if not np.any(live):
        return RANKING_SQNR_CLIP_DB[1]
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(signal[live] / np.maximum(noise[live], 1e-30))
    return float(np.mean(np.clip(db, *RANKING_SQNR_CLIP_DB)))


# ---------------------------------------------------------------------------------------------- repair
def repair(
    *,
    requantize: Callable[[tuple[str, ...]], Any],
    evaluate: Callable[[Any], Evaluation],
    rank: Callable[[Any], Sequence[LayerError]],
    budget: float | None,
    max_steps: int = 5,
    initial: Any = None,
    initial_evaluation: Evaluation | None = None,
    initial_exclusions: tuple[str, ...] = (),
) -> tuple[Any, RepairResult]:
    """Exclude the worst layers one at a time until the accuracy drop is within ``budget``.

    Args:
        requantize: Builds an int8 model leaving the given ONNX nodes in float; returns a handle that
            ``evaluate`` and ``rank`` accept.
        evaluate: Measures a model on held-out data.
        rank: Ranks a model's quantized tensors, worst first (computed once, on the first model, and only
            when it misses the budget).
        budget: Allowed loss in points (:attr:`Agreement.loss_points`); ``None`` only ranks and evaluates.
        max_steps: Most exclusion steps.
        initial: An already built model for ``initial_exclusions`` (saves one quantization).
        initial_evaluation: ``initial``'s evaluation, when the caller already made it (saves one evaluation).
        initial_exclusions: Nodes the caller already excludes.

    Returns:
        The last model built and the :class:`RepairResult`.

    Raises:
        ConversionError: The evaluation gives no loss figure to compare with the budget.
    """
    model = initial if initial is not None else requantize(initial_exclusions)
    first = initial_evaluation if initial is not None and initial_evaluation is not None else evaluate(model)
    steps = [RepairStep(0, initial_exclusions, None, None, first.metrics, first.latency_ms)]
    ranking: tuple[LayerError, ...] = ()
    excluded = tuple(initial_exclusions)

    def ok(metrics: Agreement) -> bool:
        if budget is None:
            return True
        loss = metrics.loss_points
        if loss is None:
            raise ConversionError("the accuracy budget needs labels or class scores to measure a loss")
        return loss <= budget

    stopped = "within budget"
    if not ok(first.metrics):
        ranking = tuple(rank(model))  # only when needed: it runs the fp32 model with every tensor exposed
        candidates = [e for e in ranking if e.nodes and not set(e.nodes) <= set(excluded)]
        while True:
            if len(steps) > max_steps:
                stopped = f"step limit ({max_steps}) reached"
                break
            if not candidates:
                stopped = "no quantized layer left to exclude"
                break
            worst = candidates.pop(0)
            new = tuple(n for n in worst.nodes if n not in excluded)
            excluded = excluded + new
            start = time.perf_counter()
            model = requantize(excluded)
            ev = evaluate(model)
            log.info(
                "repair step %d: excluded %s (tensor %s, %.1f dB) → loss %s points in %.1f s",
                len(steps),
                new,
                worst.tensor,
                worst.channel_sqnr_db,
                ev.metrics.loss_points,
                time.perf_counter() - start,
            )
            steps.append(
                RepairStep(len(steps), new, worst.tensor, worst.channel_sqnr_db, ev.metrics, ev.latency_ms)
            )
            candidates = [e for e in candidates if not set(e.nodes) <= set(excluded)]
            if ok(ev.metrics):
                break
    within = ok(steps[-1].metrics)
    if budget is None:
        stopped = "no budget given"
    return model, RepairResult(tuple(steps), excluded, within, ranking, stopped)
