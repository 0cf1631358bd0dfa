"""Static int8 for ONNX Runtime: QDQ format, calibrated with MinMax, Entropy or Percentile.

ONNX Runtime's ``quantize_static`` forwards only some ``Calib*`` keys of ``extra_options`` to the
calibrator it builds (``CalibNumBins`` and ``CalibNumQuantizedBins`` are silently dropped in 1.31, and
other versions dropped ``CalibPercentile``). So this module builds the calibrator itself with
``create_calibrator``, reads the settings back from the calibrator object (and refuses to go on if any
differs), collects statistics in bounded chunks, and hands the computed ranges to ``quantize_static``
through its calibration cache. The quantized graph is then inspected to check that the quantizer options
took effect too (activation/weight types, symmetry, per-channel scales, excluded nodes).
"""

from __future__ import annotations

import contextlib
import enum
import io
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from infership.calibration.dataset import CalibrationSet
from infership.runtime.atomic import scratch_dir
from infership.runtime.errors import ConversionError, InvalidInputError
from infership.runtime.manifest import Step

from .types import choice

log = logging.getLogger(__name__)


class CalibrationMethod(str, enum.Enum):
    """How activation ranges are derived from the calibration data."""

    MINMAX = "minmax"
    """Observed minimum and maximum: cheap, but one outlier widens the range for everyone."""
    ENTROPY = "entropy"
    """The range that minimises the KL divergence between fp32 and int8 histograms (TensorRT's method)."""
    PERCENTILE = "percentile"
    """Clip to a percentile of the absolute values (``percentile``, default 99.999)."""


class IntType(str, enum.Enum):
    """8-bit integer type of activations or weights."""

    INT8 = "int8"
    UINT8 = "uint8"


@dataclass(frozen=True, kw_only=True)
class OrtQuantConfig:
    """Options of a static int8 quantization for ONNX Runtime (QDQ format).

    Start from a preset (:meth:`cpu_vnni`, :meth:`cpu_avx2`, :meth:`tensorrt`) and change fields with
    :func:`dataclasses.replace` or :meth:`excluding`.

    Args:
        method: Calibration method.
        activation_type: Activation integer type. ``uint8`` with ``int8`` weights (U8S8) is the fast CPU
            combination on VNNI/AMX; ``int8`` activations (S8S8) are what TensorRT wants.
        weight_type: Weight integer type.
        per_channel: One scale per output channel for weights (recommended for CNNs).
        reduce_range: 7-bit weights, for CPUs without VNNI where U8S8 products can saturate (AVX2/AVX-512).
        symmetric_activations: Zero point fixed at the middle of the type (calibrated ranges symmetric too).
        symmetric_weights: Zero point 0 for weights.
        percentile: Percentile kept by :attr:`CalibrationMethod.PERCENTILE`.
        num_bins: Histogram bins (Entropy/Percentile); ``None`` uses ONNX Runtime's default for the method
            (128 for Entropy, 2048 for Percentile).
        num_quantized_bins: Target bins for Entropy's KL search.
        moving_average: MinMax only: exponential moving average of per-batch ranges instead of global ones.
        averaging_constant: MinMax moving-average constant.
        exclude_nodes: ONNX node names left in float (names of the pre-processed graph; see the report).
        exclude_op_types: ONNX op types left in float (e.g. ``("Softmax",)``).
        op_types: Quantize only these op types (``None``: every type ONNX Runtime can quantize).
        chunk_batches: Batches fed to the calibrator per ``collect_data`` call (bounds memory).
        target: The backend the variant is tuned for (recorded in the manifest).
        preset: Name of the preset this config came from (recorded).
    """

    method: CalibrationMethod = CalibrationMethod.MINMAX
    activation_type: IntType = IntType.UINT8
    weight_type: IntType = IntType.INT8
    per_channel: bool = True
    reduce_range: bool = False
    symmetric_activations: bool = False
    symmetric_weights: bool = True
    percentile: float = 99.999
    num_bins: int | None = None
    num_quantized_bins: int = 128
    moving_average: bool = False
    averaging_constant: float = 0.01
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    op_types: tuple[str, ...] | None = None
    chunk_batches: int = 8
    target: str = "ort-cpu"
    preset: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", choice(CalibrationMethod, self.method, "calibration method"))
        object.__setattr__(self, "activation_type", choice(IntType, self.activation_type, "activation_type"))
        object.__setattr__(self, "weight_type", choice(IntType, self.weight_type, "weight_type"))
        object.__setattr__(self, "exclude_nodes", tuple(self.exclude_nodes))
        object.__setattr__(self, "exclude_op_types", tuple(self.exclude_op_types))
        if self.op_types is not None:
            object.__setattr__(self, "op_types", tuple(self.op_types))
        if not 0.0 < self.percentile <= 100.0:
            raise InvalidInputError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.num_bins is not None and self.num_bins < 2:
            raise InvalidInputError(f"num_bins must be >= 2, got {self.num_bins}")
        if self.method is CalibrationMethod.ENTROPY and (self.num_bins or 128) < self.num_quantized_bins:
            # ORT fails deep inside its KL search ("negative dimensions are not allowed") otherwise
            raise InvalidInputError(
                f"entropy calibration needs num_bins >= num_quantized_bins, got {self.num_bins or 128} < "
                f"{self.num_quantized_bins}"
            )
        if self.chunk_batches < 1:
            raise InvalidInputError(f"chunk_batches must be >= 1, got {self.chunk_batches}")

    # ------------------------------------------------------------------ presets
    @classmethod
    def cpu_vnni(cls, **changes: Any) -> OrtQuantConfig:
        """x86 CPUs with VNNI or AMX: U8S8, per-channel symmetric weights, asymmetric activations."""
        return cls(**{"preset": "cpu_vnni", **changes})

    @classmethod
    def cpu_avx2(cls, **changes: Any) -> OrtQuantConfig:
        """x86 CPUs without VNNI: U8S8 with 7-bit weights (``reduce_range``) so products cannot saturate."""
        return cls(**{"preset": "cpu_avx2", "reduce_range": True, **changes})

    @classmethod
    def tensorrt(cls, **changes: Any) -> OrtQuantConfig:
        """TensorRT (through ONNX Runtime's TensorRT provider): S8S8, symmetric activations and weights."""
        base = {
            "preset": "tensorrt",
            "activation_type": IntType.INT8,
            "symmetric_activations": True,
            "target": "ort-trt",
        }
        return cls(**{**base, **changes})

    @classmethod
    def transformer(cls, **changes: Any) -> OrtQuantConfig:
        """Transformer encoders: only MatMuls quantized (LayerNorm, Softmax, GELU, residual Adds and the
        embeddings stay float), per-channel symmetric weights, U8 activations with MinMax ranges (the
        histogram calibrators cannot collect tensors whose sequence length varies between batches). The
        FFN output projections, fed by the GELU's outlier-heavy output, are what the repair loop usually
        keeps in float."""
        return cls(**{"preset": "transformer", "op_types": ("MatMul",), **changes})

    def excluding(self, *, nodes: tuple[str, ...] = (), op_types: tuple[str, ...] = ()) -> OrtQuantConfig:
        """A copy that also leaves ``nodes`` and ``op_types`` in float."""
        new_nodes = self.exclude_nodes + tuple(n for n in nodes if n not in self.exclude_nodes)
        new_types = self.exclude_op_types + tuple(t for t in op_types if t not in self.exclude_op_types)
        return replace(self, exclude_nodes=new_nodes, exclude_op_types=new_types)

    def calibrator_options(self) -> dict[str, Any]:
        """The ``extra_options`` of ``create_calibrator`` for this config (every key it reads)."""
        if self.method is CalibrationMethod.MINMAX:
            return {
                "symmetric": self.symmetric_activations,
                "moving_average": self.moving_average,
                "averaging_constant": self.averaging_constant,
            }
        opts: dict[str, Any] = {"symmetric": self.symmetric_activations}
        if self.num_bins is not None:
            opts["num_bins"] = self.num_bins
        if self.method is CalibrationMethod.ENTROPY:
            opts["num_quantized_bins"] = self.num_quantized_bins
        else:
            opts["percentile"] = self.percentile
        return opts

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("method", "activation_type", "weight_type"):
            d[k] = d[k].value
        d["exclude_nodes"] = list(self.exclude_nodes)
        d["exclude_op_types"] = list(self.exclude_op_types)
        d["op_types"] = None if self.op_types is None else list(self.op_types)
        return d


# ---------------------------------------------------------------------------------------------- steps
def preprocess_model(src: Path, dst: Path) -> Step:
    """Run ONNX Runtime's ``quant_pre_process`` (shape inference, BN folding and other fusions).

    Symbolic shape inference gives up on some graphs with dynamic sequence axes ("Incomplete symbolic
    shape inference", e.g. exported transformer encoders); the pre-processing is then run without it
    (ONNX shape inference and the optimizer still run), and the step records why.

    Raises:
        ConversionError: The model cannot be pre-processed even without symbolic shape inference.
    """
    from onnxruntime.quantization import quant_pre_process

    start = time.perf_counter()
    params: dict[str, Any] = {}
    before = set(os.listdir("."))
    try:
        quant_pre_process(str(src), str(dst))
    except Exception as first:  # noqa: BLE001 - shape inference raises many native types; retried below
        _remove_debug_dump(before)
        params = {"skip_symbolic_shape": True, "reason": f"{type(first).__name__}: {str(first)[:200]}"}
        log.info("quant_pre_process without symbolic shape inference: %s", params["reason"])
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        except Exception as exc:  # as above
            raise ConversionError(
                f"quant_pre_process failed on {src.name}: {type(exc).__name__}: {exc} (with symbolic shape "
                f"inference: {params['reason']})"
            ) from exc
    return Step("quant_pre_process", params=params, seconds=round(time.perf_counter() - start, 3))


_DUMP = re.compile(
    r"sym_shape_infer_temp\.onnx|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.data"
)


def _remove_debug_dump(before: set[str]) -> None:
    """ONNX Runtime's symbolic shape inference, when it gives up, saves the model it was working on into the
    current directory (``sym_shape_infer_temp.onnx`` and a uuid-named external-data file, the model's size):
    remove what it left there, and only that."""
    for name in set(os.listdir(".")) - before:
        if _DUMP.fullmatch(name):
            with contextlib.suppress(OSError):
                os.remove(name)


def quantizable_op_types(config: OrtQuantConfig) -> list[str]:
    """The op types ONNX Runtime can quantize in QDQ format, minus ``config.exclude_op_types``."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    known = set(QDQRegistry) | set(QLinearOpsRegistry)
    wanted = known if config.op_types is None else known & set(config.op_types)
    return sorted(wanted - set(config.exclude_op_types))


def check_exclusions(model_path: Path, config: OrtQuantConfig) -> None:
    """Refuse excluded nodes or op types that the (pre-processed) graph does not contain.

    Raises:
        InvalidInputError: Names an unknown node or op type, listing what the graph has.
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    names = {n.name for n in graph.node}
    types = {n.op_type for n in graph.node}
    missing = [n for n in config.exclude_nodes if n not in names]
    if missing:
        shown = ", ".join(sorted(names)[:20]) + (" …" if len(names) > 20 else "")
        raise InvalidInputError(
            f"nodes to exclude {missing} are not in the pre-processed graph (pre-processing fuses e.g. "
            f"BatchNormalization into Conv); its nodes: {shown}"
        )
    bad_types = [t for t in config.exclude_op_types if t not in types]
    if bad_types:
        raise InvalidInputError(
            f"op types to exclude {bad_types} do not occur in the graph; it has {sorted(types)}"
        )


@dataclass(frozen=True)
class Calibration:
    """Activation ranges computed by ONNX Runtime's calibrator, and the settings it really used."""

    ranges: Any  # onnxruntime.quantization.TensorsData
    applied: dict[str, Any]
    batches: int
    seconds: float
    tensors: int = field(default=0)

    def step(self, cset: CalibrationSet) -> Step:
        return Step(
            "calibrate",
            params={**self.applied, "samples": len(cset), "batches": self.batches},
            result={"tensors": self.tensors},
            seconds=round(self.seconds, 3),
        )


def _ort_method(method: CalibrationMethod) -> Any:
    from onnxruntime.quantization import CalibrationMethod as OrtMethod

    return {
        CalibrationMethod.MINMAX: OrtMethod.MinMax,
        CalibrationMethod.ENTROPY: OrtMethod.Entropy,
        CalibrationMethod.PERCENTILE: OrtMethod.Percentile,
    }[method]


def calibrator_settings(calibrator: Any) -> dict[str, Any]:
    """The settings a calibrator object actually holds (read back, not what was asked for)."""
    out: dict[str, Any] = {"calibrator": type(calibrator).__name__, "symmetric": bool(calibrator.symmetric)}
    for attr in ("moving_average", "averaging_constant", "num_bins", "num_quantized_bins", "percentile"):
        if hasattr(calibrator, attr):
            out[attr] = getattr(calibrator, attr)
    if out["calibrator"] == "MinMaxCalibrater":
        for attr in ("num_bins", "num_quantized_bins", "percentile"):
            out.pop(attr, None)
    elif out["calibrator"] == "EntropyCalibrater":
        out.pop("percentile", None)
    elif out["calibrator"] == "PercentileCalibrater":
        out.pop("num_quantized_bins", None)
    return out


def calibrate(
    model_path: Path, cset: CalibrationSet, config: OrtQuantConfig, *, workdir: Path
) -> Calibration:
    """Collect activation ranges of the fp32 model ``model_path`` over ``cset``.

    Args:
        model_path: The pre-processed fp32 ONNX model.
        cset: Calibration data bound to the model's inputs.
        config: The method and its options.
        workdir: Scratch directory for the augmented model.

    Raises:
        ConversionError: The calibrator holds settings other than those asked for, or calibration failed.
    """
    from infership.calibration.adapters import to_ort_reader
    from onnxruntime.quantization import create_calibrator

    start = time.perf_counter()
    wanted = config.calibrator_options()
    try:
        calibrator = create_calibrator(
            Path(model_path),
            quantizable_op_types(config),
            augmented_model_path=str(workdir / "augmented.onnx"),
            calibrate_method=_ort_method(config.method),
            extra_options=wanted,
        )
    except Exception as exc:  # ORT raises native types while augmenting the graph
        raise ConversionError(f"creating the {config.method.value} calibrator failed: {exc}") from exc
    applied = calibrator_settings(calibrator)
    differs = {k: (v, applied.get(k)) for k, v in wanted.items() if applied.get(k) != v}
    if differs:
        raise ConversionError(
            "ONNX Runtime's calibrator did not take these options (asked, held): "
            + ", ".join(f"{k}={a!r} → {h!r}" for k, (a, h) in differs.items())
        )
    reader = to_ort_reader(cset, chunk_batches=config.chunk_batches)
    chatter = io.StringIO()  # the histogram calibrators print() their progress; a library must not
    try:
        with contextlib.redirect_stdout(chatter):
            while not reader.exhausted:
                calibrator.collect_data(reader)
                reader.resume()
            ranges = calibrator.compute_data()
    except Exception as exc:  # inference errors inside the calibrator are native types
        raise ConversionError(
            f"calibration ({config.method.value}) failed: {type(exc).__name__}: {exc}"
        ) from exc
    if chatter.getvalue():
        log.debug("calibrator output:\n%s", chatter.getvalue())
    seconds = time.perf_counter() - start
    log.info(
        "calibrated %d tensors with %s over %d batches",
        len(ranges.data),
        config.method.value,
        reader.batches_read,
    )
    return Calibration(
        ranges=ranges,
        applied={"method": config.method.value, **applied},
        batches=reader.batches_read,
        seconds=seconds,
        tensors=len(ranges.data),
    )


def quantize_qdq(model_path: Path, out_path: Path, calibration: Calibration, config: OrtQuantConfig) -> Step:
    """Write the QDQ int8 model for ``config`` using already computed ranges; check the result.

    Calibration is not repeated: the ranges go to ``quantize_static`` through its calibration cache, so
    re-quantizing with other exclusions (the repair loop) costs only the quantizer pass.

    Raises:
        InvalidInputError: ``config`` excludes nodes or op types the graph does not have.
        ConversionError: Quantization failed, or the result does not reflect the options.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static, save_tensors_data

    check_exclusions(model_path, config)
    qtype = {IntType.INT8: QuantType.QInt8, IntType.UINT8: QuantType.QUInt8}
    start = time.perf_counter()
    with scratch_dir("qdq") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(calibration.ranges, cache)
        try:
            quantize_static(
                str(model_path),
                str(out_path),
                calibration_data_reader=None,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=quantizable_op_types(config),
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                activation_type=qtype[config.activation_type],
                weight_type=qtype[config.weight_type],
                nodes_to_exclude=list(config.exclude_nodes),
                calibrate_method=_ort_method(config.method),
                extra_options={
                    "ActivationSymmetric": config.symmetric_activations,
                    "WeightSymmetric": config.symmetric_weights,
                },
                calibration_cache_path=str(cache),
            )
        except Exception as exc:  # the quantizer raises native and assertion errors
            raise ConversionError(f"quantize_static failed: {type(exc).__name__}: {exc}") from exc
    summary, weight_nodes = scan_qdq(out_path)
    check_qdq(summary, weight_nodes, config)
    return Step(
        "quantize_static",
        params={"format": "QDQ", **config.to_dict()},
        result=summary,
        seconds=round(time.perf_counter() - start, 3),
    )


# ---------------------------------------------------------------------------------------------- checks
def scan_qdq(path: Path) -> tuple[dict[str, Any], set[str]]:
    """Facts about a QDQ model (how many tensors are quantized, with which types, symmetry and scales),
    and the names of the nodes whose weights are quantized."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    act_zp_types, act_zps, weight_types, weight_scale_sizes = set(), [], set(), []
    weight_nodes: set[str] = set()
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
            zp = inits.get(node.input[2]) if len(node.input) > 2 else None
            if zp is not None:
                act_zp_types.add(zp.dtype.name)
                act_zps.append(int(np.asarray(zp).reshape(-1)[0]))
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            q = inits[node.input[0]]
            if q.dtype in (np.int8, np.uint8):
                weight_types.add(q.dtype.name)
                weight_scale_sizes.append(int(inits[node.input[1]].size))
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            for i in node.input:
                p = producers.get(i)
                if p is not None and p.op_type == "DequantizeLinear" and p.input[0] in inits:
                    weight_nodes.add(node.name)
    return {
        "quantized_activations": len(act_zps),
        "activation_types": sorted(act_zp_types),
        "activation_zero_points": sorted(set(act_zps))[:8],
        "quantized_weights": len(weight_scale_sizes),
        "weight_types": sorted(weight_types),
        "per_channel_weights": sum(1 for s in weight_scale_sizes if s > 1),
        "nodes_with_quantized_weights": len(weight_nodes),
    }, weight_nodes


def check_qdq(summary: dict[str, Any], weight_nodes: set[str], config: OrtQuantConfig) -> None:
    """Refuse a QDQ model whose contents contradict ``config``.

    Raises:
        ConversionError: Names the option that did not take effect.
    """
    problems = []
    if summary["quantized_activations"] == 0:
        problems.append("no activation is quantized (is every quantizable node excluded?)")
    if summary["activation_types"] and summary["activation_types"] != [config.activation_type.value]:
        problems.append(
            f"activations are {summary['activation_types']}, asked for {config.activation_type.value}"
        )
    if summary["weight_types"] and summary["weight_types"] != [config.weight_type.value]:
        problems.append(f"weights are {summary['weight_types']}, asked for {config.weight_type.value}")
    if config.symmetric_activations:
        mid = 0 if config.activation_type is IntType.INT8 else 128
        if any(z != mid for z in summary["activation_zero_points"]):
            problems.append(
                f"symmetric activations asked for, zero points are {summary['activation_zero_points']}"
            )
    if config.per_channel and summary["quantized_weights"] and not summary["per_channel_weights"]:
        problems.append("per-channel weights asked for, every weight has a single scale")
    if not config.per_channel and summary["per_channel_weights"]:
        problems.append("per-tensor weights asked for, some weights have per-channel scales")
    leaked = sorted(set(config.exclude_nodes) & weight_nodes)
    if leaked:
        problems.append(f"excluded nodes still have quantized weights: {leaked}")
    if problems:
        raise ConversionError("the int8 model does not reflect the options: " + "; ".join(problems))
