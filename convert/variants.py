"""The variants ``build_artifact`` adds besides the fp32 ONNX graph, each checked against PyTorch.

One function per variant (the PyTorch program, the fp16 graph, the OpenVINO IRs) and the retry of a
disagreeing export with the TorchScript-based exporter; each returns a :class:`Candidate` or raises the
check's :class:`~infership.convert.checking.Rejected`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from infership.runtime import ConversionError, Step

from .checking import Checked, Checker
from .export import Exporter, export_onnx, save_torch_program
from .fp16 import convert_fp16
from .openvino_ir import convert_openvino, execution_precision
from .source import ModelSource
from .validate import Tolerance

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    id: str
    format: str
    precision: str
    files: list[str]
    steps: list[Step] = field(default_factory=list)
    validation: dict[str, Any] | None = None
    target: str | None = None


# ------------------------------------------------------------------------------------------- variants
def torch_variant(
    src: ModelSource,
    program: Any,
    traced: tuple,
    capture_step: Step | None,
    tmp: Path,
    check: Checker,
    tol: Tolerance,
) -> Candidate:
    error = capture_step.result.get("error") if capture_step else None
    path, fmt, step = save_torch_program(
        src.kind, src.model, program, traced, tmp / "model", source_file=src.file, capture_error=error
    )
    checked = check.run("torch-fp32", fmt, "fp32", [path.name], "torch", tol)
    if not checked.passed:
        raise checked.rejected()
    steps = [src.step, *([capture_step] if capture_step else []), step, checked.step]
    return Candidate("torch-fp32", fmt, "fp32", [path.name], steps, checked.validation, "torch")


def fp16_variant(
    final: Path, tmp: Path, block_list: Sequence[str] | None, check: Checker, tol: Tolerance
) -> Candidate:
    dst = tmp / "model-fp16.onnx"
    step = convert_fp16(final, dst, block_list=block_list)
    checked = check.run("onnx-fp16", "onnx", "fp16", [dst.name], "ort-cpu", tol)
    if not checked.passed:
        raise checked.rejected()
    # The graph carries its precision (fp16 weights and Casts), as TensorRT 11 requires; ORT CUDA runs it too.
    return Candidate(
        "onnx-fp16", "onnx", "fp16", [dst.name], [step, checked.step], checked.validation, "ort-cuda"
    )


def openvino_variant(
    final: Path,
    tmp: Path,
    vid: str,
    compress: bool,
    check: Checker,
    tol32: Tolerance,
    tol16: Tolerance | None,
) -> Candidate:
    xml = tmp / vid / "model.xml"
    step = convert_openvino(final, xml, compress_to_fp16=compress)
    files = [f"{vid}/model.xml", f"{vid}/model.bin"]
    precision = "fp16" if compress else "fp32"
    # Checked as users will run it: fp16 variants execute at the device's default precision (bf16 on CPUs
    # with AVX512_BF16/AMX) unless the backend pins them to f32 (text models on the CPU), so the tolerance
    # follows the precision they execute at unless the caller chose one.
    executes = execution_precision(precision, inputs=check.base.inputs)
    tol = tol32 if not compress else tol16 or (Tolerance.bf16() if executes == "bf16" else Tolerance.fp16())
    checked = check.run(
        vid, "openvino", precision, files, "openvino", tol, context={"execution_precision": executes}
    )
    if not checked.passed:
        raise checked.rejected()
    return Candidate(vid, "openvino", precision, files, [step, checked.step], checked.validation, "openvino")


def retry_torchscript(
    src: ModelSource,
    traced: tuple,
    raw: Path,
    in_names: Sequence[str],
    out_names: Sequence[str],
    axes: Mapping[str, Mapping[int, str]],
    opset: int | None,
    check: Checker,
    tol: Tolerance,
    failed: Checked,
) -> tuple[Step, Checked]:
    """The current exporter's graph disagreed with PyTorch: try the TorchScript-based exporter."""
    why = "dynamo export disagreed with PyTorch: " + "; ".join(failed.failures)
    log.warning("%s; retrying with the TorchScript-based exporter", why)
    alt = raw.with_name("export-torchscript.onnx")
    try:
        step = export_onnx(
            src.model,
            traced,
            alt,
            input_names=in_names,
            output_names=out_names,
            dynamic_axes=axes,
            opset=opset,
            exporter=Exporter.TORCHSCRIPT,
        )
    except ConversionError as exc:
        raise failed.rejected(
            "the exported ONNX model", extra=f"the TorchScript exporter failed too: {exc}"
        ) from exc
    checked = check.run("onnx-fp32", "onnx", "fp32", [alt.name], "ort-cpu", tol)
    if checked.passed:
        os.replace(alt, raw)
        step = replace(step, result={**step.result, "fallback_reason": why})
    return step, checked


def fused_variant(
    graph: Path, tmp: Path, architecture: Mapping[str, Any] | None, check: Checker, tol: Tolerance
) -> Candidate:
    """ONNX Runtime's transformer fusions on the fp32 graph (``onnx-fp32-fused``), checked against PyTorch.

    Raises:
        ConversionError: The optimizer failed or fused none of the ops that matter (nothing to gain).
    """
    from .optimize import fused_ok, optimize_transformer

    dst = tmp / "model-fused.onnx"
    step = optimize_transformer(graph, dst, architecture=architecture)
    if not fused_ok(step):
        raise ConversionError(
            f"the transformer optimizer fused nothing that matters: {step.result['fusions']}"
        )
    checked = check.run(FUSED_ID, "onnx", "fp32", [dst.name], "ort-cpu", tol)
    if not checked.passed:
        raise checked.rejected()
    return Candidate(
        FUSED_ID, "onnx", "fp32", [dst.name], [step, checked.step], checked.validation, "ort-cpu"
    )


#: The variant id of the fused fp32 graph (ONNX Runtime only).
FUSED_ID = "onnx-fp32-fused"
