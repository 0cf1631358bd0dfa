"""An artifact on Ray Serve: ``POST /predict``, ``GET /healthz``, ``GET /metrics``.

Each replica holds one :class:`~infership.runtime.Predictor` whose intra-op threads equal the replica's
``num_cpus`` (ONNX Runtime and OpenVINO otherwise size their pools from the machine's cores and the
replicas fight over them), warms it up before it takes traffic, and batches concurrent requests with
``@serve.batch`` (rows merged by :func:`infership.runtime.batching.run_together`, so a bad request fails
alone). Every request is checked on arrival; bad input gets a 4xx with the validation message. The request
protocol is :mod:`infership.runtime.wire`.

Metrics: each replica records into ``prometheus_client`` in multiprocess mode (a directory shared by the
replicas on one host), so ``GET /metrics`` — answered by any replica — reports all of that host's
replicas. The input/output statistics for drift are computed off the request path, on one monitoring thread
per replica, in the order batches finish (at most ``MONITOR_BACKLOG`` waiting); the thread still shares the
replica's CPU. Ray Serve's own metrics (queueing, replica health) are on Ray's metrics endpoint.

Ingress: Serve's Python HTTP proxy by default, or Serve's HAProxy ingress (``ingress="haproxy"``, see
:mod:`infership.serve.ingress`), which forwards each request straight to an HTTP server inside a replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from infership.runtime.batching import run_together, shape_key
from infership.runtime.errors import InfershipError, InvalidInputError
from infership.runtime.wire import UnsupportedMediaType, decode_request, encode_response

from .ingress import check_haproxy_running, haproxy_environment, restore_environment

__all__ = ["ServeOptions", "build_app", "serve_artifact", "serving_in_thread"]

log = logging.getLogger(__name__)

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
INGRESSES = ("proxy", "haproxy")
#: Most batches waiting for their drift statistics per replica; more are left out of the statistics.
MONITOR_BACKLOG = 64
#: A request that finds its replica idle runs on the replica's event loop, without a thread hand-off
#: (0.3–0.5 ms on a busy 2-core machine), when the last run had the same input shapes and its time per row
#: says this one takes less than this; others go to a worker thread, so the loop (``/healthz``,
#: ``/metrics``, Serve's own work) waits at most about this long behind a model run.
INLINE_RUN_S = 0.02
#: Ray Serve's switch for running a deployment's code on a thread of its own (read in each replica).
USER_CODE_THREAD_ENV = "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"


@dataclass(frozen=True)
class ServeOptions:
    """How an artifact is served (see ``infership serve --help``).

    Args:
        backend, precision, variant: Which backend and variant each replica loads.
        replicas: Replicas (the minimum when autoscaling).
        max_replicas: Autoscale up to this many replicas (``None``: a fixed number).
        target_ongoing_requests: Autoscaling target of requests in flight per replica.
        num_cpus: CPUs reserved per replica; its Predictor's intra-op threads (at least 1).
        num_gpus: GPUs per replica.
        max_batch: Most rows per model run (``@serve.batch``'s ``max_batch_size``, counted in rows).
        max_wait_ms: How long a batch waits to fill. 0 runs what is queued at once: batches still form
            under load, while the previous batch runs. A request that finds its replica idle runs at once
            either way.
        max_ongoing_requests: Requests in flight per replica before Serve queues them at the proxy.
        request_timeout_s: Per-request limit, enforced by Serve's HTTP proxy.
        max_body_bytes: Largest request body; larger gets 413.
        warmup: Warm-up calls per replica before it takes traffic.
        graceful_shutdown_timeout_s: How long a stopping replica may finish its requests.
        access_log: Let Serve log every request (off: a log write per request costs latency).
        ingress: ``proxy`` (Serve's HTTP proxy) or ``haproxy`` (Serve's HAProxy ingress, for the local Ray
            that :func:`serve_artifact` starts; see the module's documentation).
    """

    backend: str = "auto"
    precision: str = "fp32"
    variant: str | None = None
    replicas: int = 1
    max_replicas: int | None = None
    target_ongoing_requests: float = 8.0
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_batch: int = 16
    max_wait_ms: float = 0.0
    max_ongoing_requests: int = 64
    request_timeout_s: float = 30.0
    max_body_bytes: int = 64_000_000
    warmup: int = 3
    graceful_shutdown_timeout_s: float = 20.0
    access_log: bool = False
    ingress: str = "proxy"

    def __post_init__(self) -> None:
        if self.ingress not in INGRESSES:
            raise InvalidInputError(f"ingress must be one of {', '.join(INGRESSES)}, got {self.ingress!r}")

    @property
    def threads(self) -> int:
        return max(1, int(self.num_cpus))


def _rows(feeds: dict[str, np.ndarray]) -> int:
    return int(next(iter(feeds.values())).shape[0])


class ArtifactServer:
    """The replica: one Predictor, batched, checked, measured. Wrapped by ``serve.deployment`` in
    :func:`build_app` (kept a plain class so it can be tested without Ray)."""

    def __init__(self, artifact: str, options: dict[str, Any]) -> None:
        from infership.runtime import Predictor
        from infership.runtime.monitoring import Monitor

        self.options = ServeOptions(**options)
        o = self.options
        self.predictor = Predictor.load(
            artifact,
            backend=o.backend,
            precision=o.precision if o.variant is None else None,
            variant=o.variant,
            intra_op_threads=o.threads,
            warmup=o.warmup,
        )
        self.monitor = Monitor(self.predictor.manifest)
        # Drift statistics run here, off the request path, in the order batches finish.
        self._monitoring = ThreadPoolExecutor(1, thread_name_prefix="infership-monitor")
        self._backlog_lock = threading.Lock()
        self._backlog = 0  # batches waiting for their statistics
        self._skipped = 0  # batches left out because the backlog was full
        self._busy = 0  # requests between arrival and answer (changed on the event loop only)
        # The last model run: its input shapes past the batch axis and its seconds per row (none yet).
        self._last_run: tuple[tuple[Any, ...], float] | None = None
        self._closed = False

    # ---------------------------------------------------------------------------- requests
    async def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, str]:
        """One HTTP request → (status, body, content type)."""
        path = path.rstrip("/") or "/"
        if path == "/predict":
            if method != "POST":
                return _error(405, "MethodNotAllowed", "use POST /predict")
            return await self._predict(headers, body)
        if path == "/healthz":
            return 200, json.dumps(self.health()).encode(), "application/json"
        if path == "/metrics":
            data, ctype = self.monitor.exposition()
            return 200, data, ctype
        return _error(404, "NotFound", f"no route {path}; use POST /predict, GET /healthz, GET /metrics")

    async def _predict(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str]:
        start = asyncio.get_running_loop().time()
        try:
            if len(body) > self.options.max_body_bytes:
                return _error(413, "PayloadTooLarge", f"body over {self.options.max_body_bytes} bytes")
            m = self.predictor.manifest
            inputs = decode_request(
                body,
                headers.get("content-type"),
                self.predictor.inputs,
                m.preprocessing,
                text=m.tokenizer is not None,
            )
            if isinstance(inputs, np.ndarray) or (
                isinstance(inputs, dict) and all(isinstance(v, np.ndarray) for v in inputs.values())
            ):
                feeds = self.predictor.prepare(inputs)
            else:  # an image or texts: decoding or tokenizing takes milliseconds, off the event loop
                feeds = await asyncio.to_thread(self.predictor.prepare, inputs)
            if _rows(feeds) > self.options.max_batch:
                outputs = await asyncio.to_thread(self.predictor.predict, feeds)
            else:
                # A request that finds the replica idle runs at once: the batching queue's hand-offs cost
                # about 1 ms and there is nothing to batch with. Under load requests queue and batch.
                item, idle = (feeds, time.perf_counter()), self._busy == 0
                self._busy += 1
                try:
                    if idle:  # requests that arrived with this one register first: then it is not alone
                        await asyncio.sleep(0)
                        idle = self._busy == 1
                    if idle and self._short_run(feeds):
                        result = self.run_batch_here([item])[0]
                    elif idle:
                        result = (await self.run_batch([item]))[0]
                    else:
                        result = await self._batched(item)
                finally:
                    self._busy -= 1
                if isinstance(result, BaseException):
                    raise result
                outputs = result
        except InfershipError as exc:
            self.monitor.observe_request(asyncio.get_running_loop().time() - start, error=exc)
            if isinstance(exc, UnsupportedMediaType):
                return _error(415, type(exc).__name__, str(exc))
            status = 400 if isinstance(exc, InvalidInputError) else 500
            return _error(status, type(exc).__name__, str(exc))
        self.monitor.observe_request(asyncio.get_running_loop().time() - start)
        data, ctype = encode_response(outputs, headers.get("accept"))
        return 200, data, ctype

    async def _batched(self, item: tuple[dict[str, np.ndarray], float]) -> Any:
        """One request's feeds and arrival time in, its outputs (or error) out. Without Ray, runs alone;
        the deployment replaces it with a ``@serve.batch`` method over :meth:`run_batch`."""
        return (await self.run_batch([item]))[0]

    def _short_run(self, feeds: dict[str, np.ndarray]) -> bool:
        """Whether running ``feeds`` should take under ``INLINE_RUN_S``, judged from the last run: same
        shapes past the batch axis (a new shape may mean a reshape or an engine build) and its time per
        row times these rows."""
        last = self._last_run
        return last is not None and last[0] == shape_key(feeds) and _rows(feeds) * last[1] < INLINE_RUN_S

    async def run_batch(self, items: list[tuple[dict[str, np.ndarray], float]]) -> list[Any]:
        """Run requests gathered by ``@serve.batch`` in a worker thread (the replica's loop stays free)."""
        return await asyncio.to_thread(self.run_batch_here, items)

    def run_batch_here(self, items: list[tuple[dict[str, np.ndarray], float]]) -> list[Any]:
        """Run requests on the calling thread: their outputs, or the errors their runs raised."""
        started = time.perf_counter()

        def on_batch(
            members: list[int], merged: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
        ) -> None:
            self._last_run = (shape_key(merged), (time.perf_counter() - started) / max(_rows(merged), 1))
            self.monitor.observe_batch(_rows(merged), [started - items[i][1] for i in members])
            self._observe_later(merged, outputs)

        return run_together(self.predictor.predict, [feeds for feeds, _ in items], on_batch=on_batch)

    def health(self) -> dict[str, Any]:
        p = self.predictor
        return {
            "status": "ok",
            "model": p.manifest.name,
            "variant": p.variant.id,
            "backend": p.backend,
            "threads": self.options.threads,
            "placement": p.placement.to_dict(),
            "inputs": [s.to_dict() for s in p.inputs],
            "outputs": [s.to_dict() for s in p.outputs],
            "drift": "on" if self.monitor.drift else f"off: {self.monitor.drift_off_reason}",
        }

    def check_health(self) -> None:
        """Ray Serve's health probe: a closed Predictor makes the replica unhealthy (it is replaced)."""
        if self._closed:
            raise RuntimeError("the Predictor is closed")

    def _observe_later(self, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        """Queue a batch's drift statistics for the monitoring thread. At most ``MONITOR_BACKLOG`` batches
        wait (each holds its inputs and outputs); beyond that a batch is left out of the statistics, with a
        warning, rather than let memory grow when the replica's CPU cannot keep up."""
        with self._backlog_lock:
            if self._closed:
                return
            if self._backlog >= MONITOR_BACKLOG:
                self._skipped += 1
                if self._skipped == 1 or self._skipped % 1000 == 0:
                    log.warning("drift statistics are behind: %d batches left out so far", self._skipped)
                return
            self._backlog += 1
            self._monitoring.submit(self._observe, feeds, outputs)  # before close() shuts the pool down

    def _observe(self, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        try:
            self.monitor.observe_data(feeds, outputs)
        except Exception as exc:  # noqa: BLE001 - statistics never fail a request; said in the log
            log.warning("drift statistics failed: %r", exc)
        finally:
            with self._backlog_lock:
                self._backlog -= 1

    def settle(self) -> None:
        """Wait until the statistics of every answered request are recorded (drift, non-finite counts)."""
        with self._backlog_lock:
            if self._closed:
                return
            done = self._monitoring.submit(lambda: None)
        done.result()

    def close(self) -> None:
        with self._backlog_lock:
            closing, self._closed = not self._closed, True
        if closing:
            self._monitoring.shutdown(wait=True)
            self.predictor.close()
            if os.environ.get(METRICS_DIR_ENV):
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(os.getpid())


def _batch_rows(items: list[tuple[dict[str, np.ndarray], float]]) -> int:
    return sum(_rows(feeds) for feeds, _ in items)


def _error(status: int, kind: str, detail: str) -> tuple[int, bytes, str]:
    return status, json.dumps({"error": kind, "detail": detail}).encode(), "application/json"


def build_app(
    artifact: str | os.PathLike[str], options: ServeOptions, *, metrics_dir: str | None = None
) -> Any:
    """The Ray Serve application for ``artifact`` (bind it with ``serve.run``).

    Args:
        artifact: The artifact directory; every node that hosts a replica reads it at this path.
        options: Replicas, resources, batching, limits.
        metrics_dir: Directory for ``prometheus_client``'s multiprocess files (created on each host);
            ``None``: each replica reports only its own metrics.

    Returns:
        A bound ``ray.serve`` application.
    """
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    o = options
    # The app runs on the replica's own event loop, not a second thread with its own loop: two thread
    # hand-offs fewer per request (0.5–0.9 ms at batch 1 here, through HAProxy). Model runs expected to
    # take over ``INLINE_RUN_S`` leave the loop; images and texts are decoded in a worker thread.
    env = {"OMP_NUM_THREADS": str(o.threads), USER_CODE_THREAD_ENV: "0"}
    if metrics_dir:
        env[METRICS_DIR_ENV] = metrics_dir
    deployment_options: dict[str, Any] = {
        "name": "infership",
        "ray_actor_options": {
            "num_cpus": o.num_cpus,
            "num_gpus": o.num_gpus,
            "runtime_env": {"env_vars": env},
        },
        "max_ongoing_requests": o.max_ongoing_requests,
        "graceful_shutdown_timeout_s": o.graceful_shutdown_timeout_s,
        "graceful_shutdown_wait_loop_s": 1.0,
        "health_check_period_s": 5.0,
        "logging_config": {"enable_access_log": o.access_log},
    }
    if o.max_replicas:
        deployment_options["autoscaling_config"] = {
            "min_replicas": o.replicas,
            "initial_replicas": o.replicas,
            "max_replicas": max(o.max_replicas, o.replicas),
            "target_ongoing_requests": o.target_ongoing_requests,
        }
    else:
        deployment_options["num_replicas"] = o.replicas

    @serve.deployment(**deployment_options)
    class InfershipDeployment(ArtifactServer):
        def __init__(self, artifact: str, options: dict[str, Any]) -> None:
            if os.environ.get(METRICS_DIR_ENV):
                Path(os.environ[METRICS_DIR_ENV]).mkdir(parents=True, exist_ok=True)
            super().__init__(artifact, options)
            self._batched.set_max_batch_size(self.options.max_batch)
            self._batched.set_batch_wait_timeout_s(self.options.max_wait_ms / 1000.0)

        @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0, batch_size_fn=_batch_rows)
        async def _batched(self, items: list[tuple[dict[str, np.ndarray], float]]) -> list[Any]:
            return await self.run_batch(items)

        async def __call__(self, request: Request) -> Response:
            body = await request.body()
            headers = {k.lower(): v for k, v in request.headers.items()}
            status, data, ctype = await self.handle(request.method, request.url.path, headers, body)
            return Response(content=data, status_code=status, media_type=ctype)

        def __del__(self) -> None:
            self.close()

    return InfershipDeployment.bind(str(Path(artifact).resolve()), asdict(o))


def serve_artifact(
    artifact: str | os.PathLike[str],
    options: ServeOptions,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    on_ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Start Ray (or join ``address``), serve ``artifact`` until SIGINT/SIGTERM (or ``stop`` is set), then
    shut down gracefully: Serve drains the replicas, and a Ray started here is stopped.

    Raises:
        ArtifactError: The artifact cannot be read (checked before Ray starts).
    """
    import ray
    from infership.runtime import Artifact
    from ray import serve

    from .local_ray import init_local_ray

    Artifact.load(artifact)  # fail before starting anything if the path is wrong
    started_ray = not ray.is_initialized()
    restore: dict[str, str | None] = {}
    if options.ingress == "haproxy":
        restore = haproxy_environment(
            address=address, ray_running=not started_ray, drain_s=options.graceful_shutdown_timeout_s
        )
    try:
        if started_ray:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                init_local_ray(num_cpus=None, include_dashboard=False, log_to_driver=False)
    except BaseException:
        restore_environment(restore)
        raise
    metrics_dir = tempfile.mkdtemp(prefix="infership-metrics-")
    stop = stop or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port, "request_timeout_s": options.request_timeout_s})
        serve.run(build_app(artifact, options, metrics_dir=metrics_dir), name="infership", route_prefix="/")
        if options.ingress == "haproxy":
            check_haproxy_running(host, port)
        if on_ready is not None:
            on_ready(f"http://{host}:{port}")
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        serve.shutdown()
        if started_ray:
            ray.shutdown()
        restore_environment(restore)
        import shutil

        shutil.rmtree(metrics_dir, ignore_errors=True)


@contextlib.contextmanager
def serving_in_thread(
    artifact: str | os.PathLike[str],
    options: ServeOptions,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    timeout_s: float = 300.0,
    stop_timeout_s: float = 120.0,
) -> Iterator[str]:
    """:func:`serve_artifact` in a background thread, for programs that keep their main thread (tests,
    benchmarks): yields the URL once Serve is ready, then stops it gracefully on leaving the block.

    Raises:
        RuntimeError: Serve did not come up within ``timeout_s``, or did not stop within ``stop_timeout_s``.
        Exception: What :func:`serve_artifact` raised, as soon as it raised (not after the timeout).
    """
    stop, ready = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            serve_artifact(artifact, options, host=host, port=port, stop=stop, on_ready=lambda _: ready.set())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            failure.append(exc)

    thread = threading.Thread(target=run, name="infership-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not ready.wait(0.5):
            if failure:
                raise failure[0]
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"Ray Serve did not come up within {timeout_s:.0f} s")
        yield f"http://{host}:{port}"
    finally:
        stop.set()
        thread.join(stop_timeout_s)
    if thread.is_alive():
        raise RuntimeError(f"Ray Serve did not stop within {stop_timeout_s:.0f} s")
    if failure:  # serve_artifact failed while stopping
        raise failure[0]
