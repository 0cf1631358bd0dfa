"""Smoothing for per-tensor dynamic int8 (SmoothQuant's migration, one strength per node, chosen by measurement).

ONNX Runtime's fastest dynamic int8 kernel (``DynamicQuantizeMatMul``, and ``QAttention``) quantizes each
activation tensor with one uint8 scale, taken from the tensor's own min and max at every call. On a
transformer encoder a few channels of the hidden states carry values 10-100× the others, so that one scale
leaves the other channels a handful of levels. Smoothing (Xiao et al., SmoothQuant, 2023) divides each input
channel ``j`` of a weight MatMul by ``s_j`` and multiplies row ``j`` of its weight by the same ``s_j``: the
product is unchanged in exact arithmetic, the activation's outlier channels shrink, and the weight (quantized
per output channel) takes part of the range.

``s_j = max|X_j|^α / max|W_j|^(1-α)``. Rather than one strength ``α`` for the whole model, each node gets the
``α`` (from a grid of 0 to 1) that maximises its own output SQNR under the kernel's quantizers: per-column
symmetric int8 weights, one asymmetric uint8 scale per activation tensor. The activations are measured on
calibration batches **in a shuffled order, padded to each batch's longest text**: the dynamic scale spans the
whole batch a caller sends, padding rows included, and strengths chosen on single texts fail on mixed batches
(measured on a sentence encoder: nearest-neighbour agreement 0.98 at batch 1 but 0.87 at batch 16, against
0.97 at both with batches). A node keeps ``α = 0`` (no change) unless smoothing gains ``min_gain_db``.

Where the scaling goes: the attention output projection's input is the attention context, linear in V, so
its ``1/s`` folds into the V columns (and bias) of the fused ``Attention`` node that produces it — free. Any
other input gets a ``Mul`` by ``1/s`` in front of its node (about 1-2 µs a call on a CPU).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
from infership.runtime.manifest import Step

from .transformer import tensor_fake_quant

#: Strengths tried for each node.
ALPHAS = tuple(round(a, 2) for a in np.linspace(0.0, 1.0, 21))
#: Rows of each calibration batch kept per node for the error measurement (the batch's min/max is kept whole).
ROWS_PER_BATCH = 64


def smooth_for_dynamic_int8(
    src: Path,
    dst: Path,
    cset: Any,
    *,
    attention: bool = True,
    batch_size: int = 16,
    min_gain_db: float = 1.0,
    exclude_nodes: tuple[str, ...] = (),
    seed: int = 0,
) -> Step:
    """Write ``src`` smoothed for per-tensor dynamic int8 to ``dst`` (the same function in fp32).

    Args:
        src: An fp32 ONNX graph (best: with ONNX Runtime's transformer fusions).
        dst: Where the smoothed graph goes.
        cset: A bound :class:`~infership.calibration.CalibrationSet`; its samples are shuffled and batched
            by ``batch_size`` (each batch padded to its longest text, as the Predictor pads).
        attention: Smooth the inputs of fused ``Attention`` nodes too (they become ``QAttention``).
        batch_size: Samples per calibration batch.
        min_gain_db: A node is left unchanged unless smoothing raises its output SQNR by this much.
        exclude_nodes: Nodes left unchanged (they stay in float).
        seed: Seed of the shuffle.

    Returns:
        A step recording, per node, the strength chosen, the output SQNR before and after, and where the
        scaling went (``fold`` into the attention's V, ``mul``, or ``none``).

    Raises:
        ConversionError: The graph cannot be run with its MatMul inputs exposed.
    """
    import onnx
    from onnx import helper, numpy_helper

    start = time.perf_counter()
    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    targets = [n for n in graph.node if _smoothable(n, inits, attention) and n.name not in exclude_nodes]
    if not targets:
        onnx.save(model, str(dst))
        return Step("smooth", params={"batch_size": batch_size}, result={"nodes": {}}, seconds=0.0)
    batches = cset.shuffled(seed=seed).with_batch_size(batch_size).with_progress(None)
    stats = _activation_stats(src, sorted({n.input[0] for n in targets}), batches)
    producer = {o: n for n in graph.node for o in n.output}
    report: dict[str, dict[str, Any]] = {}
    inserts: list[tuple[Any, Any]] = []
    for node in targets:
        weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        alpha, db0, db, s = _best_alpha(stats[node.input[0]], weight)
        entry = {"alpha": alpha, "sqnr_db_before": round(db0, 2), "sqnr_db": round(db, 2), "scaling": "none"}
        report[node.name] = entry
        if alpha == 0.0 or db - db0 < min_gain_db:
            entry.update(alpha=0.0, sqnr_db=round(db0, 2))
            continue
        inv = (1.0 / s).astype(np.float32)
        att = producer.get(node.input[0])
        if att is not None and _foldable(att, inits, uses, s.size):
            w_qkv = numpy_helper.to_array(inits[att.input[1]]).astype(np.float32).copy()
            b_qkv = numpy_helper.to_array(inits[att.input[2]]).astype(np.float32).copy()
            w_qkv[:, 2 * s.size :] *= inv[None, :]
            b_qkv[2 * s.size :] *= inv
            inits[att.input[1]].CopyFrom(numpy_helper.from_array(w_qkv, att.input[1]))
            inits[att.input[2]].CopyFrom(numpy_helper.from_array(b_qkv, att.input[2]))
            entry["scaling"] = "fold"
        else:
            inv_name = _unique(f"{node.name}/smooth_inv", inits)
            out_name = f"{node.name}/smoothed_input"
            graph.initializer.append(numpy_helper.from_array(inv, inv_name))
            inits[inv_name] = graph.initializer[-1]
            inserts.append(
                (
                    node,
                    helper.make_node(
                        "Mul", [node.input[0], inv_name], [out_name], name=f"{node.name}/smooth"
                    ),
                )
            )
            node.input[0] = out_name
            entry["scaling"] = "mul"
        scaled = (weight * s[:, None]).astype(np.float32)
        if uses.get(node.input[1], 0) > 1:  # a weight shared with another node gets a copy of its own
            new = _unique(f"{node.input[1]}/smoothed", inits)
            graph.initializer.append(numpy_helper.from_array(scaled, new))
            inits[new] = graph.initializer[-1]
            node.input[1] = new
        else:
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(scaled, node.input[1]))
    for node, mul in inserts:
        graph.node.insert(list(graph.node).index(node), mul)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    changed = [n for n, e in report.items() if e["scaling"] != "none"]
    return Step(
        "smooth",
        params={
            "batch_size": batch_size,
            "min_gain_db": min_gain_db,
            "alphas": [ALPHAS[0], ALPHAS[-1], len(ALPHAS)],
        },
        result={
            "smoothed": len(changed),
            "mul_nodes": sum(e["scaling"] == "mul" for e in report.values()),
            "folded": sum(e["scaling"] == "fold" for e in report.values()),
            "nodes": report,
        },
        seconds=round(time.perf_counter() - start, 3),
    )


def _smoothable(node: Any, inits: dict[str, Any], attention: bool) -> bool:
    if node.op_type == "MatMul" or (
        attention and node.op_type == "Attention" and node.domain == "com.microsoft"
    ):
        if len(node.input) > 1 and node.input[0] and node.input[1] in inits:
            return len(inits[node.input[1]].dims) == 2
    return False


def _foldable(att: Any, inits: dict[str, Any], uses: dict[str, int], width: int) -> bool:
    """``att`` is a fused ``Attention`` whose only output feeds this node and whose packed Q/K/V weight and
    bias (each used by it alone) have ``width`` V columns."""
    if (
        att.op_type != "Attention"
        or len(att.input) < 3
        or att.input[1] not in inits
        or att.input[2] not in inits
    ):
        return False
    if (
        any(a.name == "qkv_hidden_sizes" for a in att.attribute)
        or len(att.output) > 1
        and any(att.output[1:])
    ):
        return False
    if uses.get(att.output[0], 0) != 1 or uses.get(att.input[1], 0) != 1 or uses.get(att.input[2], 0) != 1:
        return False
    dims = tuple(inits[att.input[1]].dims)
    return len(dims) == 2 and dims[1] == 3 * width and tuple(inits[att.input[2]].dims) == (3 * width,)


def _unique(name: str, taken: dict[str, Any]) -> str:
    out, i = name, 1
    while out in taken:
        out, i = f"{name}_{i}", i + 1
    return out


@dataclasses.dataclass
class _Stats:
    """Per input channel: |max| over all batches; per batch: channel min and max, and sampled rows."""

    absmax: np.ndarray
    lows: list[np.ndarray]
    highs: list[np.ndarray]
    rows: list[np.ndarray]


def _activation_stats(src: Path, tensors: list[str], cset: Any) -> dict[str, _Stats]:
    import onnx

    from .repair import session_exposing

    sess = session_exposing(onnx.load(str(src)), tensors, src.name)
    names = {i.name for i in sess.get_inputs()}
    rng = np.random.default_rng(0)
    stats: dict[str, _Stats] = {}
    for feeds in cset:
        values = sess.run(tensors, {k: v for k, v in feeds.items() if k in names})
        for t, v in zip(tensors, values, strict=True):
            x = np.asarray(v, dtype=np.float32).reshape(-1, np.shape(v)[-1])
            rows = x[rng.choice(len(x), size=min(ROWS_PER_BATCH, len(x)), replace=False)]
            st = stats.get(t)
            if st is None:
                st = stats[t] = _Stats(np.zeros(x.shape[1], np.float32), [], [], [])
            st.absmax = np.maximum(st.absmax, np.abs(x).max(0))
            st.lows.append(x.min(0))
            st.highs.append(x.max(0))
            st.rows.append(rows)
    return stats


def _best_alpha(st: _Stats, weight: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """The strength with the best output SQNR: (alpha, SQNR without smoothing, SQNR with it, scales)."""
    x_max = np.maximum(st.absmax, 1e-5)
    w_max = np.maximum(np.abs(weight).max(1), 1e-5)
    refs = [r @ weight for r in st.rows]
    signal = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in refs) or 1.0
    best: tuple[float, float, np.ndarray] | None = None
    base = 0.0
    for alpha in ALPHAS:
        s = np.ones_like(x_max) if alpha == 0 else np.clip(x_max**alpha / w_max ** (1 - alpha), 1e-4, 1e4)
        wq = _weight_fake_quant(weight * s[:, None])
        noise = 0.0
        for rows, lo, hi, ref in zip(st.rows, st.lows, st.highs, refs, strict=True):
            xq = tensor_fake_quant(rows / s, float(np.min(lo / s)), float(np.max(hi / s)))
            noise += float(np.sum((xq @ wq - ref).astype(np.float64) ** 2))
        db = 10.0 * np.log10(signal / max(noise, 1e-30))
        if alpha == 0:
            base = db
        if best is None or db > best[1]:
            best = (alpha, db, s.astype(np.float32))
    assert best is not None
    return best[0], base, best[1], best[2]


def _weight_fake_quant(w: np.ndarray) -> np.ndarray:
    scale = np.abs(w).max(0, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    return np.clip(np.rint(w / scale), -127, 127) * scale
