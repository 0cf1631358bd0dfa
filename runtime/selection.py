"""Choosing where a model runs: the ``auto`` rule, variant choice, explicit fallback and autotune.

The ``auto`` rule (documented in the README): on a machine with a usable NVIDIA GPU, prefer ``ort-trt``,
then ``ort-cuda``, then ``torch`` on CUDA; on the CPU prefer ``openvino`` (x86), then ``ort-cpu``, then
``torch``. A backend is eligible only if ``check()`` passes and the artifact holds a variant it can open at
the requested precision. The order is a fixed rule, not a measurement: ``autotune=True`` times every
eligible backend on the model instead and keeps the fastest.

Given no precision or variant either, ``auto`` first opens the deployment profile measured for this machine
by ``infership optimize``, else an int8 variant validated within its accuracy budget and measured faster
than fp32 (the rule in :mod:`infership.runtime.profile`); the fixed order applies when neither does.

No silent fallback: a backend the caller named that cannot run raises, unless the caller gave a fallback
list; a fallback that was used (also a backend that passed ``check()`` under ``auto`` but failed to open) is
warned about and recorded in the placement.
"""

from __future__ import annotations

import logging
import platform
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np

from . import registry
from .artifact import PROGRAM_FORMATS, Artifact
from .backend import Backend, BackendOptions, Placement, Session
from .errors import ArtifactError, BackendUnavailable, InvalidInputError
from .manifest import Variant
from .spec import TensorSpec, random_array
from .timing import median_ms
from .verification import DONE, VerifiedOnFirstRun

if TYPE_CHECKING:
    from .profile import Plan

log = logging.getLogger(__name__)

GPU_ORDER = ("ort-trt", "ort-cuda", "torch")
CPU_ORDER = (
    ("openvino", "ort-cpu", "torch")
    if platform.machine().lower() in ("x86_64", "amd64")
    else ("ort-cpu", "openvino", "torch")
)

#: The BackendOptions fields a backend may or may not apply (``honours``).
OPTION_FIELDS = frozenset(f.name for f in fields(BackendOptions)) - {"device", "precision", "extra"}


class BackendFallbackWarning(UserWarning):
    """Emitted when a requested backend could not run and a caller-supplied fallback was used."""


@dataclass(frozen=True)
class Request:
    """What the caller asked for (see :meth:`Predictor.load` for the meaning of each field)."""

    backend: str = "auto"
    precision: str | None = None
    device: str | None = None
    fallback: tuple[str, ...] = ()
    variant: str | None = None
    autotune: bool = False


@dataclass(frozen=True)
class Opened:
    """An opened session and everything about how it was chosen."""

    backend: str
    variant: Variant
    session: Session
    options: BackendOptions
    placement: Placement


def open_best(artifact: Artifact, request: Request, base: BackendOptions) -> Opened:
    """Open ``artifact`` where ``request`` says (the rule is in the module docstring).

    Raises:
        ArtifactError: The artifact has no variant at the requested precision.
        BackendUnavailable: The backend (and every fallback) cannot run here; says why.
    """
    auto = request.backend == "auto"
    if auto and request.precision is None and request.variant is None and not request.autotune:
        planned = _open_planned(artifact, request, base)
        if planned is not None:
            return planned
    if auto:
        candidates = auto_candidates(artifact, request)
        seen = {c for c, _ in candidates}
        candidates += [(b, request.device) for b in request.fallback if b not in seen]
    else:
        candidates = [(b, request.device) for b in (request.backend, *request.fallback)]
    if not candidates:
        want = request.precision or "fp32"
        m = artifact.manifest
        if request.variant is None and not any(v.precision == want for v in m.variants):
            have = ", ".join(f"{v.id} ({v.precision})" for v in m.variants) or "none"
            raise ArtifactError(f"artifact {m.name!r} has no {want} variant; variants: {have}")
        raise BackendUnavailable(nothing_runs_message(artifact, request))

    failures: list[tuple[str, str]] = []
    preopened: Opened | None = None
    timings: dict[str, float] | None = None
    if request.autotune and auto and len(candidates) > 1:
        candidates, preopened, failures, timings = _autotune(artifact, candidates, request, base)
    for name, dev in candidates:
        try:
            if preopened is not None and name == preopened.backend:
                opened, preopened = preopened, None
            else:
                opened = open_on(artifact, name, request, replace(base, device=dev))
        except BackendUnavailable as exc:
            if not auto and name == request.backend and not request.fallback:
                raise
            failures.append((name, str(exc)))
            log.info("backend %s unavailable: %s", name, exc)
            continue
        placement = opened.placement
        if timings is not None:
            placement = replace(placement, details={**placement.details, "autotune_ms": timings})
        if failures:
            # Also under auto: a backend that passed check() but failed to open (a TensorRT build, an
            # OpenVINO compile) is never skipped silently.
            first, why = failures[0]
            placement = replace(placement, fallback_from=first, fallback_reason=why)
            how = "(auto)" if auto else "as requested"
            warnings.warn(
                f"backend {first!r} could not run ({why}); fell back to {name!r} {how}",
                BackendFallbackWarning,
                stacklevel=3,
            )
        return replace(opened, placement=placement)
    detail = "; ".join(f"{n}: {why}" for n, why in failures)
    raise BackendUnavailable(f"no backend could run {artifact.root}: {detail}")


def planned(artifact: Artifact, request: Request, base: BackendOptions) -> Plan | None:
    """What a load without backend, precision or variant plans to open: the deployment profile's choice
    for this machine, else the rule's validated int8 variant (:mod:`infership.runtime.profile`); ``None``:
    fp32 in the fixed order."""
    from .profile import default_plan

    def runnable(variant_id: str) -> list[tuple[str, str | None]]:
        v = artifact.manifest.variant(variant_id)
        if v.format in PROGRAM_FORMATS and not artifact.program_trusted(v):
            return []  # a program built elsewhere runs only when the caller asks for it
        return auto_candidates(artifact, replace(request, variant=variant_id))

    return default_plan(artifact.manifest, hint=base.hint, device=request.device, runnable=runnable)


def _open_planned(artifact: Artifact, request: Request, base: BackendOptions) -> Opened | None:
    """No backend, precision or variant asked for: open :func:`planned`'s choice. A planned choice that
    cannot open here is logged and the fixed order applies."""
    plan = planned(artifact, request, base)
    if plan is None:
        return None
    try:
        opts = plan.options(replace(base, device=plan.device))
        opened = open_on(artifact, plan.backend, replace(request, variant=plan.variant), opts)
    except (BackendUnavailable, InvalidInputError) as exc:
        log.warning("%s: %s on %s could not open (%s); using the fixed order", plan.source, plan.variant,
                    plan.backend, exc)  # fmt: skip
        return None
    placement = opened.placement
    return replace(opened, placement=replace(placement, details={**placement.details, **plan.details()}))


def open_on(artifact: Artifact, name: str, request: Request, base: BackendOptions) -> Opened:
    """Open the variant ``request`` selects on backend ``name``; options it does not apply are recorded."""
    be = registry.get_backend(name)
    device = base.device or be.default_device
    be.check(device)
    variant = select_variant(artifact, be.formats, request.precision, request.variant, name)
    # Large model files are hashed in the background while the runtime opens them, off the load's critical
    # path; the session's first run waits for the hash and refuses a file that does not match.
    verified = artifact.verify_started(variant)
    opts = replace(base, device=device, precision=variant.precision)
    try:
        session = be.open(artifact, variant, opts)
    except BaseException:
        verified()  # a file that does not match explains a failed open better than the runtime's message
        raise
    if verified is not DONE:
        session = VerifiedOnFirstRun(session, verified)
    placement = session.placement
    ignored = ignored_options(be, base)
    if ignored:
        # An option the runtime cannot apply is never reported as applied: recorded and logged.
        log.warning("backend %s does not apply option(s) %s; they were ignored", name, ", ".join(ignored))
        placement = replace(placement, details={**placement.details, "ignored_options": ignored})
    log.info("loaded %s variant %s on %s (%s)", artifact.manifest.name, variant.id, name, device)
    return Opened(name, variant, session, opts, placement)


def ignored_options(backend: Backend, options: BackendOptions) -> list[str]:
    """Options set away from their defaults that ``backend`` does not apply (not in ``honours``)."""
    defaults = BackendOptions()
    return sorted(
        f for f in OPTION_FIELDS if f not in backend.honours and getattr(options, f) != getattr(defaults, f)
    )


def select_variant(
    artifact: Artifact,
    formats: Sequence[str],
    precision: str | None,
    variant_id: str | None,
    backend: str,
) -> Variant:
    """The variant ``backend`` (opening ``formats``) loads: ``variant_id`` exactly, else the first of the
    preferred formats at ``precision`` (default fp32).

    Raises:
        ArtifactError: No variant at that precision at all.
        BackendUnavailable: Variants at that precision exist, but none this backend can open.
    """
    m = artifact.manifest
    if variant_id is not None:
        v = m.variant(variant_id)
        if v.format not in formats:
            raise BackendUnavailable(
                f"variant {variant_id!r} is {v.format}; backend {backend!r} opens {', '.join(formats)}"
            )
        return v
    want = precision or "fp32"
    v = m.find(formats=formats, precision=want)
    if v is None:
        have = ", ".join(f"{x.id} ({x.format}/{x.precision})" for x in m.variants) or "none"
        err = BackendUnavailable if any(x.precision == want for x in m.variants) else ArtifactError
        raise err(
            f"artifact {m.name!r} has no {want} variant that backend {backend!r} can open "
            f"(it opens {', '.join(formats)}); variants: {have}"
        )
    return v


def auto_candidates(artifact: Artifact, request: Request) -> list[tuple[str, str | None]]:
    """``(backend, device)`` pairs to try under ``auto``, in order. The GPU order carries device
    ``"cuda"`` so that torch, whose own default is the CPU, runs on the GPU there too."""
    from .hardware import nvidia_gpus

    device = request.device
    want_gpu = bool(nvidia_gpus()) if device is None else device.lower().startswith(("cuda", "gpu"))
    dev = device if device is not None else ("cuda" if want_gpu else None)
    order = GPU_ORDER if want_gpu else CPU_ORDER
    out = [(n, dev) for n in eligible(order, artifact, request, dev)]
    if not out and want_gpu and device is None:
        # A GPU is listed but nothing here can use it (CPU-only wheels, say): the CPU order applies.
        log.info("no GPU backend can run here; backend='auto' uses the CPU order")
        out = [(n, None) for n in eligible(CPU_ORDER, artifact, request, None)]
    return out


def eligible(order: Sequence[str], artifact: Artifact, request: Request, device: str | None) -> list[str]:
    """The backends of ``order`` that can run on ``device`` and open a suitable variant."""
    out = []
    for name in order:
        if registry.is_available(name, device) is not None:
            continue
        be = registry.get_backend(name)
        try:
            select_variant(artifact, be.formats, request.precision, request.variant, name)
        except (ArtifactError, BackendUnavailable):
            continue
        out.append(name)
    return out


def nothing_runs_message(artifact: Artifact, request: Request) -> str:
    lines = [
        f"no backend can run {artifact.manifest.name!r} at {request.precision or 'fp32'} "
        f"on {request.device or 'this machine'}:"
    ]
    for st in registry.backend_status(request.device):
        if st.name != "fake":
            lines.append(f"  {st.name}: {'available' if st.available else st.reason}")
    return "\n".join(lines)


def random_feeds(specs: Sequence[TensorSpec], count: int = 4) -> list[dict[str, np.ndarray]] | None:
    """``count`` distinct batch-1 inputs for ``specs``, or ``None`` when a non-batch axis is dynamic."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        feed = {}
        for spec in specs:
            shape = []
            for axis, d in enumerate(spec.shape):
                if isinstance(d, int):
                    shape.append(d)
                elif axis == 0:
                    shape.append(1)
                else:
                    return None
            feed[spec.name] = random_array(spec.dtype, shape, rng)
        out.append(feed)
    return out


def _autotune(
    artifact: Artifact,
    candidates: list[tuple[str, str | None]],
    request: Request,
    base: BackendOptions,
) -> tuple[list[tuple[str, str | None]], Opened | None, list[tuple[str, str]], dict[str, float] | None]:
    """Time every candidate on this model; return them fastest first, the fastest still open."""
    feeds = random_feeds(artifact.manifest.inputs)
    if feeds is None:
        log.warning("autotune skipped: an input has a dynamic axis besides the batch; using the fixed order")
        return candidates, None, [], None
    timed: list[tuple[float, str, str | None, Opened]] = []
    failures: list[tuple[str, str]] = []
    try:
        for name, dev in candidates:
            try:
                opened = open_on(artifact, name, request, replace(base, device=dev))
            except BackendUnavailable as exc:
                failures.append((name, str(exc)))  # warned about and recorded like any fallback
                continue
            timed.append((float("inf"), name, dev, opened))
            calls = iter(range(1 << 62))
            run = opened.session.run

            def call(run: Callable = run, calls: Iterator = calls) -> Mapping[str, np.ndarray]:
                return run(feeds[next(calls) % len(feeds)])

            timed[-1] = (median_ms(call, runs=20, warmup=5, rest_s=0.1), name, dev, opened)
    except BaseException:
        for *_, o in timed:
            o.session.close()
        raise
    if not timed:
        return [], None, failures, None
    timed.sort(key=lambda t: t[0])
    table = {name: round(ms, 4) for ms, name, _, _ in timed}
    for *_, o in timed[1:]:
        o.session.close()
    log.info("autotune (median ms, batch 1): %s", table)
    return [(name, dev) for _, name, dev, _ in timed], timed[0][3], failures, table


def check_max_batch(max_batch: int | None) -> None:
    if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
        raise InvalidInputError(f"max_batch must be an integer >= 1, got {max_batch!r}")
