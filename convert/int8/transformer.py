"""int8 recipes for transformer encoders that need no calibration: ONNX Runtime dynamic, and weight-only int8.

Static int8 with one range per activation tensor struggles with transformers: a few hidden-state channels
carry values 10-100× the others (after LayerNorm, and above all the GELU output feeding each FFN's output
projection), so one scale for the tensor leaves the other channels a handful of levels. The recipes here
avoid fixed activation ranges altogether:

- **ONNX Runtime, dynamic** (:class:`OrtDynamicConfig`, target ``ort-dynamic``, variant
  ``onnx-int8-dynamic``), on the graph with ONNX Runtime's transformer fusions
  (:mod:`infership.convert.optimize`):

  - ``blockwise`` (default): every weight MatMul becomes ``MatMulNBits`` with 8-bit weights and
    ``accuracy_level=4`` — int8 products (VNNI) with the activations quantized on the fly **per block of
    ``block_size`` values of each row**, so an outlier channel costs precision only to its own block; the fused
    ``Attention`` nodes become ``QAttention`` (one dynamic quantization of the hidden state for Q, K and V).
  - ``per-channel``: ``quantize_dynamic`` with per-channel weights — Optimum's CPU recipe: one dynamic scale
    per activation tensor. Fast, but the least accurate on encoders with outlier channels.

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

from .types import choice

log = logging.getLogger(__name__)


class DynamicMode(str, enum.Enum):
    """How ONNX Runtime dynamic int8 quantizes activations."""

    BLOCKWISE = "blockwise"
    """``MatMulNBits`` (8-bit weights, int8 compute): activations quantized per block of each row."""
    PER_CHANNEL = "per-channel"
    """``quantize_dynamic``: per-channel weights, one dynamic scale per activation tensor."""


@dataclass(frozen=True, kw_only=True)
class OrtDynamicConfig:
    """Options of ONNX Runtime dynamic int8 for transformers.

    Args:
        mode: :class:`DynamicMode`.
        block_size: Values per activation (and weight) block in ``blockwise`` mode: a power of two, 16-256.
            Smaller blocks are more accurate, larger ones faster.
        attention: Quantize fused ``Attention`` nodes (``QAttention``) too.
        exclude_nodes: Node names of the fused graph left in float.
        preset: Name of the preset this config came from (recorded).
    """

    mode: DynamicMode = DynamicMode.BLOCKWISE
    block_size: int = 128
    attention: bool = True
    exclude_nodes: tuple[str, ...] = ()
    preset: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", choice(DynamicMode, self.mode, "dynamic int8 mode"))
        object.__setattr__(self, "exclude_nodes", tuple(self.exclude_nodes))
        if self.block_size not in (16, 32, 64, 128, 256):
            raise InvalidInputError(f"block_size must be 16, 32, 64, 128 or 256, got {self.block_size}")

    @classmethod
    def blockwise(cls, **changes: Any) -> OrtDynamicConfig:
        """The accurate default: blockwise activations (block 128), ``QAttention``."""
        return cls(**{"preset": "blockwise", **changes})

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
        return d


def quantize_dynamic_model(src: Path, dst: Path, config: OrtDynamicConfig) -> Step:
    """Write the dynamic int8 model of ``src`` (best: the fused graph) to ``dst``.

    Raises:
        InvalidInputError: ``config`` excludes nodes the graph does not have.
        ConversionError: ONNX Runtime's quantizer failed, or quantized nothing.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src), load_external_data=False).graph
    names = {n.name for n in graph.node}
    missing = [n for n in config.exclude_nodes if n not in names]
    if missing:
        raise InvalidInputError(f"nodes to exclude {missing} are not in the graph being quantized")
    start = time.perf_counter()
    float_type = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), _quiet("onnxruntime.quantization"):
            if config.mode is DynamicMode.BLOCKWISE:
                nbits = _nbits_quantizer()(
                    str(src),
                    bits=8,
                    block_size=config.block_size,
                    is_symmetric=True,
                    accuracy_level=4,  # int8 products; activations quantized per block on the fly
                    nodes_to_exclude=list(config.exclude_nodes),
                )
                nbits.process()
                if config.attention and any(n.op_type == "Attention" for n in graph.node):
                    middle = dst.with_name(dst.stem + ".nbits.onnx")
                    nbits.model.save_model_to_file(str(middle), False)
                    quantize_dynamic(
                        str(middle),
                        str(dst),
                        per_channel=True,
                        weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Attention"],
                        nodes_to_exclude=list(config.exclude_nodes),
                        extra_options=float_type,
                    )
                    middle.unlink(missing_ok=True)
                else:
                    nbits.model.save_model_to_file(str(dst), False)
            else:
                quantize_dynamic(
                    str(src),
                    str(dst),
                    per_channel=True,
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul", "Attention"] if config.attention else ["MatMul"],
                    nodes_to_exclude=list(config.exclude_nodes),
                    extra_options=float_type,
                )
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
    values, symmetric int8; ``QAttention`` and ``per-channel`` MatMuls quantize the whole tensor to uint8
    with its own min/max. Each tensor maps to the nodes that quantize it (what excluding it means).
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
        blockwise = config.mode is DynamicMode.BLOCKWISE and node.op_type == "MatMul"
        kinds[node.input[0]] = "block" if blockwise and kinds.get(node.input[0]) != "tensor" else "tensor"
    out = {}
    for tensor, nodes in consumers.items():
        fq = _block_fake_quant(config.block_size) if kinds[tensor] == "block" else _tensor_fake_quant
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


def _tensor_fake_quant(x: Any) -> Any:
    import numpy as np

    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    zero = np.rint(-lo / scale)
    return ((np.clip(np.rint(x / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)


def compress_openvino_weights(onnx_path: Path, out_xml: Path) -> Step:
    """NNCF weight compression (int8 asymmetric, per output channel) of the fp32 ONNX model, saved as IR.

    Raises:
        ConversionError: OpenVINO or NNCF failed, or nothing was compressed.
    """
    level = logging.getLogger("nncf").level
    import nncf
    import openvino as ov

    if level != logging.NOTSET:
        logging.getLogger("nncf").setLevel(level)  # importing nncf resets its logger to INFO
    from .openvino import read_onnx

    start = time.perf_counter()
    model = read_onnx(onnx_path)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), _quiet("nncf"):
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


@contextlib.contextmanager
def _quiet(name: str) -> Any:
    """ONNX Runtime's quantizers log every node at INFO: keep them to the application's WARNING."""
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(max(old, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(old)
