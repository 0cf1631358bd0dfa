"""The ``http`` backend: a Predictor whose model runs behind a prediction server (``infership serve``).

The device is the server's URL::

    Predictor.load("artifacts/mobilenet", backend="http", device="http://127.0.0.1:8000")

so everything that drives a Predictor — the benchmark harness and its scenarios included
(``infership bench ARTIFACT --backend http --device http://127.0.0.1:8000``) — drives the server. The local
artifact supplies the specs and input checks; requests go to ``POST /predict`` as ``.npy`` (one input) or
``.npz`` (several), answers come back as ``.npz`` (the protocol is in :mod:`infership.runtime.wire`).
Connections are kept alive, one per calling thread. ``check`` asks ``GET /healthz``; ``open`` also checks
that the server serves a model with the same inputs and outputs. No option is applied client-side
(threads, streams, the hint belong to the server): setting one is recorded as ignored.

Only the standard library is used.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..artifact import Artifact
from ..backend import BackendOptions, Placement, SessionBase
from ..errors import BackendUnavailable, InferenceError, InvalidInputError
from ..manifest import FORMATS, Variant
from ..spec import TensorSpec
from ..wire import NPZ, decode_response, encode_request

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8000"
_CHECK_TIMEOUT_S = 5.0


def _parse(url: str | None) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url or DEFAULT_URL)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackendUnavailable(
            f"backend 'http' needs the server's URL as the device, e.g. {DEFAULT_URL}; got {url!r}"
        )
    return parts


def _connection(parts: urllib.parse.SplitResult, timeout: float) -> http.client.HTTPConnection:
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return cls(parts.hostname, parts.port, timeout=timeout)  # type: ignore[arg-type]


def _get_json(parts: urllib.parse.SplitResult, path: str, timeout: float) -> tuple[int, Any]:
    conn = _connection(parts, timeout)
    try:
        conn.request("GET", parts.path.rstrip("/") + path)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(body) if body else None
    except json.JSONDecodeError:
        return resp.status, body.decode(errors="replace")[:200]


class HttpBackend:
    """A prediction server reached over HTTP; the device is its URL."""

    name = "http"
    formats: tuple[str, ...] = FORMATS  # the server decides which variant runs; any local one gives specs
    default_device = DEFAULT_URL
    honours: frozenset[str] = frozenset()
    #: ``timeout_s``: seconds to wait for one answer (default 60).
    extra_keys: frozenset[str] = frozenset({"timeout_s"})

    def check(self, device: str | None = None) -> None:
        self._health(_parse(device), device or DEFAULT_URL)

    def _health(self, parts: urllib.parse.SplitResult, url: str) -> dict[str, Any]:
        try:
            status, doc = _get_json(parts, "/healthz", _CHECK_TIMEOUT_S)
        except (OSError, http.client.HTTPException) as exc:
            raise BackendUnavailable(
                f"no prediction server answers at {url} ({exc}); start one with "
                "'infership serve ARTIFACT --port PORT'"
            ) from exc
        if status != 200:
            raise BackendUnavailable(
                f"the server at {url} is not ready: GET /healthz answered {status} {doc}"
            )
        return doc if isinstance(doc, dict) else {}

    def open(self, artifact: Artifact, variant: Variant, options: BackendOptions) -> HttpSession:
        unknown = set(options.extra) - self.extra_keys
        if unknown:
            raise InvalidInputError(
                f"http: unknown extra option(s) {sorted(unknown)}; known: {sorted(self.extra_keys)}"
            )
        url = options.device or DEFAULT_URL
        parts = _parse(url)
        health = self._health(parts, url)
        _check_same_model(artifact, health, url)
        placement = Placement(
            backend=self.name,
            device=url,
            providers=("http", *([f"server:{health['backend']}"] if health.get("backend") else [])),
            details={"server": health},
        )
        timeout = float(options.extra.get("timeout_s", 60.0))
        return HttpSession(artifact, parts, placement, timeout)


def _check_same_model(artifact: Artifact, health: Mapping[str, Any], url: str) -> None:
    """The server must serve a model with our inputs and outputs (names and dtypes), else the local specs
    would check inputs against the wrong model."""
    m = artifact.manifest
    for side, specs in (("inputs", m.inputs), ("outputs", m.outputs)):
        theirs = health.get(side)
        if theirs is None:
            continue
        mine = [(s.name, s.dtype) for s in specs]
        got = [(str(d.get("name")), str(d.get("dtype"))) for d in theirs]
        if mine != got:
            raise BackendUnavailable(
                f"the server at {url} serves {health.get('model')!r} with {side} {got}, but artifact "
                f"{m.name!r} has {mine}"
            )


class HttpSession(SessionBase):
    """One client of the server; ``run`` is thread-safe (a kept-alive connection per thread)."""

    def __init__(
        self, artifact: Artifact, parts: urllib.parse.SplitResult, placement: Placement, timeout: float
    ) -> None:
        self.inputs: tuple[TensorSpec, ...] = tuple(artifact.manifest.inputs)
        self.outputs: tuple[TensorSpec, ...] = tuple(artifact.manifest.outputs)
        self.placement = placement
        self._parts = parts
        self._path = parts.path.rstrip("/") + "/predict"
        self._timeout = timeout
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connection(self._parts, self._timeout)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        body, ctype = encode_request(feeds)
        headers = {"Content-Type": ctype, "Accept": NPZ}
        for attempt in (1, 2):
            conn = self._conn()
            try:
                conn.request("POST", self._path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                # A kept-alive connection the server closed meanwhile: reconnect once, then give up.
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise InferenceError(f"{self.placement.device}: request failed: {exc}") from exc
        if resp.status == 200:
            return decode_response(data, resp.getheader("Content-Type"))
        detail = _detail(data)
        if 400 <= resp.status < 500:
            raise InvalidInputError(f"the server refused the input ({resp.status}): {detail}")
        raise InferenceError(f"the server failed ({resp.status}): {detail}")

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


def _detail(data: bytes) -> str:
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return data[:300].decode(errors="replace")
    if isinstance(doc, dict) and "detail" in doc:
        return str(doc["detail"])
    return str(doc)[:300]
