"""The seam between the Predictor and a runtime: the Backend and Session protocols, options and placement.

A *backend* knows whether it can run here (``check``) and opens a *session* for one artifact variant; a
session runs feeds. Both sides are small so that adding a runtime is one module and one registry line.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from .artifact import Artifact
    from .manifest import Variant
    from .spec import TensorSpec


class PerformanceHint(str, enum.Enum):
    """What the runtime should optimise for (OpenVINO's performance hints; other backends ignore it and
    say so in ``placement.details["ignored_options"]``)."""

    LATENCY = "latency"
    THROUGHPUT = "throughput"


@dataclass(frozen=True)
class BackendOptions:
    """Options every backend understands; backend-specific ones go in ``extra``.

    Args:
        device: Where to run: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or an OpenVINO device string such as
            ``"GPU"`` or ``"AUTO"``. ``None`` lets the backend choose its natural device.
        precision: The variant precision being loaded (``fp32``, ``fp16``, ``int8``).
        intra_op_threads: Threads inside one operator (``None``: the runtime's default, all cores).
        inter_op_threads: Threads across operators (``None``: runtime default).
        hint: Latency or throughput optimisation (OpenVINO performance hint).
        num_streams: Parallel inference streams / requests (OpenVINO); ``None`` lets the hint decide.
        cache_dir: Where compiled blobs and engine caches go; default: the user's cache directory
            (`$XDG_CACHE_HOME/infership`), keyed by the model's hash, outside the artifact.
        io_binding: ORT CUDA/TensorRT only: bind inputs/outputs to device memory (default on).
        extra: Backend-specific options, passed through unchanged and recorded.
    """

    device: str | None = None
    precision: str = "fp32"
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    hint: PerformanceHint = PerformanceHint.LATENCY
    num_streams: int | None = None
    cache_dir: Path | None = None
    io_binding: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Placement:
    """Where a session really runs, as reported by the runtime after it was opened.

    Args:
        backend: The backend name (``ort-cpu``, ``openvino``...).
        device: The device the backend runs on.
        providers: ORT execution providers in use, or OpenVINO execution devices.
        node_counts: Nodes per provider where the runtime exposes it (ONNX Runtime), else ``None``.
        fallback_from: The backend that was asked for first and could not run, when a fallback list
            was given; ``None`` when the first choice ran.
        fallback_reason: Why that backend could not run.
        details: Backend-specific facts read back from the runtime (e.g. OpenVINO's inference precision).
    """

    backend: str
    device: str
    providers: tuple[str, ...] = ()
    node_counts: Mapping[str, int] | None = None
    fallback_from: str | None = None
    fallback_reason: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "device": self.device,
            "providers": list(self.providers),
            "node_counts": dict(self.node_counts) if self.node_counts is not None else None,
            "fallback_from": self.fallback_from,
            "fallback_reason": self.fallback_reason,
            "details": dict(self.details),
        }


@runtime_checkable
class Session(Protocol):
    """An opened model, ready to run. Context manager; ``run`` must be safe to call from many threads."""

    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    placement: Placement
    #: True when ``run`` takes torch CUDA tensors as they are (no host round trip); else numpy only.
    accepts_device_tensors: bool

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. Feeds are already checked, contiguous and of the spec's dtype."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Session: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """A runtime that can open artifact variants.

    Attributes:
        name: Registry name, e.g. ``"ort-cpu"``.
        formats: Variant formats it can open, in order of preference.
        default_device: The device used when the caller gives none.
        honours: The :class:`BackendOptions` fields it applies; others set by the caller are recorded as
            ignored (``placement.details["ignored_options"]``) and logged, never reported as applied.
        extra_keys: The keys of ``BackendOptions.extra`` it understands; ``open`` refuses others.
    """

    name: str
    formats: tuple[str, ...]
    default_device: str
    honours: frozenset[str]
    extra_keys: frozenset[str]

    def check(self, device: str | None = None) -> None:
        """Raise BackendUnavailable with the reason and a fix if this backend cannot run on ``device``.

        Must be truthful: a provider that a wheel advertises but that cannot run here is unavailable.
        """
        ...

    def open(self, artifact: Artifact, variant: Variant, options: BackendOptions) -> Session:
        """Open ``variant`` of ``artifact``. Raises BackendUnavailable if the runtime did not place it
        where it was asked to (no silent fallback)."""
        ...


class SessionBase:
    """Shared context-manager plumbing for sessions."""

    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    placement: Placement
    #: True when ``run`` takes torch CUDA tensors as they are (no host round trip): ORT with IO binding,
    #: torch on CUDA. Other sessions receive numpy arrays only.
    accepts_device_tensors: bool = False
    #: Calls worth running at once to use the whole device: OpenVINO's optimal number of infer requests for
    #: the compiled model (its streams under the throughput hint); 1 where one call already uses every core.
    optimal_concurrency: int = 1

    def close(self) -> None:
        """Release the runtime's resources. Idempotent."""

    def __enter__(self) -> SessionBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
