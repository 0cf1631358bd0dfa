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
    """A model file does not match the hash or size recorded in the manifest (stale or tampered), or a
    file the model would read lies outside the artifact directory."""


class ArtifactLocked(ArtifactError):
    """Another writer holds the artifact (or its manifest changed since it was loaded): the second writer
    is refused, never interleaved."""


class UntrustedProgram(ArtifactError):
    """An artifact's program (TorchScript, ``torch.export``) was not built by this installation and the
    caller did not opt in to running it."""


class StorageError(InfershipError, OSError):
    """Writing a file failed (disk full, permissions, read-only file system); nothing was replaced."""


class BackendUnavailable(InfershipError, RuntimeError):
    """The requested backend or device cannot run here; the message says why and how to fix it."""


class InferenceError(InfershipError, RuntimeError):
    """The runtime failed while running a model."""


class ConversionError(InfershipError, RuntimeError):
    """Exporting, simplifying, converting or quantizing a model failed."""


class ValidationError(ConversionError):
    """A converted model disagrees with its reference beyond the allowed tolerance."""
