"""ONNX → OpenVINO IR (``.xml`` + ``.bin``), fp32 or with fp16-compressed weights.

OpenVINO reads ONNX directly, but converting ahead of time saves the conversion at every load and lets the
weights be stored as fp16 (``compress_to_fp16``): half the file size, and on CPUs the weights are expanded
back to fp32 for arithmetic (on GPUs they run in fp16).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from infership.runtime import ConversionError, Step
from infership.runtime.backends.openvino import default_inference_precision
from infership.runtime.spec import TensorSpec

log = logging.getLogger(__name__)


def convert_openvino(
    src: str | os.PathLike[str], xml_path: str | os.PathLike[str], *, compress_to_fp16: bool = False
) -> Step:
    """Convert an ONNX model to OpenVINO IR.

    Args:
        src: The ONNX model.
        xml_path: Where to write the ``.xml``; the ``.bin`` goes next to it with the same stem.
        compress_to_fp16: Store the weights as fp16.

    Returns:
        The ``openvino`` step: OpenVINO version, compression, op count.

    Raises:
        ConversionError: openvino is not installed or the conversion failed.
    """
    t0 = time.perf_counter()
    try:
        import openvino as ov
    except ImportError as exc:
        raise ConversionError("OpenVINO IR needs openvino: pip install 'infership[openvino]'") from exc
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        model = ov.convert_model(os.fspath(src))
        ov.save_model(model, os.fspath(xml_path), compress_to_fp16=compress_to_fp16)
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with C++ messages: translated below
        raise ConversionError(f"OpenVINO conversion failed: {str(exc).strip()[:400]}") from exc
    if not xml_path.with_suffix(".bin").is_file():
        raise ConversionError(f"OpenVINO wrote {xml_path.name} but no {xml_path.with_suffix('.bin').name}")
    params = {"tool": "openvino.convert_model", "compress_to_fp16": compress_to_fp16}
    result = {"version": ov.get_version().split("-")[0], "ops": len(model.get_ops())}
    return Step("openvino", params, result, round(time.perf_counter() - t0, 3))


def execution_precision(
    variant_precision: str, device: str = "CPU", inputs: Sequence[TensorSpec] = ()
) -> str:
    """The arithmetic precision the ``openvino`` backend will use for a variant on ``device``.

    The backend pins fp32 variants, and on the CPU every variant of a model with variable-length ``inputs``,
    to f32 (:func:`~infership.runtime.backends.openvino.default_inference_precision`); other variants run
    at the device's default inference precision, which is bf16 on CPUs with AVX512_BF16 or AMX. Returns
    ``"f32"``, ``"bf16"``, ``"f16"``...

    Raises:
        ConversionError: openvino is not installed or the device is unknown.
    """
    pinned = default_inference_precision(variant_precision, inputs, device)
    if pinned:
        return pinned
    try:
        import openvino as ov

        hint = ov.Core().get_property(device, "INFERENCE_PRECISION_HINT")
    except ImportError as exc:
        raise ConversionError("openvino is not installed: pip install 'infership[openvino]'") from exc
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with C++ messages
        raise ConversionError(f"OpenVINO cannot tell {device}'s inference precision: {exc}") from exc
    return str(hint.get_type_name() if hasattr(hint, "get_type_name") else hint)
