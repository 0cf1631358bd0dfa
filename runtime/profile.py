"""The deployment profile, and the rule ``Predictor.load(path)`` follows without one.

A **profile** records what ``infership optimize`` measured and chose for one machine: the backend, the
variant and the runtime settings that were fastest for an objective, with the figures behind them. It is
keyed by the :class:`Fingerprint` of the environment it was measured in — CPU model and ISA, the number of
CPUs the process may use (a container or a Ray replica given one CPU is not the machine with two), the GPUs,
and the versions of the runtimes — by the objective, and, for inputs of variable length, by the shape
bucket. Profiles live in the manifest under ``extra["profiles"]`` (a list of :meth:`Profile.to_dict`), so
adding one changes no manifest field and an older infership reads the artifact unchanged.

``Predictor.load(path)`` given no ``backend`` (``"auto"``), ``precision`` or ``variant``:

1. **A profile for this machine** (same fingerprint; objective ``latency``, or ``throughput`` /
   ``latency-budget`` when loaded with ``hint="throughput"``): its backend, variant and settings are used;
   options the caller gave explicitly win over the profile's. ``placement.details["selection"]`` says
   ``"from profile"``. A profile measured elsewhere is ignored, with a log line saying what differs.
   Profiles stored for several lengths of one input (``optimize --shape input_ids=1x8``, then ``1x128``)
   become routes by length (:mod:`infership.runtime.routing`): each batch runs on the profile measured at
   the nearest length (on a log scale), with that profile's settings.
2. **Otherwise the rule.** An int8 variant is a correct path when its validation passed its accuracy
   budget: ``validation.passed`` and ``validation.loss_points`` at most the budget it was quantized with
   (``max_accuracy_drop``), or at most :data:`DEFAULT_BUDGET_POINTS` when it was quantized without one.
   Among those, on the backend that validated them (``validation.backend``) when that backend runs here,
   the one with the lowest batch-1 latency recorded at validation is chosen — if that latency is below the
   fp32 latency measured beside it (``fp32_latency_ms``) and the validation ran on a CPU with the same
   int8 support as this one (``int8_outlook.int8_support``): recorded figures describe only such a
   machine. ``placement.details["selection"]`` is ``"rule: int8"``.
3. **Otherwise fp32 in the fixed order** of :mod:`infership.runtime.selection`.

Explicit ``backend=``, ``precision=`` or ``variant=`` always win: neither the profile nor the rule is
consulted then.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .backend import BackendOptions, PerformanceHint
from .errors import InvalidInputError
from .hardware import cpu_info, library_versions, nvidia_gpus
from .manifest import Manifest, Variant

log = logging.getLogger(__name__)

#: Where profiles live in the manifest: ``Manifest.extra[PROFILES_KEY]``, a list of ``Profile.to_dict()``.
PROFILES_KEY = "profiles"
OBJECTIVES = ("latency", "throughput", "latency-budget")
#: The loss (points of accuracy, or of top-1 disagreement without labels) an int8 variant quantized without
#: a budget may show and still count as a correct path for the rule.
DEFAULT_BUDGET_POINTS = 1.0
#: The libraries whose versions decide speed: a profile measured with other versions is not trusted.
RUNTIME_LIBRARIES = ("onnxruntime", "onnxruntime-gpu", "openvino", "torch", "tensorrt")
#: The :class:`BackendOptions` fields a profile may set.
SETTING_FIELDS = ("intra_op_threads", "inter_op_threads", "hint", "num_streams", "extra")


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (containers) and by
    ``OMP_NUM_THREADS`` when set (Ray sets it to a worker's ``num_cpus``)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # cgroup v1 or no cgroup: the affinity decides
        pass
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        n = min(n, int(omp))
    return max(1, n)


@dataclass(frozen=True)
class Fingerprint:
    """What decides which path is fastest on a machine.

    Args:
        cpu_model: The CPU's model name.
        arch: Machine architecture (``x86_64``, ``aarch64``).
        isa: The ISA flags that matter for inference (:mod:`infership.runtime.hardware`).
        cpus: The CPUs this process may use (:func:`usable_cpus`).
        gpus: NVIDIA GPU names visible to the process, in CUDA's order.
        libraries: Versions of :data:`RUNTIME_LIBRARIES` that are installed.
    """

    cpu_model: str
    arch: str
    isa: tuple[str, ...]
    cpus: int
    gpus: tuple[str, ...] = ()
    libraries: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def current(cls) -> Fingerprint:
        """This process's fingerprint."""
        cpu = cpu_info()
        versions = library_versions()
        return cls(
            cpu_model=cpu.model,
            arch=cpu.arch,
            isa=tuple(cpu.flags),
            cpus=usable_cpus(),
            gpus=tuple(g.name for g in nvidia_gpus()),
            libraries={k: versions[k] for k in RUNTIME_LIBRARIES if k in versions},
        )

    @property
    def key(self) -> str:
        """A short stable hash of every field."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def differences(self, other: Fingerprint) -> list[str]:
        """What differs between ``self`` (here) and ``other`` (where a profile was measured), in words."""
        out = []
        for f in fields(self):
            here, there = getattr(self, f.name), getattr(other, f.name)
            if f.name == "libraries":
                for lib in sorted(set(here) | set(there)):
                    if here.get(lib) != there.get(lib):
                        out.append(f"{lib} {here.get(lib, 'absent')} here, {there.get(lib, 'absent')} there")
            elif here != there:
                show = (lambda v: ",".join(v) or "none") if isinstance(here, tuple) else str
                out.append(f"{f.name} {show(here)} here, {show(there)} there")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu_model": self.cpu_model,
            "arch": self.arch,
            "isa": list(self.isa),
            "cpus": self.cpus,
            "gpus": list(self.gpus),
            "libraries": dict(sorted(self.libraries.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fingerprint:
        return cls(
            cpu_model=str(data["cpu_model"]),
            arch=str(data["arch"]),
            isa=tuple(str(x) for x in data["isa"]),
            cpus=int(data["cpus"]),
            gpus=tuple(str(x) for x in data.get("gpus", ())),
            libraries={str(k): str(v) for k, v in dict(data.get("libraries", {})).items()},
        )


@dataclass(frozen=True)
class Profile:
    """The path ``optimize`` chose for one machine, objective and shape bucket, with its figures.

    Args:
        fingerprint: Where it was measured.
        objective: ``latency``, ``throughput`` or ``latency-budget``.
        backend: Backend name. variant: Variant id in the artifact.
        settings: :class:`BackendOptions` fields to load with (``intra_op_threads``, ``inter_op_threads``,
            ``hint``, ``num_streams``, ``extra``); unset fields keep the backend's defaults.
        batch_size, concurrency: How the objective was measured (the caller batches and calls this way).
        device: The device it ran on (``None``: the backend's default).
        shape_bucket: For inputs of variable length, the shapes measured (``"sequence=128"``), else None.
        latency_budget_ms: The p99 bound of a ``latency-budget`` objective.
        accuracy_budget: The loss in points the chosen variant was held to.
        figures: What was measured (``p50_ms``, ``p99_ms``, ``throughput``, ``load_ms``,
            ``first_inference_ms``, ``loss_points``...).
        measured: When (ISO 8601, UTC).
    """

    fingerprint: Fingerprint
    objective: str
    backend: str
    variant: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 1
    concurrency: int = 1
    device: str | None = None
    shape_bucket: str | None = None
    latency_budget_ms: float | None = None
    accuracy_budget: float | None = None
    figures: Mapping[str, Any] = field(default_factory=dict)
    measured: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise InvalidInputError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        unknown = set(self.settings) - set(SETTING_FIELDS)
        if unknown:
            raise InvalidInputError(f"profile settings: unknown field(s) {sorted(unknown)}")

    def matches(self, other: Profile) -> bool:
        """Same machine, objective and shape bucket: ``other`` replaces this one when stored."""
        return (self.fingerprint.key, self.objective, self.shape_bucket) == (
            other.fingerprint.key,
            other.objective,
            other.shape_bucket,
        )

    def apply(self, base: BackendOptions) -> BackendOptions:
        """``base`` with the profile's settings wherever the caller left the default."""
        defaults = BackendOptions()
        changes: dict[str, Any] = {}
        for name, value in self.settings.items():
            if name == "extra":
                changes["extra"] = {**dict(value), **dict(base.extra)}
            elif getattr(base, name) == getattr(defaults, name):
                changes[name] = PerformanceHint(value) if name == "hint" else value
        return replace(base, **changes)

    def describe(self) -> dict[str, Any]:
        """What ``placement.details["profile"]`` records."""
        return {
            "objective": self.objective,
            "fingerprint": self.fingerprint.key,
            "measured": self.measured,
            "shape_bucket": self.shape_bucket,
            "batch_size": self.batch_size,
            "concurrency": self.concurrency,
            "settings": dict(self.settings),
            "figures": dict(self.figures),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint.to_dict(),
            "fingerprint_key": self.fingerprint.key,
            "objective": self.objective,
            "backend": self.backend,
            "variant": self.variant,
            "device": self.device,
            "settings": dict(self.settings),
            "batch_size": self.batch_size,
            "concurrency": self.concurrency,
            "shape_bucket": self.shape_bucket,
            "latency_budget_ms": self.latency_budget_ms,
            "accuracy_budget": self.accuracy_budget,
            "figures": dict(self.figures),
            "measured": self.measured,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Read one profile.

        Raises:
            InvalidInputError: A missing or malformed field.
        """
        try:
            settings = dict(data.get("settings") or {})
            if settings.get("hint") is not None:
                settings["hint"] = PerformanceHint(str(settings["hint"]).lower()).value
            bound = data.get("latency_budget_ms")
            budget = data.get("accuracy_budget")
            return cls(
                fingerprint=Fingerprint.from_dict(data["fingerprint"]),
                objective=str(data["objective"]),
                backend=str(data["backend"]),
                variant=str(data["variant"]),
                device=None if data.get("device") is None else str(data["device"]),
                settings=settings,
                batch_size=int(data.get("batch_size", 1)),
                concurrency=int(data.get("concurrency", 1)),
                shape_bucket=None if data.get("shape_bucket") is None else str(data["shape_bucket"]),
                latency_budget_ms=None if bound is None else float(bound),
                accuracy_budget=None if budget is None else float(budget),
                figures=dict(data.get("figures") or {}),
                measured=str(data.get("measured", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInputError(f"malformed profile ({type(exc).__name__}: {exc})") from exc


def read_profiles(manifest: Manifest) -> list[Profile]:
    """The profiles stored in ``manifest``; a malformed entry is logged and skipped (a profile only ever
    picks among the artifact's own, hash-checked variants, so skipping one loses speed, never safety)."""
    raw = manifest.extra.get(PROFILES_KEY) or []
    if not isinstance(raw, list):
        log.warning("manifest extra.%s is not a list; no profile is used", PROFILES_KEY)
        return []
    out = []
    for i, entry in enumerate(raw):
        try:
            out.append(Profile.from_dict(entry if isinstance(entry, Mapping) else {}))
        except InvalidInputError as exc:
            log.warning("profile %d of %r skipped: %s", i, manifest.name, exc)
    return out


def with_profile(manifest: Manifest, profile: Profile) -> Manifest:
    """A copy of ``manifest`` holding ``profile``, replacing one for the same machine, objective and bucket.

    Raises:
        InvalidInputError: The profile names a variant the manifest does not have.
    """
    if profile.variant not in {v.id for v in manifest.variants}:
        raise InvalidInputError(f"profile names variant {profile.variant!r}, not in the artifact")
    kept = [p.to_dict() for p in read_profiles(manifest) if not p.matches(profile)]
    return replace(manifest, extra={**manifest.extra, PROFILES_KEY: [*kept, profile.to_dict()]})


def objectives_for(hint: PerformanceHint) -> tuple[str, ...]:
    """The profile objectives a load with ``hint`` uses, in order of preference."""
    return ("throughput", "latency-budget") if hint is PerformanceHint.THROUGHPUT else ("latency",)


def find_profile(
    manifest: Manifest,
    *,
    objectives: Sequence[str] = ("latency",),
    fingerprint: Fingerprint | None = None,
    shape_bucket: str | None = None,
) -> Profile | None:
    """The stored profile for this machine and the first of ``objectives`` that has one.

    A profile for another machine is skipped with a log line naming what differs. With ``shape_bucket``
    ``None``, a profile without a bucket is preferred, else the first stored.
    """
    here = fingerprint or Fingerprint.current()
    profiles = read_profiles(manifest)
    for objective in objectives:
        mine = []
        for p in (p for p in profiles if p.objective == objective):
            if p.fingerprint.key == here.key:
                mine.append(p)
            else:
                log.warning(
                    "deployment profile (%s) of %r ignored: measured on another machine (%s)",
                    objective,
                    manifest.name,
                    "; ".join(here.differences(p.fingerprint)) or "fingerprint differs",
                )
        if shape_bucket is not None:
            mine = [p for p in mine if p.shape_bucket == shape_bucket]
        if mine:
            return min(mine, key=lambda p: p.shape_bucket is not None)
    return None


def bucket_profiles(manifest: Manifest, profile: Profile) -> tuple[str, list[tuple[int, Profile]]] | None:
    """The profiles stored beside ``profile`` for the same machine and objective at other lengths of one
    symbol (buckets ``"sequence=8"``, ``"sequence=128"``...), as ``(symbol, [(length, profile), ...])``
    sorted by length; ``None`` unless there are at least two such buckets."""

    def parsed(p: Profile) -> tuple[str, int] | None:
        name, sep, value = (p.shape_bucket or "").partition("=")
        if not sep or "," in value or not value.isdigit():
            return None
        return name, int(value)

    mine = parsed(profile)
    if mine is None:
        return None
    found: dict[int, Profile] = {}
    for p in read_profiles(manifest):
        key = parsed(p)
        if p.fingerprint.key == profile.fingerprint.key and p.objective == profile.objective and key:
            if key[0] == mine[0]:
                found[key[1]] = p
    return (mine[0], sorted(found.items(), key=lambda kv: kv[0])) if len(found) > 1 else None


# ------------------------------------------------------------------------------------------- the rule
def int8_budget(variant: Variant) -> float | None:
    """The loss in points ``variant``'s validation was held to (its recorded budget, else the default);
    ``None`` for a variant that is not int8 or has no loss figure."""
    val = variant.validation or {}
    if variant.precision != "int8" or not isinstance(val.get("loss_points"), (int, float)):
        return None
    budget = val.get("max_accuracy_drop")
    return float(budget) if isinstance(budget, (int, float)) else DEFAULT_BUDGET_POINTS


def passed_budget(variant: Variant, budget: float | None = None) -> bool:
    """Whether ``variant`` is an int8 variant whose recorded validation passed, with a loss within
    ``budget`` points (default: the budget it was validated with, see :func:`int8_budget`)."""
    own = int8_budget(variant)
    val = variant.validation or {}
    if own is None or val.get("passed") is not True:
        return False
    limit = own if budget is None else min(own, budget)
    return float(val["loss_points"]) <= limit


@dataclass(frozen=True)
class Plan:
    """What a load without backend/precision/variant opens, and why."""

    backend: str
    device: str | None
    variant: str
    source: str  # "from profile" or "rule: int8"
    profile: Profile | None = None
    reason: str = ""

    def options(self, base: BackendOptions) -> BackendOptions:
        return self.profile.apply(base) if self.profile is not None else base

    def details(self) -> dict[str, Any]:
        """What ``placement.details`` records about the choice."""
        out: dict[str, Any] = {"selection": self.source}
        if self.profile is not None:
            out["profile"] = self.profile.describe()
        if self.reason:
            out["selection_reason"] = self.reason
        return out


Runnable = Callable[[str], Sequence[tuple[str, str | None]]]
"""``runnable(variant_id)`` → the ``(backend, device)`` pairs that can open that variant here, in order."""


def default_plan(
    manifest: Manifest,
    *,
    hint: PerformanceHint,
    device: str | None,
    runnable: Runnable,
    fingerprint: Fingerprint | None = None,
) -> Plan | None:
    """The profile's choice for this machine, else the rule's int8 choice, else ``None`` (fp32 in the fixed
    order). See the module docstring for the rule."""
    ids = {v.id for v in manifest.variants}
    profile = find_profile(manifest, objectives=objectives_for(hint), fingerprint=fingerprint)
    if profile is not None:
        where = [(b, d) for b, d in runnable(profile.variant)] if profile.variant in ids else []
        pick = next((d for b, d in where if b == profile.backend), False)
        same_device = device is None or (device.lower() == (profile.device or device).lower())
        if pick is not False and same_device:
            return Plan(profile.backend, profile.device or pick, profile.variant, "from profile", profile)
        log.warning(
            "deployment profile of %r not used: %s",
            manifest.name,
            f"asked for device {device!r}, the profile ran on {profile.device!r}"
            if not same_device
            else f"backend {profile.backend!r} cannot open variant {profile.variant!r} here",
        )
    return _rule(manifest, runnable)


def _rule(manifest: Manifest, runnable: Runnable) -> Plan | None:
    from .hardware import cpu_info

    support = cpu_info().int8_support
    best: tuple[float, Plan] | None = None
    for v in manifest.variants:
        val = v.validation or {}
        if not passed_budget(v):
            continue
        ms, fp32_ms = val.get("latency_ms"), val.get("fp32_latency_ms")
        backend = val.get("backend")
        outlook = val.get("int8_outlook") or {}
        if not (isinstance(ms, (int, float)) and isinstance(fp32_ms, (int, float)) and ms < fp32_ms):
            continue
        if outlook.get("int8_support") not in (None, support):
            continue
        pick = next(((b, d) for b, d in runnable(v.id) if b == backend), None)
        if pick is None:
            continue
        reason = (
            f"int8 variant {v.id} passed its accuracy budget (loss {val['loss_points']} <= "
            f"{int8_budget(v)} points) and measured {ms} ms vs fp32 {fp32_ms} ms on {backend} at validation"
        )
        if best is None or ms < best[0]:
            best = (float(ms), Plan(pick[0], pick[1], v.id, "rule: int8", reason=reason))
    return best[1] if best else None
