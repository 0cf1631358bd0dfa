"""Which int8 variant serves which input length: measured, then recorded for the Predictor to route by.

For an artifact that takes text, every int8 variant that met the accuracy budget is timed at batch 1 over a
ladder of sequence lengths (:data:`LENGTHS`, capped at the tokenizer's maximum), interleaved — each round
times every variant once, after a short rest, in a rotating order, so that drift on a busy machine and one
runtime's spinning threads fall on every variant alike. The fastest variant at each length wins it, except
that a change of variant between neighbouring lengths must pay for itself: the lengths are split into runs, one
variant each, that lose least against the fastest at every length, each boundary counted as a loss of
:data:`SWITCH_MARGIN` (:func:`assign`) — so a length won by a few per cent, within the noise of a busy
machine, does not carve a route out of the middle of another variant's. The boundary between two runs is the
geometric middle of their lengths (each variant's medians made non-decreasing in length first:
:func:`monotone`). The table
(:class:`~infership.runtime.routing.RouteTable`) goes into the manifest with the variants, and
``Predictor.load(path, precision="int8")`` routes each batch by its tokens, rows × length
(:mod:`infership.runtime.routing`): measured at batch 1, a length stands for the work of that many tokens,
so large batches go where long inputs run fastest.

Routes are written only when a budget was given: "fastest" is chosen among variants known to be accurate
enough, never over accuracy.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from infership.runtime.hardware import cpu_info
from infership.runtime.profile import passed_budget
from infership.runtime.routing import Route, RouteTable
from infership.runtime.text import TextEncoder
from infership.runtime.timing import round_order

from . import evaluate as ev
from .types import LAYOUTS, QuantizeContext, TargetReport

log = logging.getLogger(__name__)

#: Sequence lengths (tokens, batch 1) every candidate is timed at.
LENGTHS = (8, 16, 32, 64, 128, 256, 512)
_ROUNDS = 5
_CALLS = 5
_REST_S = 0.05
#: A boundary between routes is drawn only where it saves more than this fraction of time, summed (as log
#: ratios) over the lengths it hands to the other variant.
SWITCH_MARGIN = 0.05


def monotone(by_length: dict[int, float]) -> dict[int, float]:
    """Latency can only grow with the input length: a length timed faster than a shorter one was timed during
    a lull of a busy machine, and is read as the shorter one's time (running maximum) before variants are
    compared, so one lucky block cannot carve a route out of the middle of another's."""
    out, top = {}, 0.0
    for n in sorted(by_length):
        top = max(top, by_length[n])
        out[n] = top
    return out


def assign(settled: dict[str, dict[int, float]], lengths: Sequence[int]) -> list[str]:
    """The variant serving each of ``lengths``: the run-wise assignment whose summed log loss against the
    fastest variant at each length, plus ``log(1 + SWITCH_MARGIN)`` per change of variant, is least (dynamic
    programming over lengths × variants; ties keep the earlier variant in ``settled``'s order)."""
    names = list(settled)
    penalty = math.log1p(SWITCH_MARGIN)
    loss = [{v: math.log(settled[v][n] / min(settled[u][n] for u in names)) for v in names} for n in lengths]
    best: list[dict[str, tuple[float, str | None]]] = [{v: (loss[0][v], None) for v in names}]
    for i in range(1, len(lengths)):
        row = {}
        for v in names:
            prev = min(names, key=lambda u, v=v: best[-1][u][0] + (0.0 if u == v else penalty))
            row[v] = (best[-1][prev][0] + (0.0 if prev == v else penalty) + loss[i][v], prev)
        best.append(row)
    v: str | None = min(names, key=lambda u: best[-1][u][0])
    out = []
    for row in reversed(best):
        assert v is not None
        out.append(v)
        v = row[v][1]
    return out[::-1]


def kept_variants(ctx: QuantizeContext, built: Sequence[tuple[TargetReport, list[Path]]]) -> dict[str, str]:
    """The artifact's int8 variants from earlier ``quantize`` calls that this call leaves in place and whose
    recorded validation passed with a loss within this call's budget (variant id → backend): the routes are
    drawn between them and this call's, so quantizing one target at a time never hides the others."""
    replaced = {r.variant_id for r, _ in built}
    layouts = {layout.variant_id: layout.backend for layout in LAYOUTS.values()}
    return {
        v.id: layouts[v.id]
        for v in ctx.artifact.manifest.variants
        if v.id in layouts and v.id not in replaced and passed_budget(v, ctx.budget)
    }


def measure_routes(
    ctx: QuantizeContext, built: Sequence[tuple[TargetReport, list[Path]]], *, rounds: int = _ROUNDS
) -> RouteTable | None:
    """Time the passing int8 candidates at :data:`LENGTHS` and make the route table.

    Returns:
        The table, or ``None`` when the artifact takes no text, no budget was given, or fewer than one
        candidate passed it.
    """
    m = ctx.artifact.manifest
    passing = [(r, files) for r, files in built if r.passed]
    if m.tokenizer is None or ctx.budget is None or not passing:
        return None
    encoder = TextEncoder(m.tokenizer, ctx.artifact.root)
    lengths = [n for n in LENGTHS if n <= m.tokenizer.max_length] or [m.tokenizer.max_length]
    feeds = {n: encoder.token_feeds([n]) for n in lengths}
    backends = {r.variant_id: r.backend for r, _ in passing} | kept_variants(ctx, built)
    times: dict[str, dict[int, list[float]]] = {vid: {n: [] for n in lengths} for vid in backends}
    with ExitStack() as stack:
        runners = {}
        for rep, files in passing:
            art = ev.candidate(
                ctx, files, variant_id=rep.variant_id, format=rep.target.format, target=rep.backend
            )
            runners[rep.variant_id] = stack.enter_context(
                ev.open_variant(art, backend=rep.backend, variant_id=rep.variant_id, scratch=ctx.tmp)
            )
        for vid, backend in backends.items():
            if vid not in runners:  # already in the artifact from an earlier call
                runners[vid] = stack.enter_context(
                    ev.open_variant(ctx.artifact, backend=backend, variant_id=vid, scratch=ctx.tmp)
                )
        for p in runners.values():
            for f in feeds.values():
                p.predict(f)  # first-call allocation and compilation, per shape
        names = list(runners)
        for rnd in range(rounds):
            order = round_order(names, rnd)
            for n in lengths:
                for vid in order:
                    time.sleep(_REST_S)
                    for _ in range(_CALLS):
                        t0 = time.perf_counter()
                        runners[vid].predict(feeds[n])
                        times[vid][n].append((time.perf_counter() - t0) * 1e3)
    medians = {vid: {n: float(np.median(v)) for n, v in per.items()} for vid, per in times.items()}
    settled = {vid: monotone(per) for vid, per in medians.items()}
    winners = assign(settled, lengths)
    routes: list[Route] = []
    for i, (n, vid) in enumerate(zip(lengths, winners, strict=True)):
        last = i == len(lengths) - 1
        if not last and winners[i + 1] == vid:
            continue
        upper = None if last else int(math.sqrt(n * lengths[i + 1]))
        routes.append(Route(upper, vid, backends[vid]))
    measured = {vid: {f"sequence={n}": round(ms, 4) for n, ms in per.items()} for vid, per in medians.items()}
    log.info("int8 routes by length: %s", [r.to_dict() for r in routes])
    return RouteTable("sequence", tuple(routes), cpu_info().model, measured, per="batch")
