"""Serving figures for MobileNetV3-small int8: in-process micro-batching, Ray Serve, Ray Data.

Builds a MobileNetV3-small artifact (torchvision, ``weights=None``, 10 classes: nothing is downloaded) with
ImageNet preprocessing, quantizes it for ONNX Runtime on photos bundled with scikit-image, then measures:

1. **micro-batching** — 16 concurrent callers sending one image each, on a plain Predictor and on a
   :class:`~infership.runtime.BatchingPredictor` over it: throughput, and every caller's outputs against a
   single-call run (next to the Predictor's own batch-16-vs-single difference, the backend's tolerance);
2. **Ray Serve** — 2 replicas × 1 CPU on a local Ray, loopback HTTP, ``.npy`` bodies (Ray start-up
   excluded): p50 at batch 1 / concurrency 1 against the in-process Predictor with the replica's thread
   count; throughput at batch 1 × 16 callers and batch 8 × 4 callers against in-process offline throughput
   at the same batch size (in-process and Serve measured in alternating blocks while Serve runs); a malformed request's status and reason; ``/metrics`` parsed by
   ``prometheus_client``; ``infership bench --backend http`` driving the server;
3. **Ray Data** — 1,000 real images (random crops of the scikit-image photos, JPEG) batch-predicted by 2
   actors × 1 CPU against the in-process Predictor in batches of 32: outputs and throughput, for three
   jobs in a row on the running local Ray (``--data-jobs``), each paired with an in-process run just
   before it. The first job on a Ray also starts Ray Data's own actors, which stay for later jobs.

The load generator runs on the same machine as the server, so Serve's figures include the clients' CPU.
``serve_floor_p50_ms_echo_same_body`` is Ray Serve itself: an application beside the app (``/echo``, one
replica, no CPU reserved) that reads the same body and answers "ok", timed in the same alternating blocks.
``serve_handler_mean_ms_batch1_conc1`` is the replicas' own mean request time (from their ``/metrics``:
decoding, checks, batching and the model, not encoding the answer), so the client's p50 splits into the app
and what lies outside it (ingress, HTTP, the answer's encoding).

``--ingress haproxy`` serves through Ray Serve's HAProxy ingress. Ray then binds HAProxy's stats and
metrics listeners and each replica's HTTP port on every interface, so the script first moves itself into a
private network namespace whose only interface is loopback (``unshare -rn``, then ``ip link set lo up``;
it needs both) — nothing it starts can be reached from outside.

    .venv/bin/python benchmarks/serving.py [--seconds 8] [--images 1000] [--parts batching,serve,data]
                                           [--ingress proxy|haproxy] [--workdir DIR] [--data-jobs 3]
                                           [--json runs/bench/serving.json]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.serving_setup import build, callers, crops, images_tensor, loadavg, offline_qps

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------- 1. batching
def part_batching(root: Path, work: Path, seconds: float) -> dict:
    return {
        f"{backend} {variant}{' ' + hint if hint else ''}": batching_on(
            root, work, seconds, backend, variant, hint=hint
        )
        for backend, variant, hint in (
            ("ort-cpu", "onnx-int8", None),
            ("openvino", "openvino-int8", None),
            ("openvino", "openvino-int8", "throughput"),  # streams: one batch in flight per stream
        )
    }


#: Fronts compared with the plain Predictor: the defaults (batches of up to 16, one in flight per stream the
#: runtime runs: ``optimal_concurrency``), and smaller
#: batches with several in flight (fewer concurrent runtime calls, the cores kept busy while batches merge).
FRONTS = {"max_batch=16": {"max_batch": 16}, "max_batch=4 x4": {"max_batch": 4, "max_concurrent_batches": 4}}


def batching_on(
    root: Path,
    work: Path,
    seconds: float,
    backend: str,
    variant: str,
    rounds: int = 4,
    hint: str | None = None,
) -> dict:
    """Interleaved rounds (plain, then each front) so that machine noise hits them alike; medians."""
    from infership.runtime import BatchingPredictor, Predictor

    x = images_tensor(work, 64)
    singles = [x[i : i + 1] for i in range(len(x))]
    qps: dict[str, list[float]] = {"plain": [], **{k: [] for k in FRONTS}}
    out: dict = {}
    with Predictor.load(
        root, backend=backend, variant=variant, warmup=5, **({"hint": hint} if hint else {})
    ) as p:
        out["optimal_concurrency"] = p.optimal_concurrency
        ref = np.concatenate([p.predict(s)["logits"] for s in singles])
        by16 = np.concatenate([p.predict(x[i : i + 16])["logits"] for i in range(0, 64, 16)])
        out["predictor_batch16_vs_single_max_abs_diff"] = float(np.abs(by16 - ref).max())
        # What a batch saves per image without the front: one caller at batch 1, 4 and 16; two callers at 1.
        out["one_caller_qps"] = {
            b: round(offline_qps(p.predict, x, b, seconds / rounds), 1) for b in (1, 4, 16)
        }
        out["two_callers_batch1_qps"] = round(callers(p.predict, singles, n=2, seconds=seconds / rounds), 1)
        for _ in range(rounds):
            time.sleep(0.3)
            qps["plain"].append(callers(p.predict, singles, n=16, seconds=seconds / rounds))
            for name, options in FRONTS.items():
                with BatchingPredictor(p, max_wait_ms=2, **options) as bp:
                    time.sleep(0.3)
                    qps[name].append(callers(bp.predict, singles, n=16, seconds=seconds / rounds))
        for name, options in FRONTS.items():
            with BatchingPredictor(p, max_wait_ms=2, **options) as bp:
                got = [None] * len(singles)

                def one(i: int, bp=bp, got=got) -> None:
                    got[i] = bp.predict(singles[i])["logits"]

                threads = [threading.Thread(target=one, args=(i,)) for i in range(len(singles))]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            out[f"{name} max_abs_diff_vs_single"] = float(np.abs(np.concatenate(got) - ref).max())
    plain = statistics.median(qps["plain"])
    out["plain_qps"] = round(plain, 1)
    for name in FRONTS:
        out[f"{name} qps"] = round(statistics.median(qps[name]), 1)
        out[f"{name} speedup"] = round(statistics.median(qps[name]) / plain, 2)
    out["rounds_qps"] = {k: [round(v, 1) for v in vs] for k, vs in qps.items()}
    return out


# ---------------------------------------------------------------------------------------- 2. serve
def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _latencies(fn, inputs: list, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(inputs[i % len(inputs)])
        out.append((time.perf_counter() - t0) * 1000)
    return out


def echo_app():
    """Ray Serve itself: a deployment that reads the body and answers "ok" (one replica, no CPU reserved,
    so it runs beside the app's replicas; on the replica's event loop, as the app runs), to tell the app's
    own overhead from Serve's."""
    from infership.serve.app import USER_CODE_THREAD_ENV
    from ray import serve
    from starlette.responses import Response

    @serve.deployment(
        num_replicas=1,
        ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": {USER_CODE_THREAD_ENV: "0"}}},
        logging_config={"enable_access_log": False},
    )
    class Echo:
        async def __call__(self, request):
            await request.body()
            return Response(b"ok")

    return Echo.bind()


def handler_seconds(port: int) -> tuple[float, float]:
    """(sum, count) of the replicas' request-latency histogram, read from ``GET /metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "infership_request_latency_seconds":
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    total += sample.value
                elif sample.name.endswith("_count"):
                    count += sample.value
    return total, count


def isolate_network(argv: list[str]) -> None:
    """Re-run this script in a private network namespace with loopback only, unless already in one."""
    if [name for _, name in socket.if_nameindex()] == ["lo"]:
        return
    if os.environ.get("INFERSHIP_NETNS") == "1":
        sys.exit("could not move into a private network namespace: other interfaces are still visible")
    script = 'ip link set lo up && exec "$0" "$@"'
    cmd = ["unshare", "-rn", "sh", "-c", script, sys.executable, str(Path(__file__).resolve()), *argv]
    try:
        os.execvpe("unshare", cmd, {**os.environ, "INFERSHIP_NETNS": "1"})
    except OSError as exc:
        sys.exit(f"--ingress haproxy needs unshare (util-linux) and ip (iproute2): {exc}")


def part_serve(root: Path, work: Path, seconds: float, ingress: str = "proxy") -> dict:
    """Serve's figures against the in-process Predictor measured in the same minutes: latency in
    alternating blocks (in-process, then Serve, 10 rounds), throughput in alternating thirds of ``seconds``,
    so the machine's other load falls on both alike."""
    from infership.runtime import Predictor
    from infership.runtime.timing import cycling, interleaved_medians
    from infership.serve.app import ServeOptions, serving_in_thread
    from prometheus_client.parser import text_string_to_metric_families

    x = images_tensor(work, 64)
    out: dict = {}
    p1 = Predictor.load(root, backend="ort-cpu", precision="int8", intra_op_threads=1, warmup=5)
    p = Predictor.load(root, backend="ort-cpu", precision="int8", warmup=5)
    singles = [x[i : i + 1] for i in range(64)]
    out["inprocess_p50_ms_default_threads"] = statistics.median(_latencies(p.predict, singles, 300))

    port = 8765
    options = ServeOptions(
        backend="ort-cpu", precision="int8", replicas=2, num_cpus=1, max_batch=16, warmup=5, ingress=ingress
    )
    local = threading.local()

    def post(body: bytes, path: str = "/predict") -> tuple[int, bytes]:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request(
            "POST",
            path,
            body=body,
            headers={"Content-Type": "application/x-npy", "Accept": "application/x-npz"},
        )
        resp = conn.getresponse()
        return resp.status, resp.read()

    try:
        with serving_in_thread(root, options, port=port, timeout_s=300, stop_timeout_s=120):
            from ray import serve

            serve.run(echo_app(), name="echo", route_prefix="/echo")
            one = [_npy(x[i : i + 1]) for i in range(64)]
            for b in one[:20]:
                post(b)
                post(b, "/echo")
            before = handler_seconds(port)
            ms = interleaved_medians(
                {
                    "local": cycling(p1.predict, singles),
                    "served": cycling(post, one),
                    "echo": cycling(lambda b: post(b, "/echo"), one),
                },
                blocks=10,
                runs=30,
                warmup=0,
                rest_s=0.0,
            )
            after = handler_seconds(port)
            serve.delete("echo")
            out["inprocess_p50_ms_1thread"] = ms["local"]
            out["serve_p50_ms_batch1_conc1"] = ms["served"]
            out["serve_floor_p50_ms_echo_same_body"] = round(ms["echo"], 2)
            # Inside the replica (the app's handler: decode, checks, batching, model; not the encoding), per request.
            out["serve_handler_mean_ms_batch1_conc1"] = round(
                1e3 * (after[0] - before[0]) / max(after[1] - before[1], 1), 3
            )
            out["serve_p50_overhead_ms"] = round(
                out["serve_p50_ms_batch1_conc1"] - out["inprocess_p50_ms_1thread"], 2
            )
            eight = [_npy(x[i : i + 8]) for i in range(0, 56, 8)]
            for batch, key, bodies, n in (
                (1, "serve_qps_batch1_conc16", one, 16),
                (8, "serve_qps_batch8_conc4", eight, 4),
            ):
                alone, served = [], []
                for _ in range(3):
                    time.sleep(0.5)
                    alone.append(offline_qps(p.predict, x, batch, seconds / 3))
                    time.sleep(0.5)
                    served.append(batch * callers(post, bodies, n=n, seconds=seconds / 3))
                out[f"inprocess_offline_qps_batch{batch}"] = round(statistics.mean(alone), 1)
                out[key] = round(statistics.mean(served), 1)
            for batch, key in ((1, "serve_qps_batch1_conc16"), (8, "serve_qps_batch8_conc4")):
                out[f"serve_vs_offline_batch{batch}"] = round(
                    out[key] / out[f"inprocess_offline_qps_batch{batch}"], 2
                )
            status, body = post(b"\x93NUMPY not really")
            out["malformed_status"], out["malformed_reason"] = status, json.loads(body)["detail"]
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
            out["metrics_families"] = len(list(text_string_to_metric_families(text)))
            bench = subprocess.run(
                [sys.executable, "-m", "infership", "-q", "bench", str(root), "--backend", "http", "--precision",
                 "int8", "--device", f"http://127.0.0.1:{port}", "--scenario", "single-stream,server",
                 "--target-qps", "20", "--duration", "3", "--no-overhead", "--no-reference"],
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            out["bench_http_exit"] = bench.returncode
            out["bench_http_tail"] = (
                bench.stdout.strip().splitlines()[-6:] + bench.stderr.strip().splitlines()[-3:]
            )
    finally:
        p1.close()
        p.close()
    out["app_overhead_over_serve_floor_ms"] = round(
        out["serve_p50_overhead_ms"] - out["serve_floor_p50_ms_echo_same_body"], 2
    )
    return out


# ----------------------------------------------------------------------------------------- 3. data
def _inprocess(root: Path, paths: list[str]) -> tuple[float, np.ndarray]:
    """Seconds for one Predictor with 2 threads over ``paths`` in batches of 32 (loaded and warmed first)."""
    from infership.runtime import Predictor

    with Predictor.load(root, backend="ort-cpu", precision="int8", warmup=3) as p:
        t0 = time.perf_counter()
        out = np.concatenate([p.predict(paths[i : i + 32])["logits"] for i in range(0, len(paths), 32)])
        return time.perf_counter() - t0, out


def part_data(root: Path, work: Path, n_images: int, jobs: int = 3) -> dict:
    """``jobs`` batch-predict jobs on the running local Ray, each after an in-process run of the same images.

    The first Ray Data job on a Ray starts Ray Data's own actors (a stats actor, an autoscaling coordinator,
    an actor-location tracker: detached, one per cluster, kept for every later job), each a worker process
    that imports Ray Data on this machine's two cores; later jobs start only their actor pool. Both kinds are
    reported: ``first_job`` and ``later_jobs``."""
    from infership.serve.data import batch_predict

    paths = crops(work, n_images, save=True)
    folder = Path(paths[0]).parent
    runs = []
    for _ in range(jobs):
        inproc_s, ref = _inprocess(root, paths)
        time.sleep(0.5)
        res = batch_predict(
            root, folder, work / "ray_data_out.npz", batch_size=32, concurrency=2, num_cpus=1,
            backend="ort-cpu", precision="int8",
        )  # fmt: skip
        got = np.load(res.output)
        same_order = got["path"].tolist() == sorted(paths)
        runs.append({
            "inprocess_s": round(inproc_s, 2),
            "inprocess_images_per_s": round(len(paths) / inproc_s, 1),
            "ray_data_s": round(res.seconds, 2),
            "ray_data_images_per_s": round(res.rows / res.seconds, 1),
            "ratio": round(inproc_s / res.seconds, 2),
            # Without the actor pool's start-up: rows after the first output batch over the time they took.
            "ray_data_first_batch_s": round(res.first_batch_s or 0.0, 2),
            "ray_data_steady_images_per_s": round(res.steady_rows_per_s or 0.0, 1),
            "ratio_steady": round((res.steady_rows_per_s or 0.0) / (len(paths) / inproc_s), 2),
            "order_kept": same_order,
            "identical": bool(same_order and np.array_equal(got["logits"], ref)),
            "max_abs_diff": float(np.abs(got["logits"] - ref).max()) if same_order else None,
        })  # fmt: skip
        time.sleep(0.5)
    later = runs[1:]
    return {
        "images": len(paths),
        "first_job": runs[0],
        "later_jobs": later,
        "later_jobs_ratio_median": statistics.median(r["ratio"] for r in later) if later else None,
        "identical": all(r["identical"] for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serving figures: micro-batching, Ray Serve, Ray Data.")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per throughput measurement")
    parser.add_argument("--images", type=int, default=1000, help="images for Ray Data (default 1000)")
    parser.add_argument("--parts", default="batching,serve,data", help="which parts to run")
    parser.add_argument("--data-jobs", type=int, default=3, help="Ray Data jobs in a row (default 3)")
    parser.add_argument("--workdir", type=Path, help="keep the artifact and images here")
    parser.add_argument("--json", type=Path, default=ROOT / "runs" / "bench" / "serving.json")
    parser.add_argument(
        "--ingress",
        choices=("proxy", "haproxy"),
        default="proxy",
        help="Serve's ingress (haproxy: run in a private network namespace, see above)",
    )
    args = parser.parse_args(argv)
    if args.data_jobs < 1:
        parser.error(f"--data-jobs must be at least 1, got {args.data_jobs}")
    if args.ingress == "haproxy":
        isolate_network(sys.argv[1:] if argv is None else argv)
        from infership.serve.ingress import HA_DRAIN_ENV, HA_PROXY_ENV

        os.environ[HA_PROXY_ENV] = "1"  # before Ray starts: its processes read it
        os.environ.setdefault(HA_DRAIN_ENV, "2")
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    parts = set(args.parts.split(","))
    results: dict = {"loadavg_start": loadavg(), "ingress": args.ingress}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        root = build(work)
        if "batching" in parts:
            results["batching"] = part_batching(root, work, args.seconds)
            print("micro-batching:", json.dumps(results["batching"]), flush=True)
        if parts & {"serve", "data"}:
            from infership.serve.local_ray import init_local_ray

            ray = init_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
            try:
                if "serve" in parts:
                    results["serve"] = part_serve(root, work, args.seconds, args.ingress)
                    print("ray serve:", json.dumps(results["serve"]), flush=True)
                if "data" in parts:
                    results["data"] = part_data(root, work, args.images, args.data_jobs)
                    print("ray data:", json.dumps(results["data"]), flush=True)
            finally:
                ray.shutdown()
    results["loadavg_end"] = loadavg()
    print("load average:", results["loadavg_start"], "→", results["loadavg_end"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
