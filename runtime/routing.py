"""Routing each batch by input length to the variant measured fastest for that length.

No single int8 recipe wins every input length for a transformer: on a CPU, ONNX Runtime's dynamic int8 is
fastest for short inputs at batch 1, OpenVINO's int8 for long inputs and large batches. ``quantize`` measures
every validated int8 variant at several sequence lengths and records, per precision, which variant and
backend is fastest up to which length (:data:`ROUTES_KEY` in ``Manifest.extra``)::

    {"int8": {"symbol": "sequence",
              "routes": [{"max": 24, "variant": "onnx-int8-dynamic", "backend": "ort-cpu"},
                         {"max": null, "variant": "openvino-int8", "backend": "openvino"}],
              "measured_ms": {...}, "cpu": "..."}}

``Predictor.load(path, precision="int8")`` (backend ``auto``, no variant) then opens one session per variant
the routes name (routes of one variant share it) and runs each batch on the first route whose ``max`` holds
the batch's size along ``symbol`` (all routes' variants passed the same accuracy budget). Tables measured by
``quantize`` bound the **tokens of the whole batch** (``"per": "batch"``: a batch of 32 texts of 70 tokens
runs the route measured for 2,240 tokens — the weight products' work grows with the batch's tokens, and the
runtime that wins long inputs wins large batches); profile routes bound each row's length (``"per": "row"``).
``placement.details["routes"]`` says so. ``Predictor.load(path)`` with no precision does the same when its
default would open the rule's int8 variant (not when a deployment profile decides). Explicit ``backend=`` or
``variant=`` load one variant as always; routes recorded on another kind of CPU are not used.

Deployment profiles stored for several lengths of one input (``infership optimize --shape input_ids=1x8``,
then ``1x128``) are routes too: a plain load runs each batch on the profile measured nearest its length (the
boundary between two measured lengths is their geometric mean), each with its profile's settings.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import selection
from .artifact import Artifact
from .backend import BackendOptions, Placement, SessionBase
from .errors import ArtifactError, BackendUnavailable, InferenceError, InvalidInputError
from .hardware import cpu_info
from .manifest import Manifest
from .spec import TensorSpec

log = logging.getLogger(__name__)

#: Where routes live: ``Manifest.extra[ROUTES_KEY][precision]``.
ROUTES_KEY = "routes"


@dataclass(frozen=True)
class Route:
    """Batches whose size along the routing symbol is at most ``max`` (``None``: any) run ``variant`` on
    ``backend``."""

    max: int | None
    variant: str
    backend: str

    def to_dict(self) -> dict[str, Any]:
        return {"max": self.max, "variant": self.variant, "backend": self.backend}


#: What a route's ``max`` bounds: each row's size along the symbol (``row``), or the batch's total along it
#: — the size along the symbol times the batch's rows, e.g. the tokens of a batch of texts (``batch``).
PER = ("row", "batch")


@dataclass(frozen=True)
class RouteTable:
    """The routes of one precision: the symbol routed on, the routes in order, what they were measured on,
    and whether ``max`` bounds each row's size along the symbol or the whole batch's (:data:`PER`)."""

    symbol: str
    routes: tuple[Route, ...]
    cpu: str | None = None
    measured_ms: Mapping[str, Any] | None = None
    per: str = "row"

    def __post_init__(self) -> None:
        if self.per not in PER:
            raise ArtifactError(f"routes must be per {' or '.join(PER)}, got {self.per!r}")

    def pick(self, size: int) -> int:
        """Index of the route for a batch of ``size`` along the symbol."""
        for i, r in enumerate(self.routes):
            if r.max is None or size <= r.max:
                return i
        return len(self.routes) - 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "routes": [r.to_dict() for r in self.routes],
            "cpu": self.cpu,
            "measured_ms": dict(self.measured_ms or {}),
            "per": self.per,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouteTable:
        """Read :meth:`to_dict`.

        Raises:
            ArtifactError: A malformed record.
        """
        try:
            routes = tuple(
                Route(None if r["max"] is None else int(r["max"]), str(r["variant"]), str(r["backend"]))
                for r in data["routes"]
            )
            per = str(data.get("per", "row"))  # tables written before "per" bound each row
            table = cls(str(data["symbol"]), routes, data.get("cpu"), data.get("measured_ms"), per)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"malformed routes record ({type(exc).__name__}: {exc})") from exc
        if not routes:
            raise ArtifactError("routes record lists no route")
        return table


def read_routes(manifest: Manifest, precision: str) -> RouteTable | None:
    """The routes recorded for ``precision``, or ``None``."""
    record = (manifest.extra.get(ROUTES_KEY) or {}).get(precision)
    return RouteTable.from_dict(record) if record else None


def with_routes(manifest: Manifest, precision: str, table: RouteTable) -> Manifest:
    """A copy of ``manifest`` recording ``table`` for ``precision``."""
    routes = {**(manifest.extra.get(ROUTES_KEY) or {}), precision: table.to_dict()}
    return replace(manifest, extra={**manifest.extra, ROUTES_KEY: routes})


class RoutedSession(SessionBase):
    """Several sessions of one artifact; each batch runs on the route its length selects."""

    def __init__(self, table: RouteTable, opened: Sequence[selection.Opened], inputs: Sequence[TensorSpec],
                 outputs: Sequence[TensorSpec]) -> None:  # fmt: skip
        self._table = table
        self._opened = list(opened)
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self._axis = _axis_of(table.symbol, self.inputs)
        self.optimal_concurrency = max(getattr(o.session, "optimal_concurrency", 1) for o in opened)
        self.placement = Placement(
            backend="+".join(dict.fromkeys(o.backend for o in opened)),
            device=opened[0].placement.device,
            providers=tuple(dict.fromkeys(p for o in opened for p in o.placement.providers)),
            details={
                "routes": [r.to_dict() for r in table.routes],
                "per": table.per,
                "selection": "routes by length",
            },
        )

    def route_for(self, feeds: Mapping[str, Any]) -> selection.Opened:
        """The opened variant a batch runs on."""
        name, axis = self._axis
        shape = tuple(getattr(feeds[name], "shape", ()))
        size = int(shape[axis]) if len(shape) > axis else 1
        if self._table.per == "batch":
            size *= math.prod(int(d) for d in shape[:axis])  # the rows of the batch (e.g. its texts)
        return self._opened[self._table.pick(size)]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._opened:
            raise InferenceError("the session is closed")
        return self.route_for(feeds).session.run(feeds)

    def close(self) -> None:
        opened, self._opened = self._opened, []
        for o in {id(o.session): o for o in opened}.values():  # a session several routes share closes once
            o.session.close()


def _axis_of(symbol: str, inputs: Sequence[TensorSpec]) -> tuple[str, int]:
    for spec in inputs:
        for axis, dim in enumerate(spec.shape):
            if dim == symbol:
                return spec.name, axis
    raise ArtifactError(f"routes are keyed by {symbol!r}, which no input has")


def open_routed(
    artifact: Artifact, request: selection.Request, base: BackendOptions
) -> selection.Opened | None:
    """The routed session for ``request`` when the artifact records routes for its precision and the
    request leaves the choice to infership (``auto``, no variant, no autotune); else ``None``.

    Without a precision either, the default load would open the rule's validated int8 variant
    (:func:`~infership.runtime.selection.planned`): when routes are recorded for that variant's precision,
    they choose per batch instead (all their variants passed the same budget). A deployment profile measured
    for this machine is not overridden by them: it decides alone, or, with profiles stored at several lengths
    of one input, they route (:func:`_profile_routes`).

    Routes recorded on another CPU model are not used (logged). A route that cannot open here (its
    backend unavailable) leaves the whole table unused: the fixed order applies, as without routes.
    """
    if request.backend != "auto" or request.variant is not None or request.autotune:
        return None
    precision, chosen = request.precision, dict[str, str]()
    if precision is None:
        from .profile import PROFILES_KEY

        if not artifact.manifest.extra.get(ROUTES_KEY) and not artifact.manifest.extra.get(PROFILES_KEY):
            return None  # nothing to consult: leave the default choice to selection
        plan = selection.planned(artifact, request, base)
        if plan is not None and plan.profile is not None:
            return _profile_routes(artifact, request, base, plan.profile)
        if plan is None or not artifact.manifest.extra.get(ROUTES_KEY):
            return None
        precision = artifact.manifest.variant(plan.variant).precision
        chosen = {"selection": f"{plan.source}, routes by length", "selection_reason": plan.reason}
        request = replace(request, precision=precision)
    table = read_routes(artifact.manifest, precision)
    if table is None:
        return None
    here = cpu_info().model
    if table.cpu and here and table.cpu != here:
        log.info("routes measured on %r, this CPU is %r: not used", table.cpu, here)
        return None
    opened: list[selection.Opened] = []
    sessions: dict[tuple[str, str], selection.Opened] = {}  # routes of one variant share its session
    try:
        for route in table.routes:
            key = (route.backend, route.variant)
            if key not in sessions:
                req = replace(request, backend=route.backend, variant=route.variant)
                sessions[key] = selection.open_on(artifact, route.backend, req, base)
            opened.append(sessions[key])
    except (BackendUnavailable, ArtifactError, InvalidInputError) as exc:
        for o in sessions.values():
            o.session.close()
        log.warning("routes for %s not used: %s", request.precision, exc)
        return None
    m = artifact.manifest
    session = RoutedSession(table, opened, m.inputs, m.outputs)
    placement = replace(session.placement, details={**session.placement.details, **chosen})
    return selection.Opened(session.placement.backend, opened[0].variant, session, base, placement)


def _profile_routes(
    artifact: Artifact, request: selection.Request, base: BackendOptions, profile: Any
) -> selection.Opened | None:
    """Routes by length from the profiles stored for several lengths of one input (``None`` with fewer
    than two): the boundary between two measured lengths is their geometric mean, and each route opens
    its profile's variant with its settings (options the caller gave still win). A route that cannot
    open leaves the single profile to decide."""
    from .profile import bucket_profiles

    found = bucket_profiles(artifact.manifest, profile)
    if found is None:
        return None
    symbol, points = found
    routes = tuple(
        Route(None if i == len(points) - 1 else int(math.sqrt(n * points[i + 1][0])), p.variant, p.backend)
        for i, (n, p) in enumerate(points)
    )
    table = RouteTable(symbol, routes, cpu_info().model, {f"{symbol}={n}": p.figures for n, p in points})
    opened: list[selection.Opened] = []
    try:
        for _, p in points:
            opts = p.apply(replace(base, device=p.device))
            opened.append(selection.open_on(artifact, p.backend, replace(request, variant=p.variant), opts))
    except (BackendUnavailable, ArtifactError, InvalidInputError) as exc:
        for o in opened:
            o.session.close()
        log.warning("profiles by %s not used as routes: %s", symbol, exc)
        return None
    m = artifact.manifest
    session = RoutedSession(table, opened, m.inputs, m.outputs)
    details = {
        **session.placement.details,
        "selection": "from profile, routes by length",
        "profiles": [p.describe() for _, p in points],
    }
    placement = replace(session.placement, details=details)
    return selection.Opened(
        session.placement.backend, opened[0].variant, session, opened[0].options, placement
    )
