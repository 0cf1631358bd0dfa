"""infership — take a fine-tuned PyTorch model to a fast, validated deployment.

The public API is re-exported here lazily: ``import infership`` and ``from infership import Predictor``
import neither torch, onnxruntime nor openvino. Converters and the benchmark harness load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from infership.runtime.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # runtime
    "Predictor": "infership.runtime",
    "Artifact": "infership.runtime",
    "ArtifactWriter": "infership.runtime",
    "Manifest": "infership.runtime",
    "Variant": "infership.runtime",
    "Preprocessing": "infership.runtime",
    "TensorSpec": "infership.runtime",
    "BackendOptions": "infership.runtime",
    "PerformanceHint": "infership.runtime",
    "Placement": "infership.runtime",
    "InfershipError": "infership.runtime",
    "InvalidInputError": "infership.runtime",
    "ArtifactError": "infership.runtime",
    "IntegrityError": "infership.runtime",
    "BackendUnavailable": "infership.runtime",
    "InferenceError": "infership.runtime",
    "ConversionError": "infership.runtime",
    "ValidationError": "infership.runtime",
    "BackendFallbackWarning": "infership.runtime",
    "backend_status": "infership.runtime",
    "register_backend": "infership.runtime",
    "BatchingPredictor": "infership.runtime",
    "Monitor": "infership.runtime",
    "MonitoredPredictor": "infership.runtime",
    "Task": "infership.runtime",
    "TextEncoder": "infership.runtime",
    "Tokenizer": "infership.runtime",
    # bench
    "BenchConfig": "infership.bench",
    "BenchResults": "infership.bench",
    "Scenario": "infership.bench",
    "run_benchmark": "infership.bench",
    "run_sweep": "infership.bench",
    "load_results": "infership.bench",
    "save_results": "infership.bench",
    "compare_results": "infership.bench",
    "write_report": "infership.bench",
    # convert
    "build_artifact": "infership.convert",
    "compare_outputs": "infership.convert",
    "Check": "infership.convert",
    "Tolerance": "infership.convert",
    "Exporter": "infership.convert",
    "Simplifier": "infership.convert",
    "PreprocessingRequest": "infership.convert",
    "quantize": "infership.convert",
    "QuantizeReport": "infership.convert",
    "AccuracyBudgetError": "infership.convert",
    "OrtQuantConfig": "infership.convert",
    "NncfQuantConfig": "infership.convert",
    "CalibrationMethod": "infership.convert",
    # calibration
    "CalibrationSet": "infership.calibration",
    # the fastest path, measured
    "optimize": "infership.optimizer",
    "OptimizeReport": "infership.optimizer",
    # the main job
    "PipelineConfig": "infership.pipeline",
    "run_pipeline": "infership.pipeline",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, extra=("__version__",))


if TYPE_CHECKING:  # pragma: no cover
    from infership.runtime import (  # noqa: F401
        Artifact,
        ArtifactError,
        ArtifactWriter,
        BackendFallbackWarning,
        BackendOptions,
        BackendUnavailable,
        BatchingPredictor,
        ConversionError,
        InferenceError,
        InfershipError,
        IntegrityError,
        InvalidInputError,
        Manifest,
        Monitor,
        MonitoredPredictor,
        PerformanceHint,
        Placement,
        Predictor,
        Preprocessing,
        Task,
        TensorSpec,
        TextEncoder,
        Tokenizer,
        ValidationError,
        Variant,
        backend_status,
        register_backend,
    )
