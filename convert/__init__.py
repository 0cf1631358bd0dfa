"""infership.convert — PyTorch → ONNX export checked against torch, simplification, fp16, int8, OpenVINO IR.

Names are re-exported lazily: importing this package imports neither torch nor onnx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from infership.runtime.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "build_artifact": "infership.convert.build",
    "ProgressCallback": "infership.convert.build",
    "load_model_source": "infership.convert.source",
    "ModelSource": "infership.convert.source",
    "export_onnx": "infership.convert.export",
    "capture_program": "infership.convert.export",
    "save_torch_program": "infership.convert.export",
    "Exporter": "infership.convert.export",
    "compare_outputs": "infership.convert.validate",
    "Check": "infership.convert.validate",
    "Tolerance": "infership.convert.validate",
    "torch_outputs": "infership.convert.validate",
    "validate_against_torch": "infership.convert.validate",
    "simplify_onnx": "infership.convert.simplify",
    "Simplifier": "infership.convert.simplify",
    "convert_fp16": "infership.convert.fp16",
    "FP16_BLOCK_LIST": "infership.convert.fp16",
    "convert_openvino": "infership.convert.openvino_ir",
    "make_preprocessing": "infership.convert.preprocessing",
    "read_labels": "infership.convert.preprocessing",
    "PreprocessingRequest": "infership.convert.preprocessing",
    "quantize": "infership.convert.int8",
    "HOLDOUT_FRACTION": "infership.convert.int8",
    "QuantizeReport": "infership.convert.int8",
    "AccuracyBudgetError": "infership.convert.int8",
    "Target": "infership.convert.int8",
    "OrtQuantConfig": "infership.convert.int8",
    "CalibrationMethod": "infership.convert.int8",
    "NncfQuantConfig": "infership.convert.int8",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # pragma: no cover
    from .build import ProgressCallback, build_artifact  # noqa: F401
    from .export import Exporter, capture_program, export_onnx, save_torch_program  # noqa: F401
    from .fp16 import FP16_BLOCK_LIST, convert_fp16  # noqa: F401
    from .openvino_ir import convert_openvino  # noqa: F401
    from .preprocessing import PreprocessingRequest, make_preprocessing, read_labels  # noqa: F401
    from .simplify import Simplifier, simplify_onnx  # noqa: F401
    from .source import ModelSource, load_model_source  # noqa: F401
    from .validate import (  # noqa: F401
        Check,
        Tolerance,
        compare_outputs,
        torch_outputs,
        validate_against_torch,
    )
