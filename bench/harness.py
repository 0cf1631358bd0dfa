"""The sweep: load each backend × precision once (timing the cold start), measure every planned run, in
rounds when asked, record what could not run, and measure the harness's own overhead on the fake backend.

Example::

    from infership.bench import BenchConfig, Scenario, run_sweep, save_results
    config = BenchConfig(artifact="artifacts/resnet", backends=("ort-cpu", "openvino"), batch_sizes=(1, 8),
                         scenarios=(Scenario.SINGLE_STREAM, Scenario.OFFLINE), duration_s=5)
    save_results(run_sweep(config), "bench.json")
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any

from infership.runtime import hardware
from infership.runtime.artifact import Artifact
from infership.runtime.errors import ArtifactError, BackendUnavailable, InferenceError, InvalidInputError
from infership.runtime.predictor import Predictor
from infership.runtime.registry import get_backend
from infership.runtime.timing import timed

from .config import BenchConfig, PlannedRun, load_precision, plan_runs, resolve_concurrency
from .inputs import InputPool
from .reference import reference_ms
from .results import BenchResults, ColdStart, RunResult, SkippedRun
from .runner import make_pool, result_from_measurement, run_benchmark
from .scenarios import Measurement, StopRule, merge_rounds, run_scenario

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
"""``progress(done, total, description)``: called before each run and once at the end."""

# The harness-overhead runs on the fake backend are short: they measure microseconds.
_OVERHEAD_STOP = StopRule(duration_s=0.3, max_duration_s=0.3, min_queries=50, max_queries=5000)


def _pool(
    predictor: Predictor, config: BenchConfig, batch_size: int, run: PlannedRun | None = None
) -> InputPool:
    """The input pool ``config`` asks for (see :func:`~infership.bench.runner.make_pool`); token batches
    of ``run``'s shape bucket (default: the sweep's first)."""
    tokens = run.tokens if run is not None else config.token_shapes()[0]
    return make_pool(
        predictor, batch_size=batch_size, size=config.pool_size, seed=config.seed, shapes=config.shapes,
        inputs=config.inputs, include_preprocessing=config.include_preprocessing,
        image_size=config.image_size, sequence=tokens.sequence if tokens else None,
        replay=config.replay if tokens and tokens.sequence is None else None,
        padding=tokens.padding if tokens else "longest",
    )  # fmt: skip


def load_timed(
    artifact: Artifact | str | os.PathLike[str], backend: str, precision: str, options: Mapping[str, Any]
) -> tuple[Predictor, float]:
    """``Predictor.load`` timed with the one latency timer; returns the predictor and milliseconds."""
    chosen = load_precision(precision)
    predictor, ms = timed(lambda: Predictor.load(artifact, backend=backend, precision=chosen, **options))
    return predictor, ms


def first_inference_ms(predictor: Predictor, item: Any) -> float:
    """Time one ``predict`` call (the first after loading is the cold one), in milliseconds."""
    return timed(lambda: predictor.predict(item))[1]


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
    refs: dict[int, list[float]] = {i: [] for i in range(len(planned))}
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
                        if config.validation is not None:
                            from .validation import measured_record

                            entry.record = measured_record(entry.predictor, config.validation)
                entry = loaded[gkey]
                if entry is None:
                    done += len(members)
                    continue
                for i in members:
                    p = planned[i] = resolve_concurrency(planned[i], entry.predictor)
                    if progress:
                        progress(
                            done, total, p.describe() + (f" (round {r + 1}/{rounds})" if rounds > 1 else "")
                        )
                    done += 1
                    if i in failed:
                        continue
                    try:
                        if config.reference:
                            refs[i].append(reference_ms())
                        parts[i].append(_measure_round(entry, p, i, config, stop, parts[i]))
                    except InferenceError as exc:
                        # e.g. out of memory at a large batch: record it and measure the rest of the sweep
                        log.warning("%s failed: %s", p.describe(), exc)
                        skipped.append(
                            SkippedRun(p.backend, p.precision, f"{p.describe()} failed: {exc}", failed=True)
                        )
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
                        results[i] = replace(
                            results[i], reference_ms=tuple(refs[i]),
                            accuracy=entry.record if entry.record is not None else results[i].accuracy,
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
    record: dict[str, Any] | None = None  # figures measured on the validation set, if one was given


def _load_group(config: BenchConfig, gkey: tuple[str, str, str], skipped: list[SkippedRun]) -> _Loaded | None:
    backend, precision, hint = gkey
    options = load_options(config, hint)
    recorded = dict(options)
    if not applies_hint(backend):
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


def applies_hint(backend: str) -> bool:
    """Whether ``backend`` applies ``BackendOptions.hint`` (declared by the backend's ``honours``)."""
    if backend == "auto":
        return True  # the backend is chosen at load; the Predictor records the hint as ignored if it is
    try:
        return "hint" in get_backend(backend).honours
    except BackendUnavailable:
        return True  # the load below fails and records why


def _measure_round(
    entry: _Loaded, p: PlannedRun, index: int, config: BenchConfig, stop: StopRule, earlier: list[Measurement]
) -> Measurement:
    pool = entry.pools.get(index)
    if pool is None:
        pool = entry.pools[index] = _pool(entry.predictor, config, p.batch_size, p)
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
        plain = replace(config, include_preprocessing=False, inputs={})
    out = []
    with Predictor.load(art, backend="fake") as fake:
        for b in plain.batch_sizes:
            pool = _pool(fake, plain, b)
            out.append(run_benchmark(fake, batch_size=b, stop=_OVERHEAD_STOP, pool=pool, warmup_queries=20))
    return tuple(out)


def load_options(config: BenchConfig, hint: str) -> dict[str, Any]:
    """The ``Predictor.load`` options ``config`` asks for, with performance ``hint``."""
    opts: dict[str, Any] = {"hint": hint}
    for name in ("device", "intra_op_threads", "inter_op_threads", "num_streams"):
        value = getattr(config, name)
        if value is not None:
            opts[name] = value
    return opts
