"""infership.convert.int8 — static int8 variants of an artifact: ONNX Runtime (QDQ), OpenVINO (NNCF), PyTorch.

Modules, bottom up: ``types`` (targets, their variant ids and file names, the reports), one module per
runtime (``ort``, ``openvino``, ``torch``), ``outlook`` (what int8 does on this CPU), ``evaluate``
(candidates judged through the runtime's backends), ``repair`` (layer ranking and the repair loop),
``build`` (one function per target), ``workflow`` (:func:`quantize`) and ``cli``.

Names are re-exported lazily: importing this package imports none of the runtimes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from infership.runtime.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "quantize": "infership.convert.int8.workflow",
    "Target": "infership.convert.int8.types",
    "HOLDOUT_FRACTION": "infership.convert.int8.types",
    "TargetLayout": "infership.convert.int8.types",
    "LAYOUTS": "infership.convert.int8.types",
    "QuantizeReport": "infership.convert.int8.types",
    "TargetReport": "infership.convert.int8.types",
    "AccuracyBudgetError": "infership.convert.int8.types",
    "RepairResult": "infership.convert.int8.types",
    "RepairStep": "infership.convert.int8.types",
    "LayerError": "infership.convert.int8.types",
    "Int8Outlook": "infership.convert.int8.types",
    "OrtQuantConfig": "infership.convert.int8.ort",
    "CalibrationMethod": "infership.convert.int8.ort",
    "IntType": "infership.convert.int8.ort",
    "NncfQuantConfig": "infership.convert.int8.openvino",
    "NncfPreset": "infership.convert.int8.openvino",
    "NncfRange": "infership.convert.int8.openvino",
    "quantize_torch": "infership.convert.int8.torch",
    "int8_outlook": "infership.convert.int8.outlook",
    "rank_layers": "infership.convert.int8.repair",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # pragma: no cover
    from .openvino import NncfPreset, NncfQuantConfig, NncfRange  # noqa: F401
    from .ort import CalibrationMethod, IntType, OrtQuantConfig  # noqa: F401
    from .outlook import int8_outlook  # noqa: F401
    from .repair import rank_layers  # noqa: F401
    from .torch import quantize_torch  # noqa: F401
    from .types import (  # noqa: F401
        HOLDOUT_FRACTION,
        LAYOUTS,
        AccuracyBudgetError,
        Int8Outlook,
        LayerError,
        QuantizeReport,
        RepairResult,
        RepairStep,
        Target,
        TargetLayout,
        TargetReport,
    )
    from .workflow import quantize  # noqa: F401
