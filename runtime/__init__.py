"""infership.runtime — the core: specs, manifest and artifacts, errors, the backend seam and the Predictor.

Importing this package imports numpy only; each backend loads its runtime (torch, onnxruntime, openvino)
the first time it is used.
"""

from .artifact import Artifact, ArtifactWriter, sha256_file
from .backend import Backend, BackendOptions, PerformanceHint, Placement, Session
from .batching import BatchingPredictor
from .errors import (
    ArtifactError,
    ArtifactLocked,
    BackendUnavailable,
    ConversionError,
    InferenceError,
    InfershipError,
    IntegrityError,
    InvalidInputError,
    StorageError,
    UntrustedProgram,
    ValidationError,
)
from .figures import Agreement, Better, FigureInfo, Unit, figure_info
from .manifest import SCHEMA_VERSION, FileEntry, Manifest, Preprocessing, Step, Tokenizer, Variant
from .monitoring import Monitor, MonitoredPredictor
from .predictor import BackendFallbackWarning, Predictor
from .registry import backend_names, backend_status, get_backend, register_backend
from .spec import TensorSpec
from .statistics import reference_statistics
from .tasks import Task, infer_task, judge_for
from .text import TextEncoder

__all__ = [
    "SCHEMA_VERSION",
    "Agreement",
    "Artifact",
    "ArtifactError",
    "ArtifactLocked",
    "ArtifactWriter",
    "Backend",
    "BackendFallbackWarning",
    "BackendOptions",
    "BackendUnavailable",
    "BatchingPredictor",
    "Better",
    "ConversionError",
    "FigureInfo",
    "FileEntry",
    "InferenceError",
    "InfershipError",
    "IntegrityError",
    "InvalidInputError",
    "Manifest",
    "Monitor",
    "MonitoredPredictor",
    "PerformanceHint",
    "Placement",
    "Predictor",
    "Preprocessing",
    "Session",
    "Step",
    "StorageError",
    "Task",
    "TensorSpec",
    "TextEncoder",
    "Tokenizer",
    "Unit",
    "UntrustedProgram",
    "ValidationError",
    "Variant",
    "backend_names",
    "backend_status",
    "figure_info",
    "get_backend",
    "infer_task",
    "judge_for",
    "reference_statistics",
    "register_backend",
    "sha256_file",
]
