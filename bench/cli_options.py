"""Command-line options shared by ``infership bench`` and ``infership compare --rerun``: what to measure
(backends, precisions, batch sizes, scenarios, durations, threads, inputs, a validation set), and parsing
helpers (percentages, image sizes, the rich console).

Only argparse is imported at module level.
"""

from __future__ import annotations

import argparse
from typing import Any

SCENARIOS = "single-stream, multi-stream, server, offline"


def fraction(text: str) -> float:
    """``"10%"`` → 0.10; ``"0.1"`` → 0.1. A bare number above 1 is refused (write ``10%``)."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a percentage like 10% or a fraction like 0.1, got {text!r}"
        ) from None
    if not t.endswith("%") and value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is ambiguous: write {value:g}% or {value / 100:g}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative value, got {text!r}")
    return value


def fraction_or_off(text: str) -> float:
    """Like :func:`fraction`; ``off`` disables the check (an infinite threshold)."""
    if text.strip().lower() in ("off", "none"):
        return float("inf")
    return fraction(text)


def hw(text: str) -> tuple[int, int]:
    """``--image-size``: ``"256"`` or ``"256x192"`` (height × width), read by the calibration data layer."""
    from infership.calibration import parse_hw
    from infership.runtime.errors import InvalidInputError

    try:
        return parse_hw(text, what="--image-size")
    except InvalidInputError as exc:
        # argparse shows an ArgumentTypeError's message; any other error becomes "invalid _hw value"
        raise argparse.ArgumentTypeError(str(exc)) from None


def console(*, stderr: bool = False) -> Any:
    """A rich console; at least 160 columns when not a terminal (CI logs), so tables are not squashed."""
    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal and console.width < 160:
        console = Console(stderr=stderr, width=160)
    return console


def add_measure_options(
    p: argparse.ArgumentParser, *, duration: float, duration_help: str, max_duration_help: str
) -> list[argparse.Action]:
    """Add the options saying what to measure and how (shared by ``bench`` and ``compare --rerun``).

    Returns:
        The actions added (``compare`` refuses them on stored results rather than ignore them).
    """
    added: list[argparse.Action] = []
    add = p.add_argument

    def record(*args: Any, **kwargs: Any) -> argparse.Action:
        action = add(*args, **kwargs)
        added.append(action)
        return action

    record(
        "--backend",
        default="auto",
        help="backends, e.g. ort-cpu,openvino (default: auto, the first that can run here in the Predictor's "
        "fixed preference order: an order, not a measurement)",
    )
    record(
        "--precision",
        default="auto",
        help="variant precisions, e.g. fp32,int8 (default: auto, what Predictor.load opens without one: the "
        "deployment profile for this machine, else a validated int8 variant on the CPU, else fp32)",
    )
    record("--batch", default="1", help="batch sizes (default: 1)")
    record(
        "--concurrency",
        default="auto",
        help="parallel callers / streams (default: auto — offline and server: the device's best parallelism, "
        "OpenVINO's optimal number of infer requests or 1; multi-stream: 1; single-stream is always 1)",
    )
    record("--scenario", default="single-stream", help=f"scenarios: {SCENARIOS} (default: single-stream)")
    record("--duration", type=float, default=duration, help=duration_help)
    record("--max-duration", type=float, help=max_duration_help)
    record("--warmup", type=int, default=10, help="warm-up calls per caller (default: 10)")
    record(
        "--warmup-seconds", type=float, help="warm up at least this long (default: 10%% of --duration, ≤ 2 s)"
    )
    record("--device", help="device for every backend (cpu, cuda, cuda:1, an OpenVINO device)")
    record("--threads", type=int, help="intra-op threads (default: the runtime's)")
    record("--inter-op-threads", type=int, help="inter-op threads")
    record("--streams", type=int, help="OpenVINO streams (default: chosen by the hint)")
    record(
        "--hint", choices=("latency", "throughput"), help="performance hint (default: throughput for offline)"
    )
    record(
        "--shape",
        action="append",
        default=[],
        metavar="NAME:DxDx..",
        help="shape for dynamic axes, repeatable",
    )
    record("--inputs", action="append", default=[], metavar="[NAME=]FILE.npy",
                   help="real inputs, axis 0 = samples; with --include-preprocessing, uint8 images [N,H,W(,C)]")  # fmt: skip
    record(
        "--include-preprocessing",
        action="store_true",
        help="feed raw uint8 images through the artifact's preprocessing",
    )
    record(
        "--image-size",
        type=hw,
        help="raw random image size HxW (or N for a square) with --include-preprocessing",
    )
    record(
        "--seq-len",
        metavar="N[,N...]",
        help="text encoders: sequence lengths in tokens to sweep, e.g. 8,32,128 (token batches made with the "
        "artifact's tokenizer; runs keyed sequence=N)",
    )
    record(
        "--replay",
        metavar="FILE",
        help="text encoders: a text file, one text per line; batches follow its texts' token lengths (runs "
        "keyed sequence=replay)",
    )
    record(
        "--padding",
        default="longest",
        metavar="longest|max_length|bucket",
        help="text encoders: pad each batch to its longest row (default), to the tokenizer's maximum, or up "
        "to the next bucket of 8, 16, 32... tokens; several (comma-separated) are swept",
    )
    record("--pool", type=int, default=16, help="distinct inputs to rotate (default: 16)")
    record(
        "--target-qps", type=float, help="server scenario arrival rate (default: half the warm-up throughput)"
    )
    record("--latency-bound-ms", type=float, help="server scenario p99 bound to judge")
    record("--seed", type=int, default=0, help="seed for inputs and arrival times")
    record(
        "--validation",
        metavar="SRC",
        help="validation set to re-measure accuracy on with the artifact's task: an image folder (class "
        "sub-folders), an .npz/.npy file (labels under 'labels' or 'y'), for a text artifact a .txt (one text "
        "per line) or .tsv (label<TAB>text) file, SCHEME:ARG or FILE.py:FUNCTION",
    )
    return added


def config_from_args(args: argparse.Namespace, *, artifact: str | None = None) -> Any:
    """The :class:`~infership.bench.config.BenchConfig` the options describe (``artifact``: instead of
    ``args.artifact``). Options only ``bench`` has take their defaults when absent."""
    from infership.calibration import parse_named_shape

    from .config import BenchConfig, parse_concurrency, parse_list
    from .scenarios import Scenario

    scenarios = parse_list(args.scenario, cast=Scenario.parse)
    shapes = dict(parse_named_shape(s, what="--shape", require_name=True) for s in args.shape)
    inputs: dict[str, str] = {}
    for item in args.inputs:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = "", item
        inputs[name] = path
    backend, device = args.backend, args.device
    if getattr(args, "url", None):
        if backend != "auto" or device is not None:
            from infership.runtime.errors import InvalidInputError

            raise InvalidInputError(
                "--url URL means --backend http --device URL: give it without --backend/--device"
            )
        backend, device = "http", args.url
    return BenchConfig(
        artifact=artifact if artifact is not None else args.artifact,
        backends=parse_list(backend),
        precisions=parse_list(args.precision),
        batch_sizes=parse_list(args.batch, cast=int),
        concurrency=parse_concurrency(args.concurrency),
        scenarios=scenarios,
        device=device,
        duration_s=args.duration if args.duration > 0 else None,
        max_duration_s=args.max_duration,
        min_queries=getattr(args, "min_queries", 20),
        max_queries=getattr(args, "count", None),
        stability_tolerance=getattr(args, "stability", 0.10),
        warmup_queries=args.warmup,
        warmup_s=args.warmup_seconds,
        intra_op_threads=args.threads,
        inter_op_threads=args.inter_op_threads,
        num_streams=args.streams,
        hint=args.hint,
        shapes=shapes,
        inputs=inputs,
        include_preprocessing=args.include_preprocessing,
        image_size=args.image_size,
        pool_size=args.pool,
        target_qps=args.target_qps,
        latency_bound_ms=args.latency_bound_ms,
        measure_overhead=not getattr(args, "no_overhead", False),
        rounds=getattr(args, "rounds", 1),
        seed=args.seed,
        validation=args.validation,
        reference=not getattr(args, "no_reference", False),
        seq_lens=parse_list(args.seq_len, cast=int) if args.seq_len else (),
        replay=args.replay,
        padding=parse_list(args.padding),
    )


def resolve_unnamed_inputs(config: Any) -> Any:
    """``--inputs FILE.npy`` without a name means the single input (or the preprocessed one)."""
    if "" not in config.inputs:
        return config
    from dataclasses import replace

    from infership.runtime.artifact import Artifact
    from infership.runtime.errors import InvalidInputError

    manifest = Artifact.load(config.artifact).manifest
    if config.include_preprocessing and manifest.preprocessing is not None:
        name = manifest.preprocessing.input
    elif len(manifest.inputs) == 1:
        name = manifest.inputs[0].name
    else:
        names = [s.name for s in manifest.inputs]
        raise InvalidInputError(
            f"--inputs FILE without NAME=: the model has {len(names)} inputs {names}; use NAME=FILE"
        )
    inputs = dict(config.inputs)
    inputs[name] = inputs.pop("")
    return replace(config, inputs=inputs)
