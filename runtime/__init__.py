"""infership.runtime — the core: specs, manifest and artifacts, errors, the backend seam and the Predictor.

Importing this package imports numpy only; each backend loads its runtime (torch, onnxruntime, openvino)
the first time it is used.
"""

from .artifact import Artifact, ArtifactWriter, sha256_file
from .backend import Backend, BackendOptions, PerformanceHint, Placement, Session
from .errors import (
    ArtifactError,
    BackendUnavailable,
    ConversionError,
    InferenceError,
    InfershipError,
    IntegrityError,
    InvalidInputError,
    ValidationError,
)
from .manifest import SCHEMA_VERSION, FileEntry, Manifest, Preprocessing, Step, Variant
from .predictor import BackendFallbackWarning, Predictor
from .registry import backend_names, backend_status, get_backend, register_backend
from .spec import TensorSpec

__all__ = [
    "SCHEMA_VERSION",
    "Artifact",
    "ArtifactError",
    "ArtifactWriter",
    "Backend",
    "BackendFallbackWarning",
    "BackendOptions",
    "BackendUnavailable",
    "ConversionError",
    "FileEntry",
    "InferenceError",
    "InfershipError",
    "IntegrityError",
    "InvalidInputError",
    "Manifest",
    "PerformanceHint",
    "Placement",
    "Predictor",
    "Preprocessing",
    "Session",
    "Step",
    "TensorSpec",
    "ValidationError",
    "Variant",
    "backend_names",
    "backend_status",
    "get_backend",
    "register_backend",
    "sha256_file",
]
