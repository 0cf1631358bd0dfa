"""One scenario on one loaded predictor, recorded as a :class:`~infership.bench.results.RunResult` with
the predictor's metadata, placement, settings and the variant's validation figures."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from infership.runtime.backend import PerformanceHint
from infership.runtime.errors import InvalidInputError
from infership.runtime.predictor import Predictor
from infership.runtime.text import TextEncoder

from .inputs import DEFAULT_POOL_SIZE, InputPool, array_pool, image_pool, random_pool, token_pool
from .results import ColdStart, RunResult, RunSettings, ServerOutcome
from .scenarios import Measurement, Scenario, StopRule, run_scenario
from .stats import summarize


def make_pool(
    predictor: Predictor,
    *,
    batch_size: int,
    size: int = DEFAULT_POOL_SIZE,
    seed: int = 0,
    shapes: Mapping[str, Sequence[int]] | None = None,
    inputs: Mapping[str, Any] | None = None,
    include_preprocessing: bool = False,
    image_size: tuple[int, int] | None = None,
    sequence: int | None = None,
    replay: str | os.PathLike[str] | None = None,
    padding: str = "longest",
) -> InputPool:
    """The distinct inputs to rotate through ``predictor`` at ``batch_size``: raw images through the
    artifact's preprocessing, token batches made with the artifact's tokenizer, real samples, or random
    tensors from the input specs.

    Args:
        predictor: The loaded predictor (its specs and manifest decide the feeds).
        batch_size: Items per call.
        size: Distinct inputs.
        seed: Seed of random inputs.
        shapes: Input name → full shape, for dynamic non-batch axes.
        inputs: Input name → array or ``.npy`` path of real samples (axis 0: samples); with
            ``include_preprocessing``, raw uint8 images for the preprocessed input.
        include_preprocessing: Feed raw HWC uint8 images so the artifact's preprocessing is timed too.
        image_size: Random raw image (height, width) with ``include_preprocessing``.
        sequence: Token batches of rows this many tokens long (text encoders).
        replay: Token batches following the lengths of the texts in this file (text encoders).
        padding: How token batches are padded (:data:`~infership.bench.inputs.PADDINGS`).

    Returns:
        The :class:`~infership.bench.inputs.InputPool`.

    Raises:
        InvalidInputError: Preprocessing asked for an artifact without it, token inputs for an artifact
            without a tokenizer, or inputs that do not fit.
    """
    if sequence is not None or replay is not None:
        encoder = text_encoder(predictor)
        return token_pool(
            encoder, batch_size=batch_size, sequence=sequence, replay=replay, padding=padding, size=size,
            seed=seed,
        )  # fmt: skip
    if include_preprocessing:
        pre = predictor.manifest.preprocessing
        if pre is None:
            raise InvalidInputError(
                f"include_preprocessing: artifact {predictor.manifest.name!r} records no preprocessing"
            )
        return image_pool(
            pre, batch_size=batch_size, image_size=image_size, images=(inputs or {}).get(pre.input),
            size=size, seed=seed,
        )  # fmt: skip
    if inputs:
        return array_pool(predictor.inputs, inputs, batch_size=batch_size, size=size)
    try:
        return random_pool(predictor.inputs, batch_size=batch_size, shapes=shapes, size=size, seed=seed)
    except InvalidInputError as exc:
        if predictor.manifest.tokenizer is None or shapes:
            raise
        raise InvalidInputError(f"{exc} — or, for this text encoder, --seq-len N or --replay FILE") from exc


def text_encoder(predictor: Predictor) -> TextEncoder:
    """The tokenizer of ``predictor``'s artifact, for token batches.

    Raises:
        InvalidInputError: The artifact has no token inputs (no tokenizer recorded for all its inputs).
    """
    m = predictor.manifest
    tok = m.tokenizer
    names = sorted(s.name for s in predictor.inputs)
    if tok is None or sorted(tok.inputs) != names:
        raise InvalidInputError(
            f"sequence lengths / replay need token inputs: artifact {m.name!r} has inputs {names} and "
            + ("no tokenizer" if tok is None else f"a tokenizer for {sorted(tok.inputs)}")
            + " (use --shape or --inputs for its tensors)"
        )
    return TextEncoder(tok, predictor.artifact.root)


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
    opts = dict(load_options) or recorded_options(predictor)
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
        tokens=pool.tokens,
    )
    summary = summarize(m.latencies_ms)
    server = None
    key_extra: list[str] = list(pool.key)
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


def recorded_options(predictor: Predictor) -> dict[str, Any]:
    """The options a predictor was loaded with (``Predictor.options``), as recorded settings."""
    o = predictor.options
    return {
        "intra_op_threads": o.intra_op_threads,
        "inter_op_threads": o.inter_op_threads,
        "num_streams": o.num_streams,
        "hint": PerformanceHint(o.hint).value,
    }
