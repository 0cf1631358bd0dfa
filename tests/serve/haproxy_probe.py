"""Serve an artifact through Ray Serve's HAProxy ingress and report what a client sees, as JSON.

Run by ``test_app.py`` inside a private network namespace whose only interface is loopback (HAProxy's
stats and metrics listeners and the replicas' HTTP ports bind every interface):

    unshare -rn sh -c 'ip link set lo up && exec "$0" "$@"' python haproxy_probe.py ARTIFACT OUT.json
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import sys
import time

import numpy as np


def main(artifact: str, out: str) -> int:
    from infership.serve.app import ServeOptions, serving_in_thread
    from prometheus_client.parser import text_string_to_metric_families

    assert [name for _, name in socket.if_nameindex()] == ["lo"], "run me in a private network namespace"
    port = 8790
    options = ServeOptions(backend="ort-cpu", replicas=1, num_cpus=1, warmup=1, ingress="haproxy")
    started = time.monotonic()
    report: dict = {}
    with serving_in_thread(artifact, options, port=port, timeout_s=240, stop_timeout_s=180):
        report["ready_s"] = round(time.monotonic() - started, 1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def request(method: str, path: str, body: bytes | None = None, headers=None):
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()

        x = np.random.default_rng(3).standard_normal((2, 3, 16, 16)).astype(np.float32)
        buf = io.BytesIO()
        np.save(buf, x)
        status, body = request("POST", "/predict", buf.getvalue(), {"Content-Type": "application/x-npy"})
        report["predict_status"] = status
        report["x"] = x.tolist()
        report["outputs"] = json.loads(body)["outputs"] if status == 200 else body.decode()
        report["bad_status"], bad = request(
            "POST", "/predict", b"\x93NUMPY broken", {"Content-Type": "application/x-npy"}
        )
        report["bad_reason"] = json.loads(bad)["detail"]
        report["healthz"] = request("GET", "/healthz")[0]
        status, text = request("GET", "/metrics")
        report["metrics_families"] = sorted(f.name for f in text_string_to_metric_families(text.decode()))
    with open(out, "w") as f:
        json.dump(report, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
