"""``infership optimize``: measure the ways to run an artifact on this machine, keep the fastest correct one,
and record it as the artifact's deployment profile.

The search (:func:`optimize`):

1. With ``calibration``, the int8 variants the artifact lacks are made first (ONNX Runtime and OpenVINO,
   each held to the accuracy budget; a target that misses it is reported and left out).
2. The candidates (:mod:`infership.optimize_space`: backend × variant × settings × batch) are measured by
   **successive halving** inside the time budget. Round 0 loads every candidate (load time and first
   inference recorded: the cold start) and measures it briefly; each later round keeps the best third,
   loads them side by side and measures them again, longer, in interleaved blocks with a rest before each
   block, so that a change in the machine's load hits all of them alike. Measuring goes through the
   benchmark harness (:func:`infership.bench.run_benchmark`) and its one timer.
3. A candidate goes on to a later round, or is chosen, only within the accuracy budget
   (:mod:`infership.optimize_checks`).
4. The winner becomes the profile for this machine and objective (:mod:`infership.runtime.profile`),
   stored in the manifest, so ``Predictor.load(path)`` opens it.

Objectives: ``latency`` (batch 1, one caller, p50; p99 reported), ``throughput`` (offline: items per
second, any batch and callers), ``latency-budget`` (the highest throughput whose p99 stays within
``latency_budget_ms``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infership.runtime import Artifact, ArtifactWriter, Predictor
from infership.runtime.errors import (
    ArtifactError,
    BackendUnavailable,
    InferenceError,
    InvalidInputError,
)
from infership.runtime.profile import OBJECTIVES, Fingerprint, Profile, with_profile
from infership.runtime.timing import timed

from .optimize_checks import AccuracyChecks, held_out_data, make_int8
from .optimize_space import Candidate, candidates

log = logging.getLogger(__name__)

DEFAULT_TIME_BUDGET_S = 300.0
DEFAULT_MAX_ACCURACY_DROP = 1.0
#: Successive halving keeps the best 1/ETA of the candidates each round.
ETA = 3
#: Shortest measurement of one candidate in one round (seconds); the harness also needs 3 queries.
MIN_MEASURE_S = 0.15
#: Rest before each measured block: another runtime's worker threads go idle first.
REST_S = 0.05
#: Share of the search time given to round 0 (every candidate loaded and measured once).
ROUND0_SHARE = 0.45
#: Survivors loaded side by side at most (memory); more are measured group by group.
MAX_LOADED = 6
#: Interleaved blocks per candidate in rounds after the first.
BLOCKS = 3

Progress = Callable[[float, float, str], None]
"""``progress(elapsed_s, budget_s, what)``, called as the search goes."""


@dataclass
class Trial:
    """One candidate and what was measured about it (the last round's figures).

    Attributes:
        status: ``measured``, ``pruned`` (round it was dropped in), ``chosen``, ``failed``, ``rejected``
            (accuracy), ``over bound`` (p99 above the latency budget), ``not measured`` (time budget).
    """

    candidate: Candidate
    status: str = "not measured"
    rounds: int = 0
    samples_ms: list[float] = field(default_factory=list)
    items: float = 0.0
    seconds: float = 0.0
    load_ms: float | None = None
    first_ms: float | None = None
    loss_points: float | None = None
    accuracy: str = ""
    error: str | None = None

    @property
    def p50_ms(self) -> float | None:
        return float(np.median(self.samples_ms)) if self.samples_ms else None

    @property
    def p99_ms(self) -> float | None:
        return float(np.percentile(self.samples_ms, 99)) if self.samples_ms else None

    @property
    def throughput(self) -> float | None:
        return self.items / self.seconds if self.seconds > 0 else None

    def score(self, objective: str, bound: float | None) -> float:
        """Higher is better; ``-inf`` when nothing was measured or the p99 bound is missed."""
        if not self.samples_ms:
            return -math.inf
        if objective == "latency":
            return -float(self.p50_ms)  # type: ignore[arg-type]
        if objective == "latency-budget" and bound is not None and float(self.p99_ms) > bound:  # type: ignore[arg-type]
            return -math.inf
        return float(self.throughput or 0.0)

    def reset(self) -> None:
        self.samples_ms, self.items, self.seconds = [], 0.0, 0.0

    def figures(self) -> dict[str, Any]:
        def r(v: float | None, n: int = 4) -> float | None:
            return None if v is None else round(v, n)

        return {
            "p50_ms": r(self.p50_ms),
            "p99_ms": r(self.p99_ms),
            "throughput": r(self.throughput, 2),
            "load_ms": r(self.load_ms, 1),
            "first_inference_ms": r(self.first_ms, 3),
            "loss_points": self.loss_points,
        }

    def to_dict(self) -> dict[str, Any]:
        c = self.candidate
        return {
            "candidate": c.describe(),
            "backend": c.backend,
            "variant": c.variant,
            "precision": c.precision,
            "compute": c.compute,
            "settings": c.settings,
            "batch_size": c.batch_size,
            "concurrency": c.concurrency,
            "status": self.status,
            "rounds": self.rounds,
            "queries": len(self.samples_ms),
            **self.figures(),
            "accuracy": self.accuracy,
            "error": self.error,
        }


@dataclass(frozen=True)
class OptimizeReport:
    """What :func:`optimize` measured and chose.

    Attributes:
        trials: Every candidate with its figures and status, best first.
        chosen: The winner (``None`` when nothing could run within the accuracy budget).
        profile: The profile stored (or that would be, with ``write=False``).
        committed: Whether the profile was written to the manifest.
        quantized: One record per int8 target made first (``make_int8``).
        elapsed_s: Wall time of making int8 variants and searching (what the time budget bounds);
            ``search_s`` of the measuring alone; ``extras_s`` of the peers and the explanation after it.
        peers: The peer comparison (:mod:`infership.peers`), when asked for.
        explanation: Why it is not faster (:mod:`infership.explain`), when asked for.
    """

    artifact: str
    objective: str
    time_budget_s: float
    max_accuracy_drop: float
    latency_budget_ms: float | None
    trials: tuple[Trial, ...]
    chosen: Trial | None
    profile: Profile | None
    committed: bool
    quantized: tuple[dict[str, Any], ...]
    rounds: int
    elapsed_s: float
    search_s: float
    validation_s: float
    notes: tuple[str, ...] = ()
    extras_s: float = 0.0
    peers: Any = None
    explanation: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "objective": self.objective,
            "time_budget_s": self.time_budget_s,
            "max_accuracy_drop": self.max_accuracy_drop,
            "latency_budget_ms": self.latency_budget_ms,
            "elapsed_s": round(self.elapsed_s, 2),
            "search_s": round(self.search_s, 2),
            "validation_s": round(self.validation_s, 2),
            "peers_and_explain_s": round(self.extras_s, 2),
            "rounds": self.rounds,
            "chosen": self.chosen.to_dict() if self.chosen else None,
            "profile": self.profile.to_dict() if self.profile else None,
            "committed": self.committed,
            "quantized": list(self.quantized),
            "notes": list(self.notes),
            "trials": [t.to_dict() for t in self.trials],
            "peers": self.peers.to_dict() if self.peers is not None else None,
            "explanation": self.explanation.to_dict() if self.explanation is not None else None,
        }


def optimize(
    artifact: str | os.PathLike[str],
    *,
    objective: str = "latency",
    time_budget_s: float = DEFAULT_TIME_BUDGET_S,
    latency_budget_ms: float | None = None,
    calibration: str | None = None,
    validation: str | None = None,
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    backends: Sequence[str] | None = None,
    batch_sizes: Sequence[int] | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
    device: str | None = None,
    write: bool = True,
    peers: bool = False,
    torch_model: Any = None,
    explain: bool = False,
    progress: Progress | None = None,
) -> OptimizeReport:
    """Find the fastest way to run ``artifact`` here within the accuracy budget and store it as the
    artifact's deployment profile (see the module docstring).

    Args:
        artifact: Artifact directory.
        objective: ``latency``, ``throughput`` or ``latency-budget``.
        time_budget_s: Wall-clock budget for making int8 variants and measuring.
        latency_budget_ms: The p99 bound of ``latency-budget``.
        calibration: Data source (anything :func:`infership.calibration.from_spec` reads): int8 variants
            the artifact lacks are made from it first, and its held-out part judges unvalidated candidates.
        validation: Data to judge candidates on instead of calibration's held-out part.
        max_accuracy_drop: The accuracy budget in points of the task's loss.
        backends: Only these backends (default: every one that runs here).
        batch_sizes: Batch sizes for the throughput objectives.
        shapes: Input name → full shape, for inputs with dynamic axes besides the batch; recorded as the
            profile's shape bucket.
        device: ``"cuda"`` or ``"cpu"`` (default: the GPU when one is visible).
        write: Store the profile in the manifest.
        peers: Also measure the peers (:func:`infership.peers.compare_peers`) against the chosen path.
        torch_model: The fp32 ``nn.Module`` (or a source string), for the torch peers.
        explain: Also explain the figures (:func:`infership.explain.explain`).
        progress: Called as the search goes (the CLI draws a progress bar).

    Returns:
        The :class:`OptimizeReport`.

    Raises:
        InvalidInputError: An unknown objective, a missing or negative budget, a dynamic input without a
            shape.
        ArtifactError: The artifact cannot be read, or the profile cannot be stored.
    """
    t0 = time.perf_counter()
    _check_args(objective, time_budget_s, latency_budget_ms, max_accuracy_drop)
    root = os.fspath(artifact)
    notes: list[str] = []
    quantized: list[dict[str, Any]] = []
    if calibration is not None:
        if progress:
            progress(0.0, time_budget_s, "making int8 variants")
        quantized = make_int8(root, calibration, budget=max_accuracy_drop)
    art = Artifact.load(root)
    bucket = _shape_bucket(art, shapes or {})
    data = held_out_data(art, validation=validation, calibration=calibration)
    checks = AccuracyChecks(art, budget=max_accuracy_drop, data=data)
    cands = candidates(art, objective=objective, backends=backends, batch_sizes=batch_sizes, device=device)
    if not cands:
        raise InvalidInputError(f"no backend here can run a variant of {art.manifest.name!r}")
    spent = time.perf_counter() - t0
    search_budget = time_budget_s - spent
    if search_budget < 0.25 * time_budget_s:
        notes.append(f"making int8 variants took {spent:.0f} s of the {time_budget_s:.0f} s budget")
        search_budget = 0.25 * time_budget_s
    search = _Search(
        art, [Trial(c) for c in _ordered(cands)], objective=objective, bound=latency_budget_ms,
        checks=checks, shapes=shapes or {}, budget_s=search_budget, progress=progress,
        offset_s=spent, total_s=time_budget_s,
    )  # fmt: skip
    chosen = search.run()
    search_s = time.perf_counter() - t0 - spent
    trials = sorted(search.trials, key=lambda t: -t.score(objective, latency_budget_ms))
    profile = committed = None
    if chosen is not None:
        chosen.status = "chosen"
        c = chosen.candidate
        profile = Profile(
            fingerprint=Fingerprint.current(), objective=objective, backend=c.backend, variant=c.variant,
            settings=c.settings, batch_size=c.batch_size, concurrency=c.concurrency, device=c.device,
            shape_bucket=bucket, latency_budget_ms=latency_budget_ms, accuracy_budget=max_accuracy_drop,
            figures={**chosen.figures(), "candidates": len(trials), "rounds": chosen.rounds,
                     "search_s": round(search_s, 1)},
        )  # fmt: skip
        committed = write and _store(art, profile, notes)
    else:
        notes.append("no candidate ran within the accuracy budget; no profile stored")
    report = OptimizeReport(
        artifact=root, objective=objective, time_budget_s=time_budget_s, max_accuracy_drop=max_accuracy_drop,
        latency_budget_ms=latency_budget_ms, trials=tuple(trials), chosen=chosen, profile=profile,
        committed=bool(committed), quantized=tuple(quantized), rounds=search.rounds,
        elapsed_s=time.perf_counter() - t0, search_s=search_s, validation_s=checks.seconds, notes=tuple(notes),
    )  # fmt: skip
    return _extras(report, art, checks, peers=peers, torch_model=torch_model, explain=explain,
                   calibration=calibration, shapes=shapes or {})  # fmt: skip


def _extras(report: OptimizeReport, art: Artifact, checks: AccuracyChecks, **kw: Any) -> OptimizeReport:
    """Peers and the explanation, measured after the search (outside its time budget)."""
    from dataclasses import replace

    if report.chosen is None:
        return report
    t0 = time.perf_counter()
    if kw["peers"]:
        from .peers import compare_peers

        peers = compare_peers(
            art, report.chosen.candidate, objective=report.objective, checks=checks,
            calibration=kw["calibration"], torch_model=kw["torch_model"], shapes=kw["shapes"],
        )  # fmt: skip
        report = replace(report, peers=peers)
    if kw["explain"]:
        from .explain import explain

        report = replace(report, explanation=explain(art, trials=report.trials, chosen=report.chosen))
    return replace(report, extras_s=time.perf_counter() - t0)


def _check_args(objective: str, budget: float, bound: float | None, drop: float) -> None:
    if objective not in OBJECTIVES:
        raise InvalidInputError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if not budget > 0:
        raise InvalidInputError(f"time budget must be > 0 seconds, got {budget}")
    if objective == "latency-budget" and not (bound and bound > 0):
        raise InvalidInputError("objective latency-budget needs a p99 bound: --latency-budget-ms MS")
    if drop < 0:
        raise InvalidInputError(f"max_accuracy_drop must be >= 0 points, got {drop}")


def _shape_bucket(art: Artifact, shapes: dict[str, tuple[int, ...]]) -> str | None:
    """``"sequence=128"`` for the symbolic non-batch dims the given shapes fix; ``None`` for fixed inputs.

    Raises:
        InvalidInputError: A dynamic non-batch axis without a shape.
    """
    parts = []
    for spec in art.manifest.inputs:
        for axis, dim in enumerate(spec.shape):
            if axis == 0 or isinstance(dim, int):
                continue
            shape = shapes.get(spec.name)
            if shape is None or len(shape) != len(spec.shape):
                raise InvalidInputError(
                    f"input {spec.name!r} has a dynamic axis {dim!r}: give its shape, e.g. "
                    f"--shape {spec.name}=1x128 (the profile is recorded for that shape bucket)"
                )
            parts.append(f"{dim}={shape[axis]}")
    return ",".join(sorted(set(parts))) or None


def _ordered(cands: list[Candidate]) -> list[Candidate]:
    """Each (backend, variant, compute)'s first settings before any second ones: under a short budget,
    every path is measured once before settings are explored."""
    seen: dict[tuple[str, str, str | None, int], int] = {}
    ranked = []
    for i, c in enumerate(cands):
        group = (c.backend, c.variant, c.compute, c.batch_size)
        seen[group] = seen.get(group, -1) + 1
        ranked.append((seen[group], i, c))
    return [c for *_, c in sorted(ranked, key=lambda t: (t[0], t[1]))]


def _store(art: Artifact, profile: Profile, notes: list[str]) -> bool:
    if art.derived:
        notes.append("a bare .onnx file has no manifest: the profile was not stored")
        return False
    fresh = Artifact.load(art.root)
    writer = ArtifactWriter.update(fresh)
    try:
        writer.set_manifest(extra=with_profile(fresh.manifest, profile).extra)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return True


class _Search:
    """Successive halving over ``trials`` within ``budget_s`` (see the module docstring)."""

    def __init__(
        self,
        art: Artifact,
        trials: list[Trial],
        *,
        objective: str,
        bound: float | None,
        checks: AccuracyChecks,
        shapes: dict[str, tuple[int, ...]],
        budget_s: float,
        progress: Progress | None,
        offset_s: float,
        total_s: float,
    ) -> None:
        self.art, self.trials, self.objective, self.bound = art, trials, objective, bound
        self.checks, self.shapes, self.progress = checks, shapes, progress
        self.t0 = time.perf_counter()
        # A small margin: closing sessions and writing the manifest come after the last measurement.
        self.deadline = self.t0 + max(0.0, 0.98 * budget_s - 0.3)
        self.offset_s, self.total_s = offset_s, total_s
        self.rounds = 0
        self._pools: dict[int, Any] = {}

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def _tick(self, what: str) -> None:
        if self.progress:
            self.progress(
                min(self.total_s, self.offset_s + time.perf_counter() - self.t0), self.total_s, what
            )

    def run(self) -> Trial | None:
        self._round0()
        alive = [t for t in self.trials if t.samples_ms]
        while True:
            # After round 0 (short, one candidate at a time) two at least meet in an interleaved round.
            alive = self._gate(alive, keep=max(2 if self.rounds == 1 else 1, math.ceil(len(alive) / ETA)))
            if len(alive) <= 1 or self.left() < len(alive) * (MIN_MEASURE_S + REST_S) * BLOCKS:
                break
            self._round(alive)
        best = max(alive, key=self._score, default=None)
        self._tick("done")
        return best

    def _score(self, t: Trial) -> float:
        return t.score(self.objective, self.bound)

    def _gate(self, ranked_from: list[Trial], *, keep: int) -> list[Trial]:
        """The best ``keep`` that are within the accuracy budget; the others are marked pruned/rejected."""
        kept: list[Trial] = []
        for t in sorted(ranked_from, key=self._score, reverse=True):
            if self._score(t) == -math.inf:
                if t.status == "measured":
                    t.status = "over bound"
                continue
            if len(kept) >= keep:
                if t.status == "measured":
                    t.status = f"pruned r{self.rounds}"
                continue
            self._tick(f"checking accuracy of {t.candidate.describe()}")
            v = self.checks.verdict(t.candidate)
            t.loss_points, t.accuracy = v.loss_points, v.how
            if v.ok:
                kept.append(t)
            else:
                t.status = "rejected"
        return kept

    def _round0(self) -> None:
        """Every candidate loaded (cold start recorded), measured briefly, closed."""
        end = self.t0 + ROUND0_SHARE * (self.deadline - self.t0)
        overheads: list[float] = []
        todo = list(self.trials)
        for i, t in enumerate(todo):
            now = time.perf_counter()
            if now >= self.deadline - 2 * MIN_MEASURE_S:
                break  # the rest stay "not measured"
            per = max(end, now + MIN_MEASURE_S) - now
            avg = sum(overheads) / len(overheads) if overheads else 0.0
            dur = min(2.0, max(MIN_MEASURE_S, per / (len(todo) - i) - avg))
            self._tick(f"round 0: {t.candidate.describe()}")
            s0 = time.perf_counter()
            p = self._load(t, cold=True)
            if p is None:
                continue
            with p:
                self._measure(t, p, dur)
            overheads.append(max(0.0, time.perf_counter() - s0 - dur))
        self.rounds = 1

    def _round(self, alive: list[Trial]) -> None:
        """Survivors measured again side by side, in interleaved blocks, with the time that is left."""
        rounds_left = max(1, math.ceil(math.log(len(alive), ETA)))
        share = self.left() / rounds_left
        per = max(MIN_MEASURE_S * BLOCKS, share / len(alive) - 0.2)
        for group in (alive[i : i + MAX_LOADED] for i in range(0, len(alive), MAX_LOADED)):
            loaded = [(t, p) for t in group if (p := self._load(t, cold=False)) is not None]
            try:
                for t, _ in loaded:
                    t.reset()
                for b in range(BLOCKS):
                    for t, p in loaded:
                        self._tick(f"round {self.rounds}: {t.candidate.describe()} ({b + 1}/{BLOCKS})")
                        self._measure(t, p, per / BLOCKS)
            finally:
                for _, p in loaded:
                    p.close()
        self.rounds += 1

    def _load(self, t: Trial, *, cold: bool) -> Predictor | None:
        c = t.candidate
        try:
            p, ms = timed(
                lambda: Predictor.load(self.art, backend=c.backend, variant=c.variant, **c.load_options())
            )
        except (BackendUnavailable, InvalidInputError, ArtifactError) as exc:
            t.status, t.error = "failed", f"load: {exc}"[:300]
            return None
        if cold:
            t.load_ms = ms
            try:
                t.first_ms = timed(lambda: p.predict(self._pool(p, c.batch_size)[0]))[1]
            except (InferenceError, InvalidInputError) as exc:
                p.close()
                t.status, t.error = "failed", f"first inference: {exc}"[:300]
                return None
        return p

    def _pool(self, p: Predictor, batch: int) -> Any:
        if batch not in self._pools:
            from infership.bench import random_pool

            self._pools[batch] = random_pool(p.inputs, batch_size=batch, shapes=self.shapes, size=8)
        return self._pools[batch]

    def _measure(self, t: Trial, p: Predictor, seconds: float) -> None:
        from infership.bench import Scenario, StopRule, run_benchmark

        c = t.candidate
        single = self.objective == "latency" and c.concurrency == 1
        time.sleep(REST_S)
        try:
            r = run_benchmark(
                p, scenario=Scenario.SINGLE_STREAM if single else Scenario.OFFLINE, batch_size=c.batch_size,
                concurrency=c.concurrency, stop=StopRule(duration_s=seconds, max_duration_s=seconds, min_queries=3),
                pool=self._pool(p, c.batch_size), warmup_queries=2,
            )  # fmt: skip
        except (InferenceError, InvalidInputError) as exc:
            t.status, t.error = "failed", f"run: {exc}"[:300]
            t.reset()
            return
        t.samples_ms.extend(r.samples_ms)
        t.items += r.throughput * r.duration_s
        t.seconds += r.duration_s
        t.status = "measured"
        t.rounds = self.rounds + 1
