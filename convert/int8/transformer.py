"""int8 recipes for transformer encoders that need no calibration: ONNX Runtime dynamic, and weight-only int8.

Static int8 with one range per activation tensor struggles with transformers: a few hidden-state channels
carry values 10-100× the others (after LayerNorm, and above all the GELU output feeding each FFN's output
projection), so one scale for the tensor leaves the other channels a handful of levels. The recipes here
avoid fixed activation ranges altogether:

- **ONNX Runtime, dynamic** (:class:`OrtDynamicConfig`, target ``ort-dynamic``, variant
  ``onnx-int8-dynamic``), on the graph with ONNX Runtime's transformer fusions
  (:mod:`infership.convert.optimize`):

  - ``blockwise``: every weight MatMul becomes ``MatMulNBits`` with 8-bit weights and ``accuracy_level=4`` —
    int8 products (VNNI) with the activations quantized on the fly **per block of ``block_size`` values of
    each row**, so an outlier channel costs precision only to its own block; the fused ``Attention`` nodes
    become ``QAttention`` (one dynamic quantization of the hidden state for Q, K and V).
  - ``per-channel``: ``quantize_dynamic`` with per-channel weights — Optimum's CPU recipe: one dynamic scale
    per activation tensor. Fast, but the least accurate on encoders with outlier channels.
  - ``mixed`` (default): each weight MatMul gets the cheaper ``per-channel`` quantizer where its input keeps
    ``mixed_sqnr_db`` (30 dB) under one uint8 scale for the whole tensor — measured on calibration inputs
    (:func:`choose_blockwise`) — and ``blockwise`` where outlier channels make one scale too coarse (on a
    sentence encoder: the FFN inputs; the attention output projections stay per tensor). Held to the same
    accuracy budget as the others (its repair moves MatMuls to ``blockwise`` before keeping anything in
    float), it is faster than ``blockwise`` wherever inputs allow one scale per tensor — most at short
    inputs, where ``MatMulNBits`` costs most.

  ``quantize_dynamic`` on the fused graph needs ``extra_options={"DefaultTensorType": FLOAT}`` (the fused ops
  have no type information for their weights otherwise: "Unable to find data type for weight_name").
- **OpenVINO, weights only** (:func:`compress_openvino_weights`, target ``openvino-weights``, variant
  ``openvino-int8-weights``): NNCF ``compress_weights`` (int8 asymmetric, per output channel); OpenVINO's CPU
  plugin computes with them in int8 with activations quantized per group on the fly.
"""

from __future__ import annotations

import contextlib
import enum
import io
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from infership.runtime.errors import ConversionError, InvalidInputError
from infership.runtime.manifest import Step

from .openvino import quiet_logger
from .types import LayerError, choice

log = logging.getLogger(__name__)


class DynamicMode(str, enum.Enum):
    """How ONNX Runtime dynamic int8 quantizes activations."""

    BLOCKWISE = "blockwise"
    """``MatMulNBits`` (8-bit weights, int8 compute): activations quantized per block of each row."""
    PER_CHANNEL = "per-channel"
    """``quantize_dynamic``: per-channel weights, one dynamic scale per activation tensor."""
    MIXED = "mixed"
    """``per-channel`` where one scale per tensor keeps the input's SQNR, ``blockwise`` elsewhere."""


@dataclass(frozen=True, kw_only=True)
class OrtDynamicConfig:
    """Options of ONNX Runtime dynamic int8 for transformers.

    Args:
        mode: :class:`DynamicMode`.
        block_size: Values per activation (and weight) block in ``blockwise`` mode: a power of two, 16-256.
            Smaller blocks are more accurate, larger ones faster.
        attention: Quantize fused ``Attention`` nodes (``QAttention``) too.
        exclude_nodes: Node names of the fused graph left in float.
        mixed_sqnr_db: ``mixed`` mode: a MatMul whose input's SQNR under one uint8 scale for the whole
            tensor is below this (dB, on calibration inputs) is quantized ``blockwise``.
        blockwise_nodes: ``mixed`` mode: the MatMuls quantized ``blockwise`` (the rest ``per-channel``);
            :func:`choose_blockwise` fills it in from calibration inputs.
        smooth: Before quantizing per tensor (``mixed`` and ``per-channel``), move part of each MatMul
            input's outlier channels into its weight, one strength per node chosen on calibration batches
            (:mod:`~infership.convert.int8.smooth`).
        preset: Name of the preset this config came from (recorded).
    """

    mode: DynamicMode = DynamicMode.MIXED
    block_size: int = 128
    attention: bool = True
    exclude_nodes: tuple[str, ...] = ()
    mixed_sqnr_db: float = 30.0
    blockwise_nodes: tuple[str, ...] = ()
    smooth: bool = True
    preset: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", choice(DynamicMode, self.mode, "dynamic int8 mode"))
        object.__setattr__(self, "exclude_nodes", tuple(self.exclude_nodes))
        object.__setattr__(self, "blockwise_nodes", tuple(self.blockwise_nodes))
        if self.block_size not in (16, 32, 64, 128, 256):
            raise InvalidInputError(f"block_size must be 16, 32, 64, 128 or 256, got {self.block_size}")
        if isinstance(self.mixed_sqnr_db, bool) or not isinstance(self.mixed_sqnr_db, (int, float)):
            raise InvalidInputError(f"mixed_sqnr_db must be a number of dB, got {self.mixed_sqnr_db!r}")
        if self.blockwise_nodes and self.mode is not DynamicMode.MIXED:
            raise InvalidInputError(f"blockwise_nodes is for the mixed mode, not {self.mode.value!r}")

    @classmethod
    def mixed(cls, **changes: Any) -> OrtDynamicConfig:
        """The default: per-channel where the input allows one scale per tensor, blockwise elsewhere."""
        return cls(**{"preset": "mixed", "mode": DynamicMode.MIXED, **changes})

    @classmethod
    def blockwise(cls, **changes: Any) -> OrtDynamicConfig:
        """Blockwise activations (block 128) for every MatMul, ``QAttention``."""
        return cls(**{"preset": "blockwise", "mode": DynamicMode.BLOCKWISE, **changes})

    @classmethod
    def per_channel(cls, **changes: Any) -> OrtDynamicConfig:
        """Optimum's CPU recipe: ``quantize_dynamic`` with per-channel weights on the fused graph."""
        return cls(**{"preset": "per-channel", "mode": DynamicMode.PER_CHANNEL, **changes})

    def excluding(self, *, nodes: tuple[str, ...] = ()) -> OrtDynamicConfig:
        """A copy that also leaves ``nodes`` in float."""
        return replace(
            self, exclude_nodes=self.exclude_nodes + tuple(n for n in nodes if n not in self.exclude_nodes)
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mode"] = self.mode.value
        d["exclude_nodes"] = list(self.exclude_nodes)
        d["blockwise_nodes"] = list(self.blockwise_nodes)
        return d


def weight_matmuls(graph_path: Path) -> list[str]:
    """Names of the MatMul nodes of ``graph_path`` whose second input is a weight (what dynamic int8 quantizes)."""
    return _weight_matmuls(_load_graph(graph_path))


def _weight_matmuls(graph: Any) -> list[str]:
    weights = {i.name for i in graph.initializer}
    return [
        n.name for n in graph.node if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in weights
    ]


def choose_blockwise(
    graph_path: Path, config: OrtDynamicConfig, cset: Any
) -> tuple[OrtDynamicConfig, Step, list[LayerError]]:
    """Resolve ``mixed`` mode: measure on ``cset`` (a bound :class:`~infership.calibration.CalibrationSet`)
    each weight MatMul input's SQNR under one uint8 scale for the whole tensor, and quantize ``blockwise``
    those below ``config.mixed_sqnr_db``.

    Returns:
        The config with ``blockwise_nodes`` set; a step that records every input's figure; and the MatMuls
        left per tensor, one entry each, lowest figure first (what the repair moves to ``blockwise``).
    """
    from .repair import TensorQuantizer, rank_layers

    start = time.perf_counter()
    graph = _load_graph(graph_path)
    by_input: dict[str, list[str]] = {}
    matmuls = set(_weight_matmuls(graph))
    for node in graph.node:
        if node.name in matmuls and node.name not in config.exclude_nodes and node.input[0]:
            by_input.setdefault(node.input[0], []).append(node.name)
    quantizers = {t: TensorQuantizer(tensor_fake_quant, tuple(nodes)) for t, nodes in by_input.items()}
    ranking = rank_layers(graph_path, quantizers, cset)
    figures = {n: round(e.sqnr_db, 2) for e in ranking for n in e.nodes}
    chosen = tuple(n for e in ranking if e.sqnr_db < config.mixed_sqnr_db for n in e.nodes)
    step = Step(
        "choose_blockwise",
        params={"threshold_db": config.mixed_sqnr_db, "measure": "input SQNR, one uint8 scale per tensor"},
        result={
            "blockwise": list(chosen),
            "per_channel": len(figures) - len(chosen),
            "input_sqnr_db": figures,
        },
        seconds=round(time.perf_counter() - start, 3),
    )
    per_tensor = sorted(
        (
            LayerError(e.tensor, (n,), figures[n], figures[n])
            for e in ranking
            for n in e.nodes
            if n not in chosen
        ),
        key=lambda e: (e.sqnr_db, e.nodes[0]),
    )
    return replace(config, blockwise_nodes=chosen), step, per_tensor


def _load_graph(path: Path) -> Any:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph


def quantize_dynamic_model(src: Path, dst: Path, config: OrtDynamicConfig) -> Step:
    """Write the dynamic int8 model of ``src`` (best: the fused graph) to ``dst``. In ``mixed`` mode the
    MatMuls of ``config.blockwise_nodes`` are quantized blockwise and the others per-channel
    (:func:`choose_blockwise` picks them).

    Raises:
        InvalidInputError: ``config`` excludes (or quantizes blockwise) nodes the graph does not have.
        ConversionError: ONNX Runtime's quantizer failed, or quantized nothing.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = _load_graph(src)
    names = {n.name for n in graph.node}
    missing = [n for n in config.exclude_nodes + config.blockwise_nodes if n not in names]
    if missing:
        raise InvalidInputError(f"nodes to exclude or quantize blockwise {missing} are not in the graph")
    start = time.perf_counter()
    import onnx

    float_type = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    excluded = list(config.exclude_nodes)
    if config.mode is DynamicMode.BLOCKWISE:
        blockwise, per_tensor_ops = None, ["Attention"] if config.attention else []
    elif config.mode is DynamicMode.MIXED and config.blockwise_nodes:
        blockwise = set(config.blockwise_nodes)
        per_tensor_ops = ["MatMul", "Attention"] if config.attention else ["MatMul"]
    else:  # per-channel, or mixed with nothing to quantize blockwise
        blockwise, per_tensor_ops = set(), ["MatMul", "Attention"] if config.attention else ["MatMul"]
    if not any(n.op_type == "Attention" for n in graph.node) and "Attention" in per_tensor_ops:
        per_tensor_ops.remove("Attention")
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), quiet_logger("onnxruntime.quantization"):
            source = str(src)
            middle = dst.with_name(dst.stem + ".nbits.onnx")
            if blockwise is None or blockwise:
                # blockwise is None: every weight MatMul; else only those named.
                skip = [] if blockwise is None else [n for n in _weight_matmuls(graph) if n not in blockwise]
                nbits = _nbits_quantizer()(
                    str(src),
                    bits=8,
                    block_size=config.block_size,
                    is_symmetric=True,
                    accuracy_level=4,  # int8 products; activations quantized per block on the fly
                    nodes_to_exclude=excluded + skip,
                )
                nbits.process()
                target = middle if per_tensor_ops else dst
                nbits.model.save_model_to_file(str(target), False)
                source = str(middle)
            if per_tensor_ops:
                with without_preprocess_hint():
                    quantize_dynamic(
                        source,
                        str(dst),
                        per_channel=True,
                        weight_type=QuantType.QInt8,
                        op_types_to_quantize=per_tensor_ops,
                        nodes_to_exclude=excluded + sorted(blockwise or ()),
                        extra_options=float_type,
                    )
            middle.unlink(missing_ok=True)
    except Exception as exc:  # the quantizers raise assertion, key and native errors
        raise ConversionError(
            f"dynamic int8 ({config.mode.value}) failed: {type(exc).__name__}: {exc}"
        ) from exc
    counts = _op_counts(dst, ("MatMulNBits", "QAttention", "MatMulInteger", "DynamicQuantizeMatMul"))
    if not any(counts.values()):
        raise ConversionError(f"dynamic int8 ({config.mode.value}) quantized nothing in {src.name}")
    return Step(
        "quantize_dynamic",
        params={**config.to_dict(), "graph": src.name},
        result={"quantized_ops": counts},
        seconds=round(time.perf_counter() - start, 3),
    )


def dynamic_quantizers(graph_path: Path, config: OrtDynamicConfig) -> dict[str, Any]:
    """Tensor → how the dynamic recipe quantizes it, for ranking layers (:func:`~.repair.rank_layers`).

    Dynamic int8 has no calibrated ranges, but its activation quantizer is fully determined by the
    activation itself, so the error it introduces at each tensor is measured exactly as for static int8: on
    the fp32 activation. ``MatMulNBits`` (``blockwise``) quantizes each row per block of ``block_size``
    values, symmetric int8; ``QAttention`` and ``per-channel`` MatMuls (in ``mixed`` mode, those not in
    ``blockwise_nodes``) quantize the whole tensor to uint8 with its own min/max. Each tensor maps to the
    nodes that quantize it (what excluding it means).
    """
    import onnx

    from .repair import TensorQuantizer

    graph = onnx.load(str(graph_path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    consumers: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    for node in graph.node:
        quantized = node.op_type == "Attention" and config.attention
        quantized = quantized or (
            node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in weights
        )
        if not quantized or not node.input[0]:
            continue
        consumers.setdefault(node.input[0], []).append(node.name)
        blockwise = node.op_type == "MatMul" and (
            config.mode is DynamicMode.BLOCKWISE or node.name in config.blockwise_nodes
        )
        kinds[node.input[0]] = "block" if blockwise and kinds.get(node.input[0]) != "tensor" else "tensor"
    out = {}
    for tensor, nodes in consumers.items():
        fq = _block_fake_quant(config.block_size) if kinds[tensor] == "block" else tensor_fake_quant
        out[tensor] = TensorQuantizer(fq, tuple(nodes))
    return out


def _block_fake_quant(block: int) -> Any:
    def fq(x: Any) -> Any:
        import numpy as np

        k = x.shape[-1]
        pad = (-k) % block
        xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)]) if pad else x
        blocks = xp.reshape(*xp.shape[:-1], -1, block)
        scale = np.abs(blocks).max(axis=-1, keepdims=True) / 127.0
        scale = np.where(scale == 0, 1.0, scale)
        q = np.clip(np.rint(blocks / scale), -127, 127) * scale
        return q.reshape(xp.shape)[..., :k].astype(np.float32)

    return fq


def tensor_fake_quant(x: Any, lo: float | None = None, hi: float | None = None) -> Any:
    """One asymmetric uint8 scale for the whole tensor, from its own min and max (or ``lo``/``hi``: those of
    the batch ``x`` is a sample of)."""
    import numpy as np

    lo = min(float(x.min()) if lo is None else lo, 0.0)
    hi = max(float(x.max()) if hi is None else hi, 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    zero = np.rint(-lo / scale)
    return ((np.clip(np.rint(x / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)


def compress_openvino_weights(onnx_path: Path, out_xml: Path) -> Step:
    """NNCF weight compression (int8 asymmetric, per output channel) of the fp32 ONNX model, saved as IR.

    Raises:
        ConversionError: OpenVINO or NNCF failed, or nothing was compressed.
    """
    import openvino as ov

    from .openvino import import_nncf, read_onnx

    nncf, _ = import_nncf()

    start = time.perf_counter()
    model = read_onnx(onnx_path)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), quiet_logger("nncf"):
            compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    except Exception as exc:  # NNCF and OpenVINO raise many native types
        raise ConversionError(
            f"nncf.compress_weights failed: {type(exc).__name__}: {str(exc)[:500]}"
        ) from exc
    int8 = sum(
        1
        for op in compressed.get_ordered_ops()
        if op.get_type_name() == "Constant" and op.get_element_type().get_type_name() in ("u8", "i8")
    )
    if int8 == 0:
        raise ConversionError("nncf.compress_weights compressed no weight")
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    try:
        ov.save_model(compressed, str(out_xml), compress_to_fp16=False)
    except Exception as exc:  # as above
        raise ConversionError(f"saving the weight-compressed IR failed: {exc}") from exc
    return Step(
        "nncf.compress_weights",
        params={"mode": "int8_asym"},
        result={"int8_weights": int8},
        seconds=round(time.perf_counter() - start, 3),
    )


class _PreprocessHint(logging.Filter):
    """Drops the hint ONNX Runtime's quantizers log on the root logger for a graph without their
    pre-processing mark ("Please consider to run pre-processing before quantization")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Please consider to run pre-processing")


@contextlib.contextmanager
def without_preprocess_hint() -> Any:
    """While quantizing the transformer-fused graph, which is left without ``quant_pre_process`` on purpose
    (its fusions are what dynamic int8 needs), the hint to pre-process it would mislead — and it would print
    once per repair step in the caller's program: it is filtered out of the root logger meanwhile."""
    root, hint = logging.getLogger(), _PreprocessHint()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def _nbits_quantizer() -> Any:
    """ONNX Runtime's ``MatMulNBitsQuantizer``. Its module calls ``logging.basicConfig(level=INFO)`` when
    first imported, which would make every library's INFO records print in the user's program: the root
    logger's handlers and level are put back as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    return MatMulNBitsQuantizer


def _op_counts(path: Path, ops: tuple[str, ...]) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {op: sum(1 for n in graph.node if n.op_type == op) for op in ops}
