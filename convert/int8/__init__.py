"""infership.convert.int8 — static int8 variants of an artifact: ONNX Runtime (QDQ), OpenVINO (NNCF), PyTorch.

Names are re-exported lazily: importing this package imports none of the runtimes.
"""

from __future__ import annotations

from infership.runtime.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "quantize": "infership.convert.int8.workflow",
    "QuantizeReport": "infership.convert.int8.workflow",
    "AccuracyBudgetError": "infership.convert.int8.workflow",
    "Target": "infership.convert.int8.workflow",
    "OrtQuantConfig": "infership.convert.int8.ort",
    "CalibrationMethod": "infership.convert.int8.ort",
    "NncfQuantConfig": "infership.convert.int8.openvino",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
