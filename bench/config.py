"""What a benchmark sweep measures: the options (:class:`BenchConfig`), the runs they plan
(:func:`plan_runs`), and list parsing for the command line.

Example::

    from infership.bench import BenchConfig, Scenario, run_sweep, save_results
    config = BenchConfig(artifact="artifacts/resnet", backends=("ort-cpu", "openvino"), batch_sizes=(1, 8),
                         scenarios=(Scenario.SINGLE_STREAM, Scenario.OFFLINE), duration_s=5)
    save_results(run_sweep(config), "bench.json")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from infership.runtime.errors import InvalidInputError

from .inputs import DEFAULT_POOL_SIZE, parse_padding
from .scenarios import Scenario, StopRule

#: The precision meaning "what ``Predictor.load`` opens when given none" (profile, rule, else fp32).
AUTO = "auto"


#: ``concurrency`` meaning "the device's best parallelism": the loaded Predictor's ``optimal_concurrency``
#: (OpenVINO's optimal number of infer requests, else 1) for offline and server runs, as MLPerf's offline
#: scenario means "as fast as the system can go"; 1 for multi-stream, whose streams are the workload's own
#: (cameras, say). Written ``auto`` on the command line; recorded results carry the number that ran.
AUTO_CONCURRENCY = 0


def parse_concurrency(text: str | Sequence[str]) -> tuple[int, ...]:
    """``"auto,1,4"`` → ``(AUTO_CONCURRENCY, 1, 4)``."""
    return parse_list(text, cast=lambda v: AUTO_CONCURRENCY if v.lower() == AUTO else int(v))


def resolve_concurrency(run: PlannedRun, predictor: Any) -> PlannedRun:
    """``run`` with :data:`AUTO_CONCURRENCY` replaced by the callers it means for ``predictor`` (a
    :class:`~infership.runtime.Predictor`, whose ``optimal_concurrency`` is at least 1)."""
    if run.concurrency != AUTO_CONCURRENCY:
        return run
    n = predictor.optimal_concurrency if run.scenario in (Scenario.OFFLINE, Scenario.SERVER) else 1
    return replace(run, concurrency=n)


def load_precision(precision: str) -> str | None:
    """``Predictor.load``'s ``precision`` for a planned one: ``None`` for :data:`AUTO` (production's default
    load), else the precision itself."""
    return None if precision == AUTO else precision


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What to measure. Every field is keyword-only.

    Args:
        artifact: Artifact directory or ``.onnx`` file.
        backends: Backend names. ``"auto"`` loads the first backend that can run here in the Predictor's
            fixed preference order (on an x86 CPU ``openvino``, then ``ort-cpu``, then ``torch``; see
            :mod:`infership.runtime.selection`): an order, not a measurement. To compare backends, list
            them.
        precisions: Variant precisions to load (``fp32``, ``fp16``, ``int8``), or ``auto`` (the default):
            what ``Predictor.load`` opens without a precision — the deployment profile for this machine, else
            the documented rule (a validated int8 variant on the CPU), else fp32. Results name what ran.
        batch_sizes: Items per call.
        concurrency: Parallel callers (offline, server) or streams (multi-stream); single-stream always
            runs at 1. :data:`AUTO_CONCURRENCY` (the default, ``auto`` on the command line): the device's
            best parallelism for offline and server runs (OpenVINO's optimal number of infer requests for
            the loaded model, else 1), 1 for multi-stream.
        scenarios: Load patterns.
        device: Device for every backend (``None``: each backend's default).
        duration_s, max_duration_s, min_queries, max_queries, stability_tolerance: The stop rule
            (see :class:`~infership.bench.scenarios.StopRule`).
        warmup_queries: Calls per caller before measuring.
        warmup_s: Warm up at least this long as well (default: 10% of ``duration_s``, at most 2 s).
        intra_op_threads, inter_op_threads, num_streams: Passed to ``Predictor.load`` and recorded.
        hint: ``"latency"`` or ``"throughput"`` for every run; ``None``: throughput for offline, latency
            otherwise.
        shapes: Input name → full shape, for dynamic non-batch axes.
        inputs: Input name → ``.npy`` path (or array) of real samples, axis 0 indexing samples. With
            ``include_preprocessing``, the single entry is an array of uint8 images ``[N, H, W(, C)]``.
        include_preprocessing: Feed raw uint8 images so the artifact's preprocessing is timed too.
        image_size: Raw random image (height, width) with ``include_preprocessing``.
        pool_size: Distinct inputs rotated through.
        target_qps: Server arrival rate (``None``: half the warm-up throughput; give one for CI).
        latency_bound_ms: Server p99 bound to judge.
        measure_overhead: Also run the fake backend to measure the harness's own overhead.
        rounds: Measure every run in this many rounds, round-robin over the whole sweep (all predictors
            stay loaded), each ``1/rounds`` of the duration and query counts. Runs of one sweep then see
            the same machine conditions, stability asks whether the rounds agree, and compare's
            bootstrap resamples rounds, so the machine's drift widens the interval instead of failing CI.
        seed: Seed for random inputs and arrival times.
        validation: A validation set (anything :func:`infership.calibration.from_spec` reads: an image
            folder, an ``.npz``, ``FILE.py:FUNCTION``...) each loaded predictor is run on; the task's score
            measured there replaces the manifest's figures in the runs' ``accuracy`` record
            (:mod:`infership.bench.validation`).
        reference: Time the reference workload (:mod:`infership.bench.reference`, a few ms) before every
            round, so a later comparison can take the machine's speed out.
        seq_lens: Text encoders: sequence lengths to sweep, in tokens (each a run per batch size, keyed
            ``sequence=N``); the inputs are token batches made with the artifact's tokenizer.
        replay: Text encoders: a text file (one text per line) whose texts' token lengths the batches
            follow, in file order (runs keyed ``sequence=replay``); with ``seq_lens``, one more point.
        padding: How each token batch is padded (swept when several): ``longest`` (to its longest row,
            what ``Predictor.predict`` does with texts), ``max_length`` (to the tokenizer's maximum) or
            ``bucket`` (up to the next of 8, 16, 32, ... tokens).

    Raises:
        InvalidInputError: An empty list, a batch size or concurrency below 1, an unknown scenario or hint,
            ``rounds < 1``, stop options that contradict each other, a sequence length below 1, an unknown
            padding, or token options mixed with ``shapes`` / ``inputs`` / ``include_preprocessing``.
    """

    artifact: str | os.PathLike[str]
    backends: tuple[str, ...] = ("auto",)
    precisions: tuple[str, ...] = ("auto",)
    batch_sizes: tuple[int, ...] = (1,)
    concurrency: tuple[int, ...] = (AUTO_CONCURRENCY,)
    scenarios: tuple[Scenario, ...] = (Scenario.SINGLE_STREAM,)
    device: str | None = None
    duration_s: float | None = 10.0
    max_duration_s: float | None = None
    min_queries: int = 20
    max_queries: int | None = None
    stability_tolerance: float = 0.10
    warmup_queries: int = 10
    warmup_s: float | None = None
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    num_streams: int | None = None
    hint: str | None = None
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    include_preprocessing: bool = False
    image_size: tuple[int, int] | None = None
    pool_size: int = DEFAULT_POOL_SIZE
    target_qps: float | None = None
    latency_bound_ms: float | None = None
    measure_overhead: bool = True
    rounds: int = 1
    seed: int = 0
    validation: str | None = None
    reference: bool = True
    seq_lens: tuple[int, ...] = ()
    replay: str | os.PathLike[str] | None = None
    padding: tuple[str, ...] = ("longest",)

    def __post_init__(self) -> None:
        for name in ("backends", "precisions", "batch_sizes", "concurrency", "scenarios"):
            values = tuple(dict.fromkeys(getattr(self, name)))
            if not values:
                raise InvalidInputError(f"BenchConfig.{name} is empty: give at least one value")
            object.__setattr__(self, name, values)
        scenarios = (s if isinstance(s, Scenario) else Scenario.parse(s) for s in self.scenarios)
        object.__setattr__(self, "scenarios", tuple(dict.fromkeys(scenarios)))
        bad = [v for v in self.batch_sizes if int(v) < 1]
        if bad:
            raise InvalidInputError(f"batch sizes must be >= 1, got {bad}")
        bad = [v for v in self.concurrency if int(v) < 0]
        if bad:
            raise InvalidInputError(f"concurrency must be >= 1 (or {AUTO_CONCURRENCY}: auto), got {bad}")
        if self.rounds < 1:
            raise InvalidInputError(f"rounds must be >= 1, got {self.rounds}")
        if self.hint not in (None, "latency", "throughput"):
            raise InvalidInputError(f"hint must be 'latency', 'throughput' or None, got {self.hint!r}")
        self.stop_rule()  # validates the stop options
        self._check_tokens()

    def _check_tokens(self) -> None:
        seq = tuple(dict.fromkeys(int(n) for n in self.seq_lens))
        padding = tuple(dict.fromkeys(parse_padding(p) for p in self.padding))
        if not padding:
            raise InvalidInputError("BenchConfig.padding is empty: give at least one value")
        object.__setattr__(self, "seq_lens", seq)
        object.__setattr__(self, "padding", padding)
        if any(n < 1 for n in seq):
            raise InvalidInputError(f"sequence lengths must be >= 1, got {list(seq)}")
        if not self.token_inputs:
            if padding != ("longest",):
                raise InvalidInputError(
                    "padding applies to token inputs: give sequence lengths or a replay file"
                )
            return
        mixed = [n for n, v in (("shapes", self.shapes), ("inputs", self.inputs)) if v]
        mixed += ["include_preprocessing"] if self.include_preprocessing else []
        if mixed:
            raise InvalidInputError(
                f"sequence lengths / replay make the inputs (token batches); give them without {', '.join(mixed)}"
            )

    @property
    def token_inputs(self) -> bool:
        """Whether the inputs are token batches (sequence lengths or a replay file were given)."""
        return bool(self.seq_lens) or self.replay is not None

    def token_shapes(self) -> tuple[TokenShape | None, ...]:
        """The token shapes the sweep runs (``(None,)`` without token inputs): each sequence length, then the
        replay file, each at every padding."""
        if not self.token_inputs:
            return (None,)
        points: list[int | None] = [*self.seq_lens, *([None] if self.replay is not None else [])]
        return tuple(TokenShape(n, pad) for n in points for pad in self.padding)

    @property
    def effective_warmup_s(self) -> float:
        if self.warmup_s is not None:
            return self.warmup_s
        return min(2.0, 0.1 * self.duration_s) if self.duration_s else 0.0

    def stop_rule(self) -> StopRule:
        """The :class:`StopRule` these options describe."""
        return StopRule(
            duration_s=self.duration_s,
            max_duration_s=self.max_duration_s,
            min_queries=self.min_queries,
            max_queries=self.max_queries,
            stability_tolerance=self.stability_tolerance,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["artifact"] = os.fspath(self.artifact)
        d["scenarios"] = [s.value for s in self.scenarios]
        d["shapes"] = {k: list(v) for k, v in self.shapes.items()}
        d["replay"] = None if self.replay is None else os.fspath(self.replay)
        d["inputs"] = {
            k: (os.fspath(v) if isinstance(v, (str, os.PathLike)) else "<array>")
            for k, v in self.inputs.items()
        }
        return d


@dataclass(frozen=True)
class TokenShape:
    """One shape bucket of a text encoder's sweep: rows of ``sequence`` tokens (``None``: the replay
    file's lengths), padded by ``padding``."""

    sequence: int | None
    padding: str = "longest"

    def describe(self) -> str:
        pad = "" if self.padding == "longest" else f" padding={self.padding}"
        return f"sequence={'replay' if self.sequence is None else self.sequence}{pad}"


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep, before it is measured (``tokens``: its shape bucket, for text encoders)."""

    backend: str
    precision: str
    scenario: Scenario
    batch_size: int
    concurrency: int
    tokens: TokenShape | None = None

    @property
    def hint(self) -> str:
        return "throughput" if self.scenario is Scenario.OFFLINE else "latency"

    def describe(self) -> str:
        conc = AUTO if self.concurrency == AUTO_CONCURRENCY else self.concurrency
        out = f"{self.backend} {self.precision} {self.scenario.value} b{self.batch_size} c{conc}"
        return out + (f" {self.tokens.describe()}" if self.tokens is not None else "")


def plan_runs(config: BenchConfig) -> list[PlannedRun]:
    """Every (backend, precision, scenario, batch size, concurrency, token shape) the sweep will run, in
    order.

    Single-stream is one query at a time by definition, so it runs once per batch size at concurrency 1.
    """
    out: list[PlannedRun] = []
    for backend in config.backends:
        for precision in config.precisions:
            for scenario in config.scenarios:
                conc = (1,) if scenario is Scenario.SINGLE_STREAM else config.concurrency
                for tokens in config.token_shapes():
                    for b in config.batch_sizes:
                        for c in dict.fromkeys(conc):
                            out.append(PlannedRun(backend, precision, scenario, int(b), int(c), tokens))
    return out


def parse_list(text: str | Sequence[str], *, cast: Callable[[str], Any] = str) -> tuple[Any, ...]:
    """``"1,8,32"`` (or several such strings) → ``(1, 8, 32)`` with ``cast`` applied; order kept, no duplicates.

    Raises:
        InvalidInputError: An empty list or an item ``cast`` rejects.
    """
    parts = [text] if isinstance(text, str) else list(text)
    items = [p.strip() for chunk in parts for p in chunk.split(",") if p.strip()]
    if not items:
        raise InvalidInputError(f"expected a comma-separated list, got {text!r}")
    try:
        return tuple(dict.fromkeys(cast(i) for i in items))
    except ValueError as exc:
        raise InvalidInputError(f"cannot parse {text!r}: {exc}") from exc
