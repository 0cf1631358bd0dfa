"""The search behind ``infership optimize``: successive halving over candidates within a time budget.

Round 0 loads every candidate (load time and first inference recorded: the cold start) and measures it
briefly, one after the other; each later round keeps the best third (two at least after round 0, never
more than the time left can measure), loads them side by side and measures them again, longer, in
interleaved blocks with a rest before each, so that a change in the machine's load hits all of them
alike. A candidate goes on only within the accuracy budget (:mod:`infership.optimize_checks`). Measuring
goes through the benchmark harness (:func:`infership.bench.run_benchmark`) and its one timer.

The runtime's own defaults are not replaced on noise: while candidates run the same backend and variant as
the leader, the runtime's default-settings candidate for that backend and variant (ONNX Runtime's own
session defaults) goes on into each interleaved round beside the leader, and another setting is chosen
over it only when it was faster in every block of the last round (a sign test; with three blocks an
even pair passes it one time in eight). On a model that runs in tens of microseconds, two thread settings
differ by less than the machine's noise, and the defaults are what the raw tool gives.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from infership.runtime import Artifact, Predictor
from infership.runtime.errors import ArtifactError, BackendUnavailable, InferenceError, InvalidInputError
from infership.runtime.timing import timed

from .optimize_checks import AccuracyChecks
from .optimize_space import Candidate

#: Successive halving keeps the best 1/ETA of the candidates each round.
ETA = 3
#: Shortest measurement of one candidate in one round (seconds); the harness also needs 3 queries.
MIN_MEASURE_S = 0.15
#: Rest before each measured block: another runtime's worker threads go idle first.
REST_S = 0.05
#: Share of the search time given to round 0 (every candidate loaded and measured once).
ROUND0_SHARE = 0.45
#: Round 0 stops measuring new candidates past this share of the search time.
ROUND0_LIMIT = 0.7
#: Survivors loaded side by side at most (memory); more are measured group by group.
MAX_LOADED = 6
#: Interleaved blocks per candidate in rounds after the first.
BLOCKS = 3
#: The harness's warm-up queries before each measured block, and the fewest queries a block measures.
WARMUP_QUERIES = 2
MIN_QUERIES = 3

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
    block_scores: list[float] = field(default_factory=list)
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
        self.samples_ms, self.block_scores, self.items, self.seconds = [], [], 0.0, 0.0

    def fixed_cost_s(self) -> float:
        """What a later round costs this candidate besides measuring: its load, and per block a rest and
        the harness's warm-up queries (estimated from its measured query time)."""
        query_s = (self.p50_ms or 0.0) / 1e3
        return (self.load_ms or 0.0) / 1e3 + BLOCKS * (REST_S + WARMUP_QUERIES * query_s)

    def round_cost_s(self, per_s: float) -> float:
        """What measuring this candidate for ``per_s`` seconds in a later round costs in all: the fixed
        cost, and per block at least the harness's minimum queries (seconds each for a large batch)."""
        query_s = (self.p50_ms or 0.0) / 1e3
        return self.fixed_cost_s() + BLOCKS * max(per_s / BLOCKS, MIN_QUERIES * query_s)

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


class Search:
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
            # After round 0 (short, one candidate at a time) two at least meet in an interleaved round,
            # and no more go on than the time left can measure.
            keep = max(2 if self.rounds == 1 else 1, math.ceil(len(alive) / ETA))
            fits = int(self.left() // ((MIN_MEASURE_S + REST_S) * BLOCKS + 0.1))
            alive = self._gate(alive, keep=max(1, min(keep, fits)))
            if len(alive) > 1:
                alive = self._with_defaults(alive)
            alive, per = self._affordable(alive)
            if len(alive) <= 1:
                break
            self._round(alive, per)
        best = max(alive, key=self._score, default=None)
        if best is not None:
            best = self._keep_defaults(best)
        self._tick("done")
        return best

    def _defaults_of(self, t: Trial) -> Trial | None:
        """The candidate that runs ``t``'s backend and variant, called the same way, at the runtime's own
        default settings (``None`` when ``t`` is that one or the space has none)."""
        c = t.candidate
        if not c.settings:
            return None
        want = replace(c, settings={}).key
        return next((d for d in self.trials if d.candidate.key == want), None)

    def _with_defaults(self, alive: list[Trial]) -> list[Trial]:
        """``alive`` (best first) with the leader's default-settings twin second, when the twin ran, has a
        score and is within the accuracy budget (the same variant on the same backend: the same verdict)."""
        d = self._defaults_of(alive[0])
        if d is None or d in alive or self._score(d) == -math.inf or d.status in ("failed", "rejected"):
            return alive
        v = self.checks.verdict(d.candidate)
        d.loss_points, d.accuracy = v.loss_points, v.how  # as ``_gate`` records it: the twin may be chosen
        if not v.ok:
            return alive
        d.status = "measured"
        return [alive[0], d, *alive[1:]]

    def _keep_defaults(self, best: Trial) -> Trial:
        """``best``, unless its default-settings twin was measured in the same last round and ``best`` did
        not beat it in every block (see the module docstring): then the twin."""
        d = self._defaults_of(best)
        if d is None or d.rounds != best.rounds or len(d.block_scores) != len(best.block_scores):
            return best
        if self._score(d) == -math.inf:  # e.g. its p99 is over the latency budget
            return best
        if len(best.block_scores) < 2 or all(
            b > o for b, o in zip(best.block_scores, d.block_scores, strict=True)
        ):
            return best
        best.status = "measured (not faster than the runtime's defaults in every block)"
        return d

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
        # Too many candidates for the budget: round 0 stops here, so the best can still meet interleaved.
        hard_end = self.t0 + ROUND0_LIMIT * (self.deadline - self.t0)
        overheads: list[float] = []
        todo = list(self.trials)
        for i, t in enumerate(todo):
            now = time.perf_counter()
            if now >= hard_end:
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

    def _share(self, alive: list[Trial]) -> tuple[float, float]:
        """The time the next round of ``alive`` may take (the time left over the rounds still to come), and
        the seconds each is measured for once their loads and warm-ups are paid."""
        n = len(alive)
        rounds_left = max(1, math.ceil(math.log(n, ETA))) if n > 1 else 1
        share = self.left() / rounds_left
        fixed = sum(t.fixed_cost_s() for t in alive)
        return share, max(MIN_MEASURE_S * BLOCKS, (share - fixed) / n - 0.2)

    def _affordable(self, alive: list[Trial]) -> tuple[list[Trial], float]:
        """The best survivors whose next round fits its share of the time left, as estimated from their
        load and query times (a large batch of a large model takes seconds per query: the harness's
        warm-up and minimum queries would overrun a share computed from the duration alone); the others
        are pruned."""
        alive = list(alive)
        if len(alive) <= 1:
            return alive, 0.0
        share, per = self._share(alive)
        while len(alive) > 1 and sum(t.round_cost_s(per) for t in alive) > share:
            dropped = alive.pop()  # the lowest ranked (``_gate`` returns them best first)
            dropped.status = f"pruned r{self.rounds} (time)"
            share, per = self._share(alive)
        return alive, per

    def _round(self, alive: list[Trial], per: float) -> None:
        """Survivors measured again side by side, in interleaved blocks, for ``per`` seconds each."""
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
            from infership.bench import model_pool

            self._pools[batch] = model_pool(
                p.manifest, p.artifact.root, batch_size=batch, shapes=self.shapes, size=8
            )
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
        t.block_scores.append(_block_score(self.objective, r.samples_ms, r.throughput))
        t.items += r.throughput * r.duration_s
        t.seconds += r.duration_s
        t.status = "measured"
        t.rounds = self.rounds + 1


def _block_score(objective: str, samples_ms: list[float], throughput: float) -> float:
    """One measured block's figure, higher is better: minus the median for ``latency``, items per second
    otherwise (a latency budget is judged on every block together)."""
    if objective == "latency":
        return -float(np.median(samples_ms)) if samples_ms else -math.inf
    return float(throughput)
