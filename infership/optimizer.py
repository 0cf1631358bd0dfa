"""``infership optimize``: measure the ways to run an artifact on this machine, keep the fastest correct one,
and record it as the artifact's deployment profile.

The search (:func:`optimize`):

1. With ``calibration``, the int8 variants the artifact lacks are made first (ONNX Runtime and OpenVINO,
   each held to the accuracy budget; a target that misses it is reported and left out).
2. The candidates (:mod:`infership.optimize_space`: backend × variant × settings × batch) are measured by
   **successive halving** inside the time budget (:mod:`infership.optimize_search`). Round 0 loads every
   candidate (load time and first inference recorded: the cold start) and measures it briefly; each later
   round keeps the best third, loads them side by side and measures them again, longer, in interleaved
   blocks with a rest before each block, so that a change in the machine's load hits all of them alike.
   Measuring goes through the benchmark harness (:func:`infership.bench.run_benchmark`) and its one timer.
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
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infership.runtime import Artifact, ArtifactWriter
from infership.runtime.errors import InvalidInputError
from infership.runtime.profile import OBJECTIVES, Fingerprint, Profile, with_profile

from .optimize_checks import AccuracyChecks, held_out_data, make_int8
from .optimize_search import Progress, Search, Trial
from .optimize_space import Candidate, candidates

log = logging.getLogger(__name__)

DEFAULT_TIME_BUDGET_S = 300.0
DEFAULT_MAX_ACCURACY_DROP = 1.0
#: The least share of the time budget the search gets when making int8 variants took the rest.
MIN_SEARCH_SHARE = 0.1


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
    quantize: bool = True,
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
        quantize: Make the missing int8 variants from ``calibration`` (``False``: only judge with it).
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
    if calibration is not None and quantize:
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
    if search_budget < MIN_SEARCH_SHARE * time_budget_s:
        # Quantizing cannot be interrupted; the search still gets a short look, and the overrun is said.
        notes.append(
            f"making int8 variants took {spent:.0f} s of the {time_budget_s:.0f} s budget; the search had "
            f"{MIN_SEARCH_SHARE * time_budget_s:.0f} s"
        )
        search_budget = MIN_SEARCH_SHARE * time_budget_s
    search = Search(
        art, [Trial(c) for c in _ordered(cands)], objective=objective, bound=latency_budget_ms,
        checks=checks, shapes=shapes or {}, budget_s=search_budget, progress=progress,
        offset_s=spent, total_s=time_budget_s,
    )  # fmt: skip
    chosen = search.run()
    search_s = time.perf_counter() - t0 - spent
    # Chosen first (a tuned setting that lost to the runtime's defaults in one block can show a better p50).
    trials = sorted(search.trials, key=lambda t: (t is not chosen, -t.score(objective, latency_budget_ms)))
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

        report = replace(
            report, explanation=explain(art, trials=report.trials, chosen=report.chosen, shapes=kw["shapes"])
        )
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
