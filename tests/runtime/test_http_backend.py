"""The ``http`` backend against a small standard-library server speaking the same protocol on 127.0.0.1
(the Ray Serve app is tested in tests/serve)."""

from __future__ import annotations

import http.client
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from infership.runtime import BackendUnavailable, InfershipError, InvalidInputError, Predictor
from infership.runtime.wire import JSON, NPY, NPZ, decode_request, encode_request, encode_response


def _server(predictor: Predictor, model: str | None = None) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client expects

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str = JSON) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            m = predictor.manifest
            doc = {
                "status": "ok",
                "model": model or m.name,
                "backend": predictor.backend,
                "inputs": [s.to_dict() for s in m.inputs],
                "outputs": [s.to_dict() for s in (m.outputs if model is None else m.outputs[:0])],
            }
            self._send(200, json.dumps(doc).encode())

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            try:
                inputs = decode_request(body, self.headers["Content-Type"], predictor.inputs)
                out, ctype = encode_response(predictor.predict(inputs), self.headers.get("Accept"))
            except InfershipError as exc:
                status = 400 if isinstance(exc, InvalidInputError) else 500
                detail = {"error": type(exc).__name__, "detail": str(exc)}
                return self._send(status, json.dumps(detail).encode())
            self._send(200, out, ctype)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def served(tiny_artifact: Path) -> Iterator[tuple[Predictor, str]]:
    with Predictor.load(tiny_artifact, backend="ort-cpu") as local:
        server = _server(local)
        try:
            yield local, f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


def test_predict_through_the_server(served, tiny_artifact):
    local, url = served
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    with Predictor.load(tiny_artifact, backend="http", device=url) as remote:
        got = remote.predict(x)
        again = [remote.predict(x[i : i + 1])["logits"] for i in range(3)]  # one kept-alive connection
        assert remote.placement.device == url and "server:ort-cpu" in remote.placement.providers
        assert remote.placement.details["server"]["model"] == local.manifest.name
    np.testing.assert_array_equal(got["logits"], local.predict(x)["logits"])
    np.testing.assert_allclose(np.concatenate(again), got["logits"], rtol=1e-5, atol=1e-5)


def test_server_refusals_are_invalid_input(served, tiny_artifact):
    _, url = served
    with Predictor.load(tiny_artifact, backend="http", device=url) as remote:
        session = remote._session
        with pytest.raises(InvalidInputError, match="refused the input.*axis 2"):
            session.run({"x": np.zeros((1, 3, 5, 5), np.float32)})  # past the local checks on purpose


def test_check_and_open_refuse_what_cannot_work(served, two_io_artifact):
    _, url = served
    with pytest.raises(BackendUnavailable, match="no prediction server answers"):
        Predictor.load(two_io_artifact, backend="http", device="http://127.0.0.1:9")
    with pytest.raises(BackendUnavailable, match="needs the server's URL"):
        Predictor.load(two_io_artifact, backend="http", device="cpu")
    with pytest.raises(BackendUnavailable, match="serves"):
        Predictor.load(two_io_artifact, backend="http", device=url)


def test_options_the_client_cannot_apply_are_recorded_as_ignored(served, tiny_artifact):
    _, url = served
    with Predictor.load(tiny_artifact, backend="http", device=url, intra_op_threads=2) as remote:
        assert remote.placement.details["ignored_options"] == ["intra_op_threads"]


def test_wire_formats_round_trip():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    body, ctype = encode_request({"x": x})
    assert ctype == NPY
    from infership.runtime.spec import TensorSpec

    spec = TensorSpec("x", "float32", ("batch", 3))
    np.testing.assert_array_equal(decode_request(body, ctype, [spec]), x)
    body, ctype = encode_request({"a": x, "b": x.astype(np.int64)})
    got = decode_request(body, ctype, [spec])
    assert ctype == NPZ and got["b"].dtype == np.int64
    js = decode_request(json.dumps({"inputs": {"x": x.tolist()}}).encode(), JSON, [spec])
    assert js["x"].dtype == np.float32
    for bad, match in (
        (b"{", "not valid JSON"),
        (json.dumps({"inputs": {"y": [1]}}).encode(), "missing"),
        (json.dumps({"inputs": {"x": [[1, 2], [3]]}}).encode(), "regular nested list"),
    ):
        with pytest.raises(InvalidInputError, match=match):
            decode_request(bad, JSON, [spec])
    with pytest.raises(InvalidInputError, match="no preprocessing"):
        decode_request(b"\x89PNG", "image/png", [spec])
    with pytest.raises(InvalidInputError, match="tokenizer"):
        decode_request(b"hello", "text/plain", [spec])
    with pytest.raises(InvalidInputError, match="tokenizer"):
        decode_request(json.dumps({"texts": ["a"]}).encode(), JSON, [spec])
    assert decode_request(b"one\n\ntwo\n", "text/plain; charset=utf-8", [spec], text=True) == ["one", "two"]
    assert decode_request(json.dumps({"texts": ["a", "b"]}).encode(), JSON, [spec], text=True) == ["a", "b"]
    with pytest.raises(InvalidInputError, match="one or more strings"):
        decode_request(json.dumps({"texts": [1]}).encode(), JSON, [spec], text=True)


def test_npy_bodies_are_read_in_place_and_bad_ones_refused():
    from infership.runtime.spec import TensorSpec

    spec = TensorSpec("x", "float32", ("batch", 3))

    def npy(a: np.ndarray, **kw) -> bytes:
        buf = io.BytesIO()
        np.save(buf, a, **kw)
        return buf.getvalue()

    for x in (
        np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
        np.array([[1, 2, 3]], dtype=">i4"),  # big-endian
        np.zeros((0, 3), np.float32),
    ):
        got = decode_request(npy(x), NPY, [spec])
        assert got.dtype == x.dtype and got.shape == x.shape
        np.testing.assert_array_equal(got, x)
    view = decode_request(npy(np.arange(300_000, dtype=np.float32)), NPY, [spec])
    assert not view.flags.owndata and not view.flags.writeable  # the body's own bytes, not a copy
    body = npy(np.ones((2, 3), np.float32))
    # A writer that does not pad its header to 64 bytes: the data lands unaligned, so it is copied.
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n"
    odd = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + np.ones((2, 3), "<f4").tobytes()
    got = decode_request(odd, NPY, [spec])
    assert got.flags.aligned and got.dtype == np.float32
    np.testing.assert_array_equal(got, np.ones((2, 3), np.float32))
    # A body longer than its header says is left to np.load, which reads the array and ignores the rest.
    np.testing.assert_array_equal(decode_request(body + bytes(4), NPY, [spec]), np.ones((2, 3), np.float32))
    for bad in (
        body[:-4],
        b"\x93NUMPY not really",
        npy(np.array([{"a": 1}], dtype=object), allow_pickle=True),
    ):
        with pytest.raises(InvalidInputError, match="not a valid .npy file"):
            decode_request(bad, NPY, [spec])


def test_keepalive_connection_is_reused(served, tiny_artifact):
    _, url = served
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(2):
        body, ctype = encode_request({"x": np.zeros((1, 3, 16, 16), np.float32)})
        conn.request("POST", "/predict", body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        assert resp.status == 200 and "outputs" in json.loads(resp.read())
    conn.close()


def test_the_benchmark_harness_drives_a_server(served, tiny_artifact, tmp_path):
    from infership.cli import main

    _, url = served
    out = tmp_path / "bench.json"
    args = [
        "bench",
        str(tiny_artifact),
        "--backend",
        "http",
        "--device",
        url,
        "--scenario",
        "single-stream,server",
    ]
    args += ["--target-qps", "50", "--duration", "0.5", "--warmup", "2", "--no-overhead", "--no-reference"]
    assert main([*args, "--json", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert {r["scenario"] for r in runs} == {"single-stream", "server"}
    assert all(r["backend"] == "http" and r["throughput"] > 0 and r["device"] == url for r in runs)
