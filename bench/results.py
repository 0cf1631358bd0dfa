"""Benchmark results: frozen dataclasses that round-trip through JSON with a ``schema_version``.

A results file is one JSON object::

    {"format": "infership-bench-results", "schema_version": 1, "created": ..., "infership": "0.1.0",
     "fingerprint": "…16 hex…", "environment": {cpu, gpus, libraries, ...},
     "runs": [RunResult...], "overhead": [RunResult...], "skipped": [SkippedRun...], "config": {...}}

Loading checks the ``format`` marker and the schema version, so a foreign JSON file (a pytest-benchmark
file, an artifact manifest) or a malformed one gets an error that says what it is and what was expected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from infership.runtime.errors import InfershipError

from .run_parts import ColdStart, RunSettings, ServerOutcome
from .stats import LatencySummary, Stability

SCHEMA_VERSION = 1
FORMAT = "infership-bench-results"

# Samples are stored in ms rounded to 0.1 µs: well below timer resolution, and it keeps files small.
_SAMPLE_DECIMALS = 4


class ResultsError(InfershipError, ValueError):
    """A results file is missing, not JSON, foreign (not an infership results file), of an unsupported
    schema version, or malformed."""


class RunNotFound(ResultsError, KeyError):
    """:meth:`BenchResults.run` was asked for a key the results do not hold. A :class:`ResultsError`, and a
    ``KeyError`` too, as a lookup by key is."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument (quoted); the message reads better as written.
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class RunResult:
    """One measured configuration.

    Args:
        model: The artifact's manifest name.
        backend: Backend that ran it. device: Where it ran.
        variant: Artifact variant id. precision: ``fp32`` / ``fp16`` / ``int8``.
        scenario: ``single-stream``, ``multi-stream``, ``server`` or ``offline``.
        batch_size: Items per ``predict`` call. concurrency: Parallel callers (streams for multi-stream).
        latency_ms: Summary of ``samples_ms``.
        throughput: Items (not queries) per second over the measurement.
        queries_per_s: Queries per second (a multi-stream query is ``concurrency`` calls).
        samples_ms: Every measured query's latency, in completion order.
        duration_s: Measurement wall time (warm-up excluded).
        stability: Whether the last measurement windows agreed.
        settings: Threads, streams, hint, inputs, warm-up.
        cold_start: Load and first-inference times, when the harness loaded the predictor itself.
        placement: Where the runtime placed the model (``Placement.to_dict()``).
        accuracy: The variant's validation figures from the manifest (``variant.validation``), if any.
        server: Load and verdict of a server-scenario run.
        key_extra: Extra key parts that distinguish runs (preprocessing, requested server rate).
        rounds: Samples per round when the run was measured in several rounds spread over the sweep
            (``samples_ms`` holds them in round order); empty for one continuous measurement.
        reference_ms: The reference workload's median (ms) timed next to each round (one value per round,
            or one for a continuous run); empty when not measured. Compare can divide each round's samples
            by it to take the machine's speed out (see :mod:`infership.bench.reference`).
    """

    model: str
    backend: str
    device: str
    variant: str
    precision: str
    scenario: str
    batch_size: int
    concurrency: int
    latency_ms: LatencySummary
    throughput: float
    queries_per_s: float
    samples_ms: tuple[float, ...]
    duration_s: float
    stability: Stability
    settings: RunSettings
    cold_start: ColdStart | None = None
    placement: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] | None = None
    server: ServerOutcome | None = None
    key_extra: tuple[str, ...] = ()
    rounds: tuple[int, ...] = ()
    reference_ms: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples_ms", tuple(self.samples_ms))
        object.__setattr__(self, "reference_ms", tuple(float(v) for v in self.reference_ms))
        object.__setattr__(self, "key_extra", tuple(self.key_extra))
        object.__setattr__(self, "rounds", tuple(int(n) for n in self.rounds))
        if self.rounds and sum(self.rounds) != len(self.samples_ms):
            raise ResultsError(
                f"rounds {list(self.rounds)} do not add up to the {len(self.samples_ms)} samples"
            )
        if self.reference_ms and len(self.reference_ms) != max(1, len(self.rounds)):
            raise ResultsError(
                f"reference_ms holds {len(self.reference_ms)} values for {max(1, len(self.rounds))} round(s)"
            )

    @property
    def key(self) -> str:
        """What identifies this run across files: compare matches baseline and current runs by it."""
        parts = [
            self.model,
            f"{self.backend}@{self.device}",
            self.precision,
            self.scenario,
            f"b{self.batch_size}",
            f"c{self.concurrency}",
            *self.key_extra,
        ]
        return "/".join(parts)

    @property
    def round_samples(self) -> list[tuple[float, ...]]:
        """``samples_ms`` cut into its rounds (one piece for a continuous run)."""
        if not self.rounds:
            return [self.samples_ms]
        out, start = [], 0
        for n in self.rounds:
            out.append(self.samples_ms[start : start + n])
            start += n
        return out

    @property
    def spread(self) -> dict[str, Any]:
        """The run's own repeat spread, stored with it so a baseline says how much it moves by itself:
        the median of each round (a continuous run is cut into 5 consecutive parts) and the largest relative
        deviation of those medians from their mean."""
        parts = self.round_samples
        if len(parts) == 1:
            n = len(self.samples_ms)
            cuts = [round(i * n / 5) for i in range(6)]
            parts = [self.samples_ms[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]
        medians = [float(np.median(p)) for p in parts if len(p)]
        mean = float(np.mean(medians)) if medians else 0.0
        dev = max((abs(m - mean) for m in medians), default=0.0) / mean if mean > 0 else 0.0
        return {
            "parts": "rounds" if len(self.rounds) > 1 else "5 consecutive parts",
            "medians_ms": [round(m, _SAMPLE_DECIMALS) for m in medians],
            "max_deviation": round(dev, 6),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "model": self.model,
            "backend": self.backend,
            "device": self.device,
            "variant": self.variant,
            "precision": self.precision,
            "scenario": self.scenario,
            "batch_size": self.batch_size,
            "concurrency": self.concurrency,
            "key_extra": list(self.key_extra),
            "latency_ms": self.latency_ms.to_dict(),
            "throughput": self.throughput,
            "queries_per_s": self.queries_per_s,
            "duration_s": self.duration_s,
            "stability": self.stability.to_dict(),
            "settings": self.settings.to_dict(),
            "cold_start": self.cold_start.to_dict() if self.cold_start else None,
            "placement": self.placement,
            "accuracy": self.accuracy,
            "server": self.server.to_dict() if self.server else None,
            "rounds": list(self.rounds),
            "reference_ms": [round(v, _SAMPLE_DECIMALS) for v in self.reference_ms],
            "spread": self.spread,
            "samples_ms": [round(s, _SAMPLE_DECIMALS) for s in self.samples_ms],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        cold = data.get("cold_start")
        server = data.get("server")
        samples = data["samples_ms"]
        if not isinstance(samples, list):
            raise ResultsError(f"samples_ms must be a list, got {type(samples).__name__}")
        return cls(
            model=str(data["model"]),
            backend=str(data["backend"]),
            device=str(data["device"]),
            variant=str(data["variant"]),
            precision=str(data["precision"]),
            scenario=str(data["scenario"]),
            batch_size=int(data["batch_size"]),
            concurrency=int(data["concurrency"]),
            key_extra=tuple(str(x) for x in data.get("key_extra") or ()),
            latency_ms=LatencySummary.from_dict(data["latency_ms"]),
            throughput=float(data["throughput"]),
            queries_per_s=float(data["queries_per_s"]),
            duration_s=float(data["duration_s"]),
            stability=Stability.from_dict(data["stability"]),
            settings=RunSettings.from_dict(data["settings"]),
            cold_start=ColdStart.from_dict(cold) if cold else None,
            placement=dict(data.get("placement") or {}),
            accuracy=dict(data["accuracy"]) if data.get("accuracy") else None,
            server=ServerOutcome.from_dict(server) if server else None,
            samples_ms=tuple(float(s) for s in samples),
            rounds=tuple(int(n) for n in data.get("rounds") or ()),
            reference_ms=tuple(float(v) for v in data.get("reference_ms") or ()),
        )


@dataclass(frozen=True)
class SkippedRun:
    """A configuration of the sweep that could not run, and why (never dropped silently).

    ``failed`` is true when the run started and its runtime failed (e.g. out of memory at a large batch), as
    opposed to a backend or variant that is not available here: a failure may not repeat, an absence will.
    """

    backend: str
    precision: str
    reason: str
    failed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SkippedRun:
        return cls(
            backend=str(data["backend"]),
            precision=str(data["precision"]),
            reason=str(data["reason"]),
            failed=bool(data.get("failed", False)),  # absent in files written before the field
        )


@dataclass(frozen=True)
class BenchResults:
    """Everything one benchmark invocation measured, with the machine it ran on.

    Args:
        runs: The measured runs.
        environment: ``infership.runtime.hardware.environment()``: CPU model and ISA flags, cores, GPUs and
            driver, library versions.
        fingerprint: ``hardware.fingerprint(environment)``: compare refuses files whose fingerprints differ.
        overhead: The harness's own cost: the same scenarios on the ``fake`` backend (an empty predictor).
        skipped: Configurations that could not run, with the reason.
        config: The options the sweep ran with (for the record; not interpreted).
        created: ISO timestamp (UTC).
        infership: The infership version that measured.
        schema_version: Version of this file layout.
    """

    runs: tuple[RunResult, ...]
    environment: dict[str, Any]
    fingerprint: str
    overhead: tuple[RunResult, ...] = ()
    skipped: tuple[SkippedRun, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    infership: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", tuple(self.runs))
        object.__setattr__(self, "overhead", tuple(self.overhead))
        object.__setattr__(self, "skipped", tuple(self.skipped))
        keys = [r.key for r in self.runs]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ResultsError(f"duplicate run keys {dupes}: each configuration may appear once per file")

    def run(self, key: str) -> RunResult:
        """The run with ``key``.

        Raises:
            RunNotFound: No such run (the message lists the keys there are); a :class:`ResultsError`
                and a ``KeyError``.
        """
        for r in self.runs:
            if r.key == key:
                return r
        raise RunNotFound(f"no run {key!r}; runs: {[r.key for r in self.runs]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "schema_version": self.schema_version,
            "created": self.created,
            "infership": self.infership,
            "fingerprint": self.fingerprint,
            "environment": self.environment,
            "config": self.config,
            "runs": [r.to_dict() for r in self.runs],
            "overhead": [r.to_dict() for r in self.overhead],
            "skipped": [s.to_dict() for s in self.skipped],
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "results") -> BenchResults:
        """Parse a results object.

        Raises:
            ResultsError: Foreign, of another schema version, or malformed; the message says which.
        """
        _check_header(data, source)
        try:
            return cls(
                schema_version=int(data["schema_version"]),
                created=str(data.get("created", "")),
                infership=str(data.get("infership", "")),
                fingerprint=str(data["fingerprint"]),
                environment=dict(data["environment"]),
                config=dict(data.get("config") or {}),
                runs=tuple(_parse_run(r, i, "runs", source) for i, r in enumerate(data["runs"])),
                overhead=tuple(
                    _parse_run(r, i, "overhead", source) for i, r in enumerate(data.get("overhead") or ())
                ),
                skipped=tuple(SkippedRun.from_dict(s) for s in data.get("skipped") or ()),
            )
        except ResultsError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ResultsError(f"{source}: malformed results file ({_describe(exc)})") from exc


def _parse_run(data: Any, index: int, section: str, source: str) -> RunResult:
    try:
        return RunResult.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ResultsError(f"{source}: {section}[{index}] is malformed ({_describe(exc)})") from exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return f"{type(exc).__name__}: {exc}"


def _check_header(data: Any, source: str) -> None:
    if not isinstance(data, Mapping):
        raise ResultsError(
            f"{source}: expected a JSON object with format {FORMAT!r}, got a JSON {type(data).__name__}"
        )
    fmt = data.get("format")
    if fmt != FORMAT:
        guess = ""
        if "benchmarks" in data and "machine_info" in data:
            guess = " (it looks like a pytest-benchmark file: compare those with pytest --benchmark-compare)"
        elif "variants" in data and "inputs" in data:
            guess = " (it looks like an artifact manifest.json)"
        raise ResultsError(
            f'{source}: not an infership benchmark results file: expected "format": {FORMAT!r}, '
            f"got {fmt!r}{guess}"
        )
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(
            f"{source}: results schema_version {version!r} is not supported (this infership reads "
            f"{SCHEMA_VERSION}); re-run the benchmark with this version"
        )


def load_results(path: str | os.PathLike[str]) -> BenchResults:
    """Read a results JSON file.

    Args:
        path: The file written by :func:`save_results` or ``infership bench --json``.

    Returns:
        The parsed :class:`BenchResults`.

    Raises:
        ResultsError: The file is missing, unreadable, not JSON, foreign, of another schema version, or
            malformed.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ResultsError(f"results file not found: {p}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{p}: cannot read ({type(exc).__name__}: {exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{p}: not valid JSON ({exc})") from exc
    return BenchResults.from_dict(data, source=str(p))


def results_to_json(results: BenchResults) -> str:
    """Indented JSON, except that each run's ``samples_ms`` stays on one line (files stay small and
    diffable: one line per run rather than one per sample)."""
    data = results.to_dict()
    packed: dict[str, str] = {}
    for section in ("runs", "overhead"):
        for i, run in enumerate(data[section]):
            token = f"@@samples:{section}:{i}@@"
            packed[json.dumps(token)] = json.dumps(run["samples_ms"], separators=(",", ":"))
            run["samples_ms"] = token
    text = json.dumps(data, indent=1)
    for token, samples in packed.items():
        text = text.replace(token, samples, 1)
    return text + "\n"


def save_results(results: BenchResults, path: str | os.PathLike[str]) -> Path:
    """Write ``results`` as JSON, atomically (a temporary file in the same directory, then rename).

    Args:
        results: What to write.
        path: Destination file; parent directories are created.

    Returns:
        The path written.
    """
    from infership.runtime.atomic import write_text_atomic

    return write_text_atomic(path, results_to_json(results))
