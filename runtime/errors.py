"""The exception hierarchy.

Every error infership raises derives from :class:`InfershipError` and from the builtin that matches its
meaning, so callers can catch either. Native runtime exceptions are translated at the boundary
(``raise InferenceError(...) from exc``) so the original traceback is kept as the cause.
"""

from __future__ import annotations


class InfershipError(Exception):
    """Base class of all infership errors."""


class InvalidInputError(InfershipError, ValueError):
    """Inputs do not match the model's specs (names, rank, dtype or a fixed dimension)."""


class ArtifactError(InfershipError, ValueError):
    """An artifact or manifest is missing, malformed, of an unknown schema, or not loadable."""


class IntegrityError(ArtifactError):
    """A model file does not match the hash or size recorded in the manifest (stale or tampered)."""


class BackendUnavailable(InfershipError, RuntimeError):
    """The requested backend or device cannot run here; the message says why and how to fix it."""


class InferenceError(InfershipError, RuntimeError):
    """The runtime failed while running a model."""


class ConversionError(InfershipError, RuntimeError):
    """Exporting, simplifying, converting or quantizing a model failed."""


class ValidationError(ConversionError):
    """A converted model disagrees with its reference beyond the allowed tolerance."""
