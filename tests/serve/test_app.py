"""The Ray Serve app: the replica's request handling without Ray (fast), then the real app on a local Ray
bound to 127.0.0.1 (slow: Ray start-up), driven over HTTP and through the ``http`` backend."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from infership.runtime import Predictor
from infership.serve.app import ArtifactServer, ServeOptions
from prometheus_client.parser import text_string_to_metric_families

from tests.serve.conftest import needs_ray

NPY = {"content-type": "application/x-npy"}


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


@pytest.fixture(scope="module")
def replica(tiny_artifact: Path):
    server = ArtifactServer(str(tiny_artifact), {"backend": "ort-cpu", "warmup": 1, "max_body_bytes": 60_000})
    yield server
    server.close()


def _call(server: ArtifactServer, method: str, path: str, body: bytes = b"", headers=None):
    status, data, ctype = asyncio.run(server.handle(method, path, dict(headers or {}), body))
    return status, (json.loads(data) if ctype == "application/json" else data)


def test_replica_predicts_like_the_predictor(replica, tiny_artifact):
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    status, doc = _call(replica, "POST", "/predict", _npy(x), NPY)
    with Predictor.load(tiny_artifact, backend="ort-cpu") as p:
        want = p.predict(x)["logits"]
    assert status == 200
    np.testing.assert_allclose(np.asarray(doc["outputs"]["logits"]), want, rtol=1e-6, atol=1e-6)
    status, doc = _call(replica, "POST", "/predict", json.dumps({"inputs": {"x": x.tolist()}}).encode())
    assert status == 200 and np.asarray(doc["outputs"]["logits"]).shape == (2, 5)
    assert replica.options.threads == 1 and replica.predictor.options.intra_op_threads == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "reason"),
    [
        ("POST", "/predict", b"not npy", NPY, 400, "not a valid .npy"),
        ("POST", "/predict", _npy(np.zeros((1, 3, 8, 8), np.float32)), NPY, 400, "axis 2"),
        ("POST", "/predict", b"{}", {}, 400, "inputs"),
        ("POST", "/predict", b"\xff\xd8", {"content-type": "image/jpeg"}, 415, "no preprocessing"),
        ("POST", "/predict", b"a cat", {"content-type": "text/plain"}, 415, "tokenizer"),
        ("POST", "/predict", b"x" * 70_000, NPY, 413, "bytes"),
        ("GET", "/predict", b"", {}, 405, "POST"),
        ("GET", "/nope", b"", {}, 404, "no route"),
    ],
)
def test_bad_requests_get_a_4xx_with_the_reason(replica, method, path, body, headers, status, reason):
    got, doc = _call(replica, method, path, body, headers)
    assert got == status and reason in doc["detail"]


def test_health_and_metrics(replica):
    status, doc = _call(replica, "GET", "/healthz")
    assert status == 200 and doc["model"] == "tiny" and doc["backend"] == "ort-cpu"
    assert doc["inputs"][0]["name"] == "x" and doc["drift"].startswith("off: the artifact records no")
    status, body = _call(replica, "GET", "/metrics")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert status == 200 and {"infership_requests", "infership_request_latency_seconds"} <= names


# ------------------------------------------------------------------------------------- on a local Ray
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_app(local_ray, tiny_artifact: Path):
    from infership.serve.app import serving_in_thread
    from ray import serve

    port = _free_port()
    options = ServeOptions(backend="ort-cpu", replicas=2, num_cpus=1, warmup=1)
    # serving_in_thread raises if Serve does not come up within 180 s or its thread does not stop in 120 s.
    with serving_in_thread(tiny_artifact, options, port=port, timeout_s=180, stop_timeout_s=120) as url:
        yield url, port
    assert local_ray.is_initialized()  # a Ray it did not start stays up
    assert not serve.status().applications  # Serve was shut down


@pytest.mark.slow
@needs_ray
def test_ray_serve_app(ray_app, tiny_artifact):
    url, port = ray_app
    x = np.random.default_rng(1).standard_normal((8, 3, 16, 16)).astype(np.float32)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(method: str, path: str, body: bytes | None = None, headers=None):
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()

    assert request("GET", "/healthz")[0] == 200
    status, body = request("POST", "/predict", b"\x93NUMPY broken", {"Content-Type": "application/x-npy"})
    assert status == 400 and b"not a valid .npy" in body
    with Predictor.load(tiny_artifact, backend="ort-cpu") as local:
        want = local.predict(x)["logits"]
    # Concurrent callers through the http backend: batched by @serve.batch across 2 replicas.
    with Predictor.load(tiny_artifact, backend="http", device=url) as remote:
        got: list = [None] * 8

        def call(i: int) -> None:
            got[i] = remote.predict(x[i : i + 1])["logits"]

        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert remote.placement.details["server"]["threads"] == 1
    np.testing.assert_allclose(np.concatenate(got), want, rtol=1e-5, atol=1e-5)
    status, body = request("GET", "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    total = sum(s.value for s in families["infership_requests"].samples if s.name.endswith("_total"))
    assert status == 200 and total == 9  # both replicas' counts: 8 good requests and the bad one
    conn.close()


def test_texts_through_the_replica(text_artifact):
    texts = ["a short one", "a somewhat longer sentence about nothing much"]
    server = ArtifactServer(str(text_artifact), {"backend": "ort-cpu", "warmup": 0})
    try:
        status, doc = _call(
            server, "POST", "/predict", "\n".join(texts).encode(), {"content-type": "text/plain"}
        )
        status2, doc2 = _call(server, "POST", "/predict", json.dumps({"texts": texts}).encode())
        with Predictor.load(text_artifact, backend="ort-cpu") as p:
            want = p.predict(texts)
    finally:
        server.close()
    assert status == 200 and status2 == 200
    for name, value in want.items():
        np.testing.assert_allclose(np.asarray(doc["outputs"][name]), value, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(doc2["outputs"][name]), value, rtol=1e-5, atol=1e-6)


@needs_ray
def test_the_local_ray_stays_on_loopback(local_ray):
    """A single-machine Ray talks to itself over 127.0.0.1 only, never the machine's outward address."""
    import ipaddress

    gcs = local_ray.get_runtime_context().gcs_address.rsplit(":", 1)[0]
    assert ipaddress.ip_address(gcs).is_loopback
    assert all(ipaddress.ip_address(n["NodeManagerAddress"]).is_loopback for n in local_ray.nodes())


def test_drift_statistics_follow_the_answers_and_settle(tiny_artifact):
    """Drift statistics are computed off the request path, in arrival order; ``settle`` waits for them."""
    from dataclasses import replace

    from infership.runtime import Task
    from infership.runtime.monitoring import Monitor
    from infership.runtime.statistics import REFERENCE_KEY, reference_statistics

    server = ArtifactServer(str(tiny_artifact), {"backend": "ort-cpu", "warmup": 0})
    try:
        rng = np.random.default_rng(0)
        batches = [{"x": rng.standard_normal((8, 3, 16, 16)).astype(np.float32)} for _ in range(4)]
        reference = reference_statistics(
            batches, [server.predictor.predict(b) for b in batches], task=Task.CLASSIFICATION, source="test"
        )
        manifest = replace(
            server.predictor.manifest, task=Task.CLASSIFICATION, extra={REFERENCE_KEY: reference}
        )
        server.monitor = Monitor(manifest)
        bad = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
        bad[0, 0, 0, :2] = np.nan
        assert _call(server, "POST", "/predict", _npy(bad), NPY)[0] == 200
        for _ in range(20):
            shifted = (rng.standard_normal((2, 3, 16, 16)) + 3).astype(np.float32)
            assert _call(server, "POST", "/predict", _npy(shifted), NPY)[0] == 200
        server.settle()
        families = {
            f.name: f.samples for f in text_string_to_metric_families(server.monitor.exposition()[0].decode())
        }
        assert [s.value for s in families["infership_input_nonfinite"] if s.name.endswith("_total")] == [2]
        assert server.monitor.drift.figures()["inputs"]["x"]["mean_shift"] > 2
    finally:
        server.close()
    server.close()  # closing twice is harmless


def test_serve_options_and_the_haproxy_ingress_refuse_what_cannot_work(monkeypatch):
    from infership.runtime.errors import InvalidInputError
    from infership.serve.ingress import HA_PROXY_ENV, haproxy_environment

    with pytest.raises(InvalidInputError, match="ingress must be one of proxy, haproxy, got 'nginx'"):
        ServeOptions(ingress="nginx")
    with pytest.raises(InvalidInputError, match="chosen when the cluster starts"):
        haproxy_environment(address="auto", ray_running=False, drain_s=20)
    monkeypatch.delenv(HA_PROXY_ENV, raising=False)
    with pytest.raises(InvalidInputError, match="runs a Ray started without it"):
        haproxy_environment(address=None, ray_running=True, drain_s=20)


def _private_network_namespace() -> str | None:
    """Why a private network namespace cannot be made here (None: it can)."""
    import shutil
    import subprocess

    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare (util-linux) and ip (iproute2)"
    done = subprocess.run(["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    return None if done.returncode == 0 else f"unshare -rn failed: {done.stderr.strip()[:200]}"


@pytest.mark.slow
@needs_ray
def test_the_haproxy_ingress_in_a_private_network_namespace(tiny_artifact, tmp_path):
    """``ingress="haproxy"`` serves the artifact through HAProxy straight to the replica. Ray binds HAProxy's
    and the replicas' listeners on every interface, so it runs in a namespace whose only one is loopback."""
    import subprocess
    import sys

    reason = _private_network_namespace()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "probe.json"
    probe = Path(__file__).with_name("haproxy_probe.py")
    done = subprocess.run(
        ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, str(probe),
         str(tiny_artifact), str(out)],
        capture_output=True, text=True, timeout=420,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(out.read_text())
    with Predictor.load(tiny_artifact, backend="ort-cpu") as p:
        want = p.predict(np.asarray(doc["x"], np.float32))["logits"]
    assert doc["predict_status"] == 200 and doc["healthz"] == 200
    np.testing.assert_allclose(np.asarray(doc["outputs"]["logits"]), want, rtol=1e-6, atol=1e-6)
    assert doc["bad_status"] == 400 and "not a valid .npy" in doc["bad_reason"]
    assert "infership_requests" in doc["metrics_families"]


def test_an_idle_replica_runs_a_request_at_once_and_a_busy_one_batches(tiny_artifact):
    server = ArtifactServer(str(tiny_artifact), {"backend": "ort-cpu", "warmup": 0})
    queued = []

    async def batched(item):
        queued.append(item)
        return (await server.run_batch([item]))[0]

    server._batched = batched
    x = _npy(np.zeros((1, 3, 16, 16), np.float32))
    try:
        assert _call(server, "POST", "/predict", x, NPY)[0] == 200 and queued == []  # idle: at once
        server._busy = 1  # another request in flight: this one goes through the batching queue
        assert _call(server, "POST", "/predict", x, NPY)[0] == 200 and len(queued) == 1
        assert server._busy == 1  # every request that entered has left
    finally:
        server.close()


def test_a_short_idle_run_stays_on_the_event_loop_and_requests_arriving_together_batch(tiny_artifact):
    server = ArtifactServer(str(tiny_artifact), {"backend": "ort-cpu", "warmup": 0})
    queued, threads = [], []
    predict = server.predictor.predict

    def recording(feeds):
        threads.append(threading.get_ident())
        return predict(feeds)

    async def batched(item):
        queued.append(item)
        return (await server.run_batch([item]))[0]

    server.predictor.predict = recording
    server._batched = batched
    x = _npy(np.zeros((1, 3, 16, 16), np.float32))

    async def one(body: bytes = x) -> tuple[int, int]:
        return (await server.handle("POST", "/predict", dict(NPY), body))[0], threading.get_ident()

    async def two() -> list[int]:
        return [status for status, _ in await asyncio.gather(one(), one())]

    try:
        status, loop_thread = asyncio.run(one())  # no run timed yet: a worker thread
        assert status == 200 and threads[-1] != loop_thread and server._last_run is not None
        key = server._last_run[0]
        assert key == (("x", (3, 16, 16)),) and server._last_run[1] < 0.02
        status, loop_thread = asyncio.run(one())  # a short model: on the event loop, no hand-off
        assert status == 200 and threads[-1] == loop_thread and queued == []
        server._last_run = (key, 0.005)  # 5 ms a row: one row on the loop, eight rows (40 ms) in a thread
        status, loop_thread = asyncio.run(one())
        assert status == 200 and threads[-1] == loop_thread
        server._last_run = (key, 0.005)
        status, loop_thread = asyncio.run(one(_npy(np.zeros((8, 3, 16, 16), np.float32))))
        assert status == 200 and threads[-1] != loop_thread
        server._last_run = ((("x", (3, 32, 32)),), 1e-6)  # last run had other shapes: a thread
        status, loop_thread = asyncio.run(one())
        assert status == 200 and threads[-1] != loop_thread and queued == []
        assert asyncio.run(two()) == [200, 200] and len(queued) == 2  # together: not idle, both batch
        assert server._busy == 0
    finally:
        server.close()


def test_replicas_run_the_app_on_their_own_loop_with_their_share_of_threads(tiny_artifact):
    from infership.serve.app import USER_CODE_THREAD_ENV, build_app

    app = build_app(tiny_artifact, ServeOptions(num_cpus=2, replicas=3))
    options = app._bound_deployment.ray_actor_options  # what Ray starts each replica with
    assert options["num_cpus"] == 2
    assert options["runtime_env"]["env_vars"] == {"OMP_NUM_THREADS": "2", USER_CODE_THREAD_ENV: "0"}


def test_the_haproxy_check_finds_this_servers_haproxy_and_no_other(tmp_path, monkeypatch):
    from infership.runtime.errors import BackendUnavailable
    from infership.serve.ingress import HA_CONFIG_ENV, check_haproxy_running

    proc = tmp_path / "proc"
    ours, other = tmp_path / "ours" / "haproxy.cfg", tmp_path / "other" / "haproxy.cfg"

    def process(pid: int, config: Path, binds: str) -> None:
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "comm").write_text("haproxy\n")
        (proc / str(pid) / "cmdline").write_bytes(
            b"\0".join([b"/x/haproxy", b"-db", b"-f", str(config).encode()])
        )
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f"frontend http_frontend\n    bind {binds}\n")

    process(10, other, "127.0.0.1:8000")  # another server's HAProxy on the same port: not ours
    monkeypatch.setenv(HA_CONFIG_ENV, str(ours))
    with pytest.raises(BackendUnavailable, match="no HAProxy runs"):
        check_haproxy_running("127.0.0.1", 8000, proc=proc, timeout_s=0)
    ours = ours.parent / "node-1" / "haproxy.cfg"  # Ray writes it in a folder per node
    process(11, ours, "127.0.0.1:80001")  # ours, but another port (not a prefix match)
    with pytest.raises(BackendUnavailable):
        check_haproxy_running("127.0.0.1", 8000, proc=proc, timeout_s=0)
    ours.write_text("frontend http_frontend\n    bind 127.0.0.1:8000\n")
    check_haproxy_running("127.0.0.1", 8000, proc=proc, timeout_s=0)
    ours.write_text("frontend http_frontend\n    bind *:8000\n")  # what Ray writes for a wildcard host
    check_haproxy_running("0.0.0.0", 8000, proc=proc, timeout_s=0)
    with pytest.raises(BackendUnavailable):
        check_haproxy_running("127.0.0.1", 8000, proc=proc, timeout_s=0)


def test_the_haproxy_environment_is_put_back(monkeypatch):
    import os

    from infership.serve.ingress import (
        HA_CONFIG_ENV,
        HA_DRAIN_ENV,
        HA_PROXY_ENV,
        haproxy_environment,
        restore_environment,
    )

    for key in (HA_PROXY_ENV, HA_DRAIN_ENV, HA_CONFIG_ENV):
        monkeypatch.delenv(key, raising=False)
    previous = haproxy_environment(address=None, ray_running=False, drain_s=20)
    config = Path(os.environ[HA_CONFIG_ENV])
    assert os.environ[HA_PROXY_ENV] == "1" and os.environ[HA_DRAIN_ENV] == "5.0" and config.parent.is_dir()
    restore_environment(previous)
    assert not any(key in os.environ for key in (HA_PROXY_ENV, HA_DRAIN_ENV, HA_CONFIG_ENV))
    assert not config.parent.exists()


def test_serving_in_thread_hands_serves_own_error_to_the_caller(tmp_path):
    """A failure of serve_artifact in the thread reaches the caller as itself (not as a timeout)."""
    from infership.runtime.errors import ArtifactError
    from infership.serve.app import serving_in_thread

    with pytest.raises(ArtifactError, match="not found"):
        with serving_in_thread(tmp_path / "missing", ServeOptions(), timeout_s=120):
            pass
