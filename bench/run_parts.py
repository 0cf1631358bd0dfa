"""The parts of a run record besides its samples: how it was set up (:class:`RunSettings`), what its first
use cost (:class:`ColdStart`) and, for the server scenario, its load and verdict (:class:`ServerOutcome`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ColdStart:
    """What a first use costs, kept out of the steady-state figures.

    Args:
        load_ms: ``Predictor.load`` wall time: reading, verifying hashes, compiling (or loading a cache).
        first_inference_ms: The first ``predict`` call after loading.
    """

    load_ms: float
    first_inference_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColdStart:
        return cls(load_ms=float(data["load_ms"]), first_inference_ms=float(data["first_inference_ms"]))


@dataclass(frozen=True)
class RunSettings:
    """How a run was set up: thread/stream settings, what the timed call included, where inputs came from.

    Args:
        intra_op_threads, inter_op_threads, num_streams: As passed to ``Predictor.load`` (``None``: the
            runtime's default).
        hint: The performance hint the predictor was loaded with (``latency`` / ``throughput``).
        include_preprocessing: Whether each timed call fed raw uint8 images through the artifact's
            preprocessing.
        host_device_copies: ``"included"`` on a GPU (the Predictor takes and returns host arrays, so copies
            are always inside the timed call) or ``"none"`` on the CPU.
        input_source: ``"random"`` (distinct random tensors from the input specs) or ``"npy"``.
        pool_size: Number of distinct inputs rotated through.
        input_shapes: Input name → shape of one timed call's tensor (raw image shape with preprocessing).
        warmup_queries: Queries run before measuring (not in the samples).
        warmup_s: Their wall time in seconds.
        tokens: Token batches (text encoders): the sequence length or ``"replay"`` (with the file), the
            padding, and the distribution of the rows' lengths; ``None`` for other inputs.
    """

    intra_op_threads: int | None
    inter_op_threads: int | None
    num_streams: int | None
    hint: str
    include_preprocessing: bool
    host_device_copies: str
    input_source: str
    pool_size: int
    input_shapes: dict[str, list[int]]
    warmup_queries: int
    warmup_s: float
    tokens: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.tokens is None:
            del out["tokens"]  # results of other inputs read as before
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSettings:
        return cls(
            intra_op_threads=data.get("intra_op_threads"),
            inter_op_threads=data.get("inter_op_threads"),
            num_streams=data.get("num_streams"),
            hint=str(data["hint"]),
            include_preprocessing=bool(data["include_preprocessing"]),
            host_device_copies=str(data["host_device_copies"]),
            input_source=str(data["input_source"]),
            pool_size=int(data["pool_size"]),
            input_shapes={str(k): [int(d) for d in v] for k, v in dict(data["input_shapes"]).items()},
            warmup_queries=int(data["warmup_queries"]),
            warmup_s=float(data["warmup_s"]),
            tokens=dict(data["tokens"]) if data.get("tokens") else None,
        )


@dataclass(frozen=True)
class ServerOutcome:
    """The server scenario's load and verdict.

    Args:
        target_qps: The Poisson arrival rate used (queries/s).
        target_qps_source: ``"given"``, or how it was chosen automatically.
        achieved_qps: Completed queries per second.
        latency_bound_ms: The p99 bound asked for, if any.
        bound_met: Whether p99 (measured from each query's scheduled arrival, so queueing counts) is within
            the bound; ``None`` without a bound.
    """

    target_qps: float
    target_qps_source: str
    achieved_qps: float
    latency_bound_ms: float | None
    bound_met: bool | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerOutcome:
        bound = data.get("latency_bound_ms")
        met = data.get("bound_met")
        return cls(
            target_qps=float(data["target_qps"]),
            target_qps_source=str(data["target_qps_source"]),
            achieved_qps=float(data["achieved_qps"]),
            latency_bound_ms=None if bound is None else float(bound),
            bound_met=None if met is None else bool(met),
        )
