"""fp16 ONNX graphs for GPUs, with the precision written into the graph itself.

TensorRT 11 removed the builder's fp16/int8 switches: it builds what the ONNX graph says (a "strongly typed"
network). ONNX Runtime's CUDA provider does the same. So the fp16 variant is a graph whose weights and
arithmetic are fp16, with:

- fp32 inputs and outputs (a Cast at each boundary), so callers feed and read the same arrays as for fp32;
- numerically sensitive operators kept in fp32 (reductions, exponentials, normalizations, resampling), with
  Casts around them, because fp16 there overflows or loses too much (onnxruntime#11384,
  onnxconverter-common#323, #208).

The conversion uses ``onnxconverter_common.float16.convert_float_to_float16``. Values outside the fp16 range
are clamped by it (tiny magnitudes to ±1e-7, large ones to ±1e4); how many times (per tensor and sign)
is recorded in the step.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infership.runtime import ConversionError, Step

log = logging.getLogger(__name__)

FP16_BLOCK_LIST: tuple[str, ...] = (
    # reductions and normalizations: sums of many fp16 values overflow or lose precision
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "ReduceLogSumExp",
    "ReduceProd",
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "LpNormalization",
    # exponentials and powers
    "Softmax",
    "LogSoftmax",
    "Exp",
    "Log",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Erf",
    # resampling and index/range arithmetic
    "Resize",
    "Upsample",
    "Range",
    "CumSum",
    "TopK",
    "NonMaxSuppression",
    "RoiAlign",
    "RandomNormalLike",
    "RandomUniformLike",
)
"""Operators kept in fp32 by default, on top of onnxconverter-common's own block list."""


def convert_fp16(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    block_list: Sequence[str] | None = None,
) -> Step:
    """Write an fp16 copy of an fp32 ONNX model.

    Args:
        src: The fp32 model.
        dst: Where to write the fp16 model.
        block_list: Operator types kept in fp32; ``None`` uses :data:`FP16_BLOCK_LIST`.

    Returns:
        The ``fp16`` step: block list, node counts, Casts added, fp32 nodes left, clamped values.

    Raises:
        ConversionError: onnxconverter-common is missing or failed, or the result is not a valid model.
    """
    import onnx

    t0 = time.perf_counter()
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise ConversionError(
            "fp16 conversion needs onnxconverter-common: pip install 'infership[convert]'"
        ) from exc
    blocked = tuple(block_list) if block_list is not None else FP16_BLOCK_LIST
    model = onnx.load(os.fspath(src))
    before = Counter(n.op_type for n in model.graph.node)
    # Typed value_info from the exporter makes the converter retype blocked nodes' outputs to fp16, giving
    # graphs ORT refuses ("Type (tensor(float)) of output arg ... does not match"); types are re-inferred.
    del model.graph.value_info[:]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            half = float16.convert_float_to_float16(
                model,
                keep_io_types=True,  # the manifest's I/O specs are shared by all variants
                op_block_list=sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(blocked)),
            )
        restored = _restore_io_types(model, half)
        onnx.checker.check_model(half, full_check=True)
    except Exception as exc:  # onnxconverter-common and the onnx checker raise many types: translated below
        raise ConversionError(
            f"fp16 conversion failed: {type(exc).__name__}: {str(exc).strip()[:300]}"
        ) from exc
    tiny, large = _clamp_counts(str(w.message) for w in caught)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(half, os.fspath(dst))
    after = Counter(n.op_type for n in half.graph.node)
    kept_fp32 = {op: n for op, n in before.items() if op in blocked or op in float16.DEFAULT_OP_BLOCK_LIST}
    result: dict[str, Any] = {
        "nodes_before": sum(before.values()),
        "nodes_after": sum(after.values()),
        "casts_added": after.get("Cast", 0) - before.get("Cast", 0),
        "fp32_ops": kept_fp32,
        "tiny_value_clamps": tiny,
        "large_value_clamps": large,
        "io_types": "fp32",
    }
    if restored:
        result["io_types_restored"] = restored
    if large:
        log.warning("fp16: values beyond ±1e4 were clamped to ±1e4 in %d place(s)", large)
    # The default list is long; name it instead of repeating it in every manifest (versions are recorded).
    listed: str | list[str] = "infership default" if block_list is None else list(blocked)
    params = {"tool": "onnxconverter-common", "keep_io_types": True, "block_list": listed}
    return Step("fp16", params, result, round(time.perf_counter() - t0, 3))


def _clamp_counts(messages: Any) -> tuple[int, int]:
    """Tensors whose tiny (< 1e-7) or large (> 1e4) values the converter clamped, from its warnings."""
    tiny = large = 0
    for text in messages:
        if "will be truncated to" not in text:
            continue
        try:
            target = abs(float(text.rsplit(" ", 1)[-1]))
        except ValueError:
            continue
        if target < 1.0:
            tiny += 1
        else:
            large += 1
    return tiny, large


def _restore_io_types(original: Any, half: Any) -> list[str]:
    """Give graph outputs back their original element type where the converter changed it.

    onnxconverter-common turns a graph output fp16 when a block-listed op produces it, despite
    ``keep_io_types`` (its Cast back to fp16 is the output). That Cast is retargeted to the original type,
    or a Cast is appended. Returns the names of the outputs fixed.
    """
    from onnx import helper

    want = {o.name: o.type.tensor_type.elem_type for o in original.graph.output}
    producers = {out: node for node in half.graph.node for out in node.output}
    fixed = []
    for out in half.graph.output:
        target = want.get(out.name)
        if target is None or out.type.tensor_type.elem_type == target:
            continue
        node = producers.get(out.name)
        if node is not None and node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to":
                    attr.i = target
        else:
            inner = f"{out.name}_fp16"
            if node is not None:
                node.output[list(node.output).index(out.name)] = inner
            half.graph.node.append(
                helper.make_node("Cast", [inner], [out.name], to=target, name=f"{out.name}_io_cast")
            )
        out.type.tensor_type.elem_type = target
        fixed.append(out.name)
    return fixed
