"""The harness: load, time the cold start, warm up, run scenarios, and sweep backends × precisions ×
batch sizes × concurrency into one :class:`~infership.bench.results.BenchResults`.

Example::

    from infership.bench import BenchConfig, Scenario, run_sweep, save_results
    config = BenchConfig("artifacts/resnet", backends=("ort-cpu", "openvino"), batch_sizes=(1, 8),
                         scenarios=(Scenario.SINGLE_STREAM, Scenario.OFFLINE), duration_s=5)
    save_results(run_sweep(config), "bench.json")
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from infership.runtime import hardware
from infership.runtime.artifact import Artifact
from infership.runtime.errors import ArtifactError, BackendUnavailable, InferenceError, InvalidInputError
from infership.runtime.predictor import Predictor

from .inputs import DEFAULT_POOL_SIZE, InputPool, array_pool, image_pool, random_pool
from .results import BenchResults, ColdStart, RunResult, RunSettings, ServerOutcome, SkippedRun
from .scenarios import Measurement, Scenario, StopRule, merge_rounds, run_scenario
from .stats import summarize

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
"""``progress(done, total, description)``: called before each run and once at the end."""

# The harness-overhead runs on the fake backend are short: they measure microseconds.
_OVERHEAD_STOP = StopRule(duration_s=0.3, max_duration_s=0.3, min_queries=50, max_queries=5000)


@dataclass(frozen=True)
class BenchConfig:
    """What to measure. Every option is keyword-only except the artifact.

    Args:
        artifact: Artifact directory or ``.onnx`` file.
        backends: Backend names (``"auto"`` picks the fastest available).
        precisions: Variant precisions to load (``fp32``, ``fp16``, ``int8``).
        batch_sizes: Items per call.
        concurrency: Parallel callers (offline, server) or streams (multi-stream); single-stream always
            runs at 1.
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
    """

    artifact: str | os.PathLike[str]
    backends: tuple[str, ...] = ("auto",)
    precisions: tuple[str, ...] = ("fp32",)
    batch_sizes: tuple[int, ...] = (1,)
    concurrency: tuple[int, ...] = (1,)
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

    def __post_init__(self) -> None:
        for name in ("backends", "precisions", "batch_sizes", "concurrency", "scenarios"):
            values = tuple(dict.fromkeys(getattr(self, name)))
            if not values:
                raise InvalidInputError(f"BenchConfig.{name} is empty: give at least one value")
            object.__setattr__(self, name, values)
        object.__setattr__(self, "scenarios", tuple(dict.fromkeys(Scenario(s) for s in self.scenarios)))
        bad = [v for v in (*self.batch_sizes, *self.concurrency) if int(v) < 1]
        if bad:
            raise InvalidInputError(f"batch sizes and concurrency must be >= 1, got {bad}")
        if self.rounds < 1:
            raise InvalidInputError(f"rounds must be >= 1, got {self.rounds}")
        if self.hint not in (None, "latency", "throughput"):
            raise InvalidInputError(f"hint must be 'latency', 'throughput' or None, got {self.hint!r}")
        self.stop_rule()  # validates the stop options

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
        d["inputs"] = {
            k: (os.fspath(v) if isinstance(v, (str, os.PathLike)) else "<array>")
            for k, v in self.inputs.items()
        }
        return d


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep, before it is measured."""

    backend: str
    precision: str
    scenario: Scenario
    batch_size: int
    concurrency: int

    @property
    def hint(self) -> str:
        return "throughput" if self.scenario is Scenario.OFFLINE else "latency"

    def describe(self) -> str:
        return f"{self.backend} {self.precision} {self.scenario.value} b{self.batch_size} c{self.concurrency}"


def plan_runs(config: BenchConfig) -> list[PlannedRun]:
    """Every (backend, precision, scenario, batch size, concurrency) the sweep will run, in order.

    Single-stream is one query at a time by definition, so it runs once per batch size at concurrency 1.
    """
    out: list[PlannedRun] = []
    for backend in config.backends:
        for precision in config.precisions:
            for scenario in config.scenarios:
                conc = (1,) if scenario is Scenario.SINGLE_STREAM else config.concurrency
                for b in config.batch_sizes:
                    for c in dict.fromkeys(conc):
                        out.append(PlannedRun(backend, precision, scenario, int(b), int(c)))
    return out


def make_pool(predictor: Predictor, config: BenchConfig, batch_size: int) -> InputPool:
    """The input pool for ``predictor`` at ``batch_size`` as ``config`` asks (random, ``.npy`` or images).

    Raises:
        InvalidInputError: Preprocessing asked for an artifact without it, or inputs that do not fit.
    """
    if config.include_preprocessing:
        pre = predictor.manifest.preprocessing
        if pre is None:
            raise InvalidInputError(
                f"--include-preprocessing: artifact {predictor.manifest.name!r} records no preprocessing"
            )
        images = config.inputs.get(pre.input) if config.inputs else None
        return image_pool(
            pre,
            batch_size=batch_size,
            image_size=config.image_size,
            images=images,
            size=config.pool_size,
            seed=config.seed,
        )
    if config.inputs:
        return array_pool(predictor.inputs, config.inputs, batch_size=batch_size, size=config.pool_size)
    return random_pool(
        predictor.inputs, batch_size=batch_size, shapes=config.shapes, size=config.pool_size, seed=config.seed
    )


def run_benchmark(
    predictor: Predictor,
    *,
    scenario: Scenario | str = Scenario.SINGLE_STREAM,
    batch_size: int = 1,
    concurrency: int = 1,
    stop: StopRule | None = None,
    pool: InputPool | None = None,
    warmup_queries: int = 10,
    warmup_s: float = 0.0,
    target_qps: float | None = None,
    latency_bound_ms: float | None = None,
    cold_start: ColdStart | None = None,
    load_options: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> RunResult:
    """Measure one scenario on an already loaded predictor.

    Args:
        predictor: The predictor to drive (thread-safe).
        scenario: Load pattern.
        batch_size: Items per call (ignored for the pool when ``pool`` is given, but used for throughput).
        concurrency: Parallel callers / streams.
        stop: When to stop (default: 10 s, extended up to 20 s until stable).
        pool: Inputs to rotate (default: 16 distinct random tensors from the specs).
        warmup_queries: Calls per caller before measuring.
        warmup_s: And at least this many seconds.
        target_qps, latency_bound_ms: Server rate (``None``: half the warm-up throughput) and p99 bound.
        cold_start: Load and first-inference times, if the caller measured them.
        load_options: The options the predictor was loaded with (recorded as settings; default: the
            predictor's own ``options``).
        seed: Seed for random inputs and arrival times.

    Returns:
        The :class:`RunResult`.

    Raises:
        InvalidInputError: Inputs that do not fit the model. InferenceError: The runtime failed.
    """
    scenario = Scenario(scenario)
    stop = stop or StopRule()
    pool = pool or random_pool(predictor.inputs, batch_size=batch_size, seed=seed)
    opts = dict(load_options or {})
    m: Measurement = run_scenario(
        scenario,
        predictor.predict,
        pool,
        batch_size=batch_size,
        concurrency=concurrency,
        stop=stop,
        warmup_queries=warmup_queries,
        warmup_s=warmup_s,
        target_qps=target_qps,
        seed=seed,
    )
    return result_from_measurement(
        predictor, m, scenario=scenario, batch_size=batch_size, concurrency=concurrency, pool=pool,
        target_qps=target_qps, latency_bound_ms=latency_bound_ms, cold_start=cold_start, load_options=opts,
    )  # fmt: skip


def result_from_measurement(
    predictor: Predictor,
    m: Measurement,
    *,
    scenario: Scenario,
    batch_size: int,
    concurrency: int,
    pool: InputPool,
    target_qps: float | None,
    latency_bound_ms: float | None,
    cold_start: ColdStart | None,
    load_options: Mapping[str, Any],
) -> RunResult:
    """Turn a :class:`Measurement` into a :class:`RunResult` with the predictor's metadata and settings.

    ``target_qps`` is the rate the caller asked for (``None``: automatic), which goes into the run key.
    """
    opts = dict(load_options) or _options_of(predictor)
    ignored = set(predictor.placement.details.get("ignored_options", ()))
    hint = str(opts.get("hint") or "unknown")
    if "hint" in ignored:
        hint += " (not applied by this backend)"
    device = predictor.placement.device
    settings = RunSettings(
        intra_op_threads=opts.get("intra_op_threads"),
        inter_op_threads=None if "inter_op_threads" in ignored else opts.get("inter_op_threads"),
        num_streams=None if "num_streams" in ignored else opts.get("num_streams"),
        hint=hint,
        include_preprocessing=pool.include_preprocessing,
        host_device_copies="included" if device.lower().startswith(("cuda", "gpu")) else "none",
        input_source=pool.source,
        pool_size=len(pool),
        input_shapes=pool.shapes,
        warmup_queries=m.warmup_queries,
        warmup_s=m.warmup_s,
    )
    summary = summarize(m.latencies_ms)
    server = None
    key_extra: list[str] = []
    if pool.include_preprocessing:
        key_extra.append("preprocessing")
    if scenario is Scenario.SERVER:
        assert m.target_qps is not None
        key_extra.append(f"qps={target_qps:g}" if target_qps is not None else "qps=auto")
        server = ServerOutcome(
            target_qps=m.target_qps,
            target_qps_source="given" if target_qps is not None else "auto: half the warm-up throughput",
            achieved_qps=m.queries / m.wall_s if m.wall_s > 0 else 0.0,
            latency_bound_ms=latency_bound_ms,
            bound_met=None if latency_bound_ms is None else summary.p99 <= latency_bound_ms,
        )
    validation = predictor.variant.validation
    return RunResult(
        model=predictor.manifest.name,
        backend=predictor.backend,
        device=device,
        variant=predictor.variant.id,
        precision=predictor.variant.precision,
        scenario=scenario.value,
        batch_size=batch_size,
        concurrency=concurrency,
        latency_ms=summary,
        throughput=m.items / m.wall_s if m.wall_s > 0 else 0.0,
        queries_per_s=m.queries / m.wall_s if m.wall_s > 0 else 0.0,
        samples_ms=tuple(float(x) for x in np.asarray(m.latencies_ms)),
        duration_s=m.wall_s,
        stability=m.stability,
        settings=settings,
        cold_start=cold_start,
        placement=predictor.placement.to_dict(),
        accuracy=dict(validation) if validation else None,
        server=server,
        key_extra=tuple(key_extra),
        rounds=m.rounds,
    )


def load_timed(
    artifact: Artifact | str | os.PathLike[str], backend: str, precision: str, options: Mapping[str, Any]
) -> tuple[Predictor, float]:
    """``Predictor.load`` timed with ``perf_counter_ns``; returns the predictor and milliseconds."""
    t0 = time.perf_counter_ns()
    predictor = Predictor.load(artifact, backend=backend, precision=precision, **options)
    return predictor, (time.perf_counter_ns() - t0) / 1e6


def first_inference_ms(predictor: Predictor, item: Any) -> float:
    """Time one ``predict`` call (the first after loading is the cold one)."""
    t0 = time.perf_counter_ns()
    predictor.predict(item)
    return (time.perf_counter_ns() - t0) / 1e6


def run_sweep(config: BenchConfig, *, progress: Progress | None = None) -> BenchResults:
    """Run every planned configuration (see :func:`plan_runs`) and collect the results.

    A backend/precision that cannot be loaded (unavailable backend, no such variant), or a run whose
    runtime fails (``InferenceError``, e.g. out of memory at a large batch), is recorded in ``skipped`` with
    the reason and the sweep goes on; nothing silently disappears. Invalid inputs abort the sweep.

    Args:
        config: What to measure.
        progress: Called as ``progress(done, total, description)`` before each run (each round of each
            run) and at the end.

    Returns:
        The :class:`BenchResults` with the environment fingerprint and, unless disabled, the harness
        overhead measured on the fake backend.

    Raises:
        ArtifactError: The artifact cannot be opened.
        InvalidInputError: Inputs or shapes that do not fit the model.
    """
    from infership import __version__

    artifact = Artifact.load(config.artifact)
    planned = plan_runs(config)
    rounds = config.rounds
    total = len(planned) * rounds
    stop = config.stop_rule().split(rounds)
    skipped: list[SkippedRun] = []
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, p in enumerate(planned):
        groups.setdefault((p.backend, p.precision, config.hint or p.hint), []).append(i)
    parts: dict[int, list[Measurement]] = {i: [] for i in range(len(planned))}
    failed: set[int] = set()
    loaded: dict[tuple[str, str, str], _Loaded | None] = {}
    results: dict[int, RunResult] = {}
    done = 0
    with ExitStack() as stack:
        for r in range(rounds):
            last = r == rounds - 1
            for gkey, members in groups.items():
                if gkey not in loaded:
                    entry = loaded[gkey] = _load_group(config, gkey, skipped)
                    if entry is not None:
                        stack.enter_context(entry.predictor)
                entry = loaded[gkey]
                if entry is None:
                    done += len(members)
                    continue
                for i in members:
                    p = planned[i]
                    if progress:
                        progress(
                            done, total, p.describe() + (f" (round {r + 1}/{rounds})" if rounds > 1 else "")
                        )
                    done += 1
                    if i in failed:
                        continue
                    try:
                        parts[i].append(_measure_round(entry, p, i, config, stop, parts[i]))
                    except InferenceError as exc:
                        # e.g. out of memory at a large batch: record it and measure the rest of the sweep
                        log.warning("%s failed: %s", p.describe(), exc)
                        skipped.append(SkippedRun(p.backend, p.precision, f"{p.describe()} failed: {exc}"))
                        failed.add(i)
                        continue
                    if last:
                        m = merge_rounds(parts[i], tolerance=config.stability_tolerance)
                        results[i] = result_from_measurement(
                            entry.predictor, m, scenario=p.scenario, batch_size=p.batch_size,
                            concurrency=p.concurrency, pool=entry.pools[i], target_qps=config.target_qps,
                            latency_bound_ms=config.latency_bound_ms, cold_start=entry.cold_start,
                            load_options=entry.options,
                        )  # fmt: skip
                if rounds == 1:
                    entry.predictor.close()  # one group at a time holds memory; idempotent for the stack
    runs = [results[i] for i in sorted(results)]
    overhead: tuple[RunResult, ...] = ()
    if config.measure_overhead:
        if progress:
            progress(done, total, "harness overhead (fake backend)")
        try:
            overhead = measure_overhead(artifact, config)
        except InvalidInputError as exc:
            log.warning("harness overhead not measured: %s", exc)
            skipped.append(SkippedRun("fake", "fp32", f"harness overhead not measured: {exc}"))
    if progress:
        progress(total, total, "done")
    env = hardware.environment()
    return BenchResults(
        runs=tuple(runs),
        environment=env,
        fingerprint=hardware.fingerprint(env),
        overhead=overhead,
        skipped=tuple(skipped),
        config=config.to_dict(),
        infership=__version__,
    )


@dataclass
class _Loaded:
    """A predictor loaded for one (backend, precision, hint) group of a sweep, with what belongs to it."""

    predictor: Predictor
    options: dict[str, Any]
    load_ms: float
    cold_start: ColdStart | None = None
    pools: dict[int, InputPool] = field(default_factory=dict)


def _load_group(config: BenchConfig, gkey: tuple[str, str, str], skipped: list[SkippedRun]) -> _Loaded | None:
    backend, precision, hint = gkey
    options = _load_options(config, hint)
    recorded = dict(options)
    if not _applies_hint(backend):
        # Only backends with a performance hint get one; the record says so instead of naming a hint.
        del options["hint"]
        recorded["hint"] = "n/a (backend has no performance hint)"
    try:
        # From the path each time: a fresh Artifact re-verifies hashes, as a cold start in production does.
        predictor, load_ms = load_timed(config.artifact, backend, precision, options)
    except (BackendUnavailable, ArtifactError) as exc:
        if not any(s.backend == backend and s.precision == precision for s in skipped):
            log.warning("skipping %s %s: %s", backend, precision, exc)
            skipped.append(SkippedRun(backend, precision, str(exc)))
        return None
    return _Loaded(predictor, recorded, load_ms)


def _applies_hint(backend: str) -> bool:
    """Whether ``backend`` applies ``BackendOptions.hint`` (backends that do not declare it: assume so)."""
    from infership.runtime.errors import BackendUnavailable as _Unavailable
    from infership.runtime.registry import get_backend

    if backend == "auto":
        return True
    try:
        honours = getattr(get_backend(backend), "honours", None)
    except _Unavailable:
        return True  # the load below fails and records why
    return honours is None or "hint" in honours


def _measure_round(
    entry: _Loaded, p: PlannedRun, index: int, config: BenchConfig, stop: StopRule, earlier: list[Measurement]
) -> Measurement:
    pool = entry.pools.get(index)
    if pool is None:
        pool = entry.pools[index] = make_pool(entry.predictor, config, p.batch_size)
    if entry.cold_start is None:
        entry.cold_start = ColdStart(entry.load_ms, first_inference_ms(entry.predictor, pool[0]))
    # Later rounds of an automatic server rate keep the first round's rate: one run, one load.
    rate = config.target_qps if config.target_qps is not None or not earlier else earlier[0].target_qps
    return run_scenario(
        p.scenario, entry.predictor.predict, pool, batch_size=p.batch_size, concurrency=p.concurrency,
        stop=stop, warmup_queries=config.warmup_queries, warmup_s=config.effective_warmup_s,
        target_qps=rate, seed=config.seed,
    )  # fmt: skip


def measure_overhead(
    artifact: Artifact | str | os.PathLike[str], config: BenchConfig
) -> tuple[RunResult, ...]:
    """The harness's own cost per query: single-stream on the ``fake`` backend (an empty predictor that
    still checks inputs), one run per batch size, with the same inputs as the real runs except that raw
    images are replaced by tensors (preprocessing, when timed, is the model's cost, not the harness's).

    Returns:
        One :class:`RunResult` per batch size, backend ``fake``.
    """
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    plain = config
    if config.include_preprocessing:
        plain = BenchConfig(**{**_fields(config), "include_preprocessing": False, "inputs": {}})
    out = []
    with Predictor.load(art, backend="fake") as fake:
        for b in plain.batch_sizes:
            pool = make_pool(fake, plain, b)
            out.append(run_benchmark(fake, batch_size=b, stop=_OVERHEAD_STOP, pool=pool, warmup_queries=20))
    return tuple(out)


def _fields(config: BenchConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def _options_of(predictor: Predictor) -> dict[str, Any]:
    """The options a predictor was loaded with (``Predictor.options``), as recorded settings."""
    o = getattr(predictor, "options", None)
    if o is None:
        return {}
    hint = getattr(o, "hint", None)
    return {
        "intra_op_threads": o.intra_op_threads,
        "inter_op_threads": o.inter_op_threads,
        "num_streams": o.num_streams,
        "hint": getattr(hint, "value", hint),
    }


def _load_options(config: BenchConfig, hint: str) -> dict[str, Any]:
    opts: dict[str, Any] = {"hint": hint}
    for name in ("device", "intra_op_threads", "inter_op_threads", "num_streams"):
        value = getattr(config, name)
        if value is not None:
            opts[name] = value
    return opts


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
