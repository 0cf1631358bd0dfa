"""``infership serve``, ``infership batch-predict`` and ``infership triton-repo``.

Only the standard library is imported here; Ray and the runtimes load when a command runs.
"""

from __future__ import annotations

import argparse
from typing import Any


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", help="backend each worker runs (default: auto)")
    p.add_argument("--precision", default="fp32", help="variant precision: fp32, fp16, int8 (default: fp32)")
    p.add_argument("--variant", dest="variant_id", help="load this variant id exactly")
    p.add_argument(
        "--address",
        help="Ray cluster address (e.g. ray://head:10001 or auto); default: start a local Ray on this machine",
    )


# ------------------------------------------------------------------------------------------------ serve
def add_serve(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve an artifact over HTTP on Ray Serve",
        description=(
            "Serve ARTIFACT on Ray Serve: POST /predict (JSON {'inputs': {name: lists}}, an .npy body for a "
            "single-input model, .npz, or an image when the artifact records preprocessing), GET /healthz, "
            "GET /metrics (Prometheus). Each replica holds a Predictor whose threads match its CPUs and "
            "batches concurrent requests. Stops cleanly on Ctrl-C / SIGTERM."
        ),
    )
    p.add_argument("artifact", help="artifact directory (readable at the same path by every Ray node)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    p.add_argument("--replicas", type=_positive, default=1, help="replicas (default: 1)")
    p.add_argument(
        "--max-replicas", type=_positive, help="autoscale between --replicas and this many replicas"
    )
    p.add_argument(
        "--target-ongoing", type=float, default=8.0, help="autoscaling: requests per replica to aim for"
    )
    p.add_argument(
        "--num-cpus", type=float, default=1.0, help="CPUs per replica; sets its threads (default: 1)"
    )
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per replica (default: 0)")
    p.add_argument(
        "--max-batch", type=_positive, default=16, help="most requests per model run (default: 16)"
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=0.0,
        help=(
            "longest wait for a batch to fill (default: 0: run what is queued; batches form under load); "
            "a request that finds its replica idle runs at once"
        ),
    )
    p.add_argument(
        "--max-ongoing", type=_positive, default=64, help="requests in flight per replica (default: 64)"
    )
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request time limit (default: 30 s)")
    p.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body (default: 64 MB)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up calls per replica before it is ready")
    p.add_argument("--access-log", action="store_true", help="log every request (Serve's access log)")
    p.add_argument(
        "--ingress",
        choices=("proxy", "haproxy"),
        default="proxy",
        help=(
            "proxy: Serve's HTTP proxy (default); haproxy: Serve's HAProxy ingress for the local Ray, "
            "requests go straight to a replica (several ms less per request; Ray then binds HAProxy's stats "
            "and metrics ports and the replicas' HTTP ports on every interface)"
        ),
    )
    _model_options(p)
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from infership.serve.app import ServeOptions, serve_artifact
    from rich.console import Console

    options = ServeOptions(
        backend=args.backend,
        precision=args.precision,
        variant=args.variant_id,
        replicas=args.replicas,
        max_replicas=args.max_replicas,
        target_ongoing_requests=args.target_ongoing,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_ongoing_requests=args.max_ongoing,
        request_timeout_s=args.timeout_s,
        max_body_bytes=int(args.max_body_mb * 1e6),
        warmup=args.warmup,
        access_log=args.access_log,
        ingress=args.ingress,
    )
    console = Console()
    serve_artifact(
        args.artifact,
        options,
        host=args.host,
        port=args.port,
        address=args.address,
        on_ready=lambda url: console.print(f"serving {args.artifact} at [bold]{url}[/] (Ctrl-C stops)"),
    )
    return 0


# ---------------------------------------------------------------------------------------- batch-predict
def add_batch_predict(sub: Any) -> None:
    p = sub.add_parser(
        "batch-predict",
        help="predict a whole data set on Ray Data (local Ray or a cluster)",
        description=(
            "Run ARTIFACT over INPUT with Ray Data: an image folder, an .npy / .npz file, a text file (one "
            "text per line, for an artifact with a tokenizer) or a Parquet file/folder (one column per input). Writes "
            "OUT: .npz (one array per output, in input order) or a Parquet folder. An actor pool of "
            "--concurrency workers, each holding a Predictor with threads matching --num-cpus."
        ),
    )
    p.add_argument("artifact", help="artifact directory")
    p.add_argument("input", help="image folder, .npy/.npz, .txt or Parquet")
    p.add_argument(
        "-o", "--output", required=True, help="OUT.npz, or a folder for Parquet (OUT/ or *.parquet)"
    )
    p.add_argument("--batch-size", type=_positive, default=32, help="rows per model run (default: 32)")
    p.add_argument("--concurrency", type=_positive, default=2, help="actors (default: 2)")
    p.add_argument(
        "--num-cpus", type=float, default=1.0, help="CPUs per actor; sets its threads (default: 1)"
    )
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor (default: 0)")
    _model_options(p)
    p.set_defaults(func=_run_batch_predict)


def _run_batch_predict(args: argparse.Namespace) -> int:
    from infership.serve.data import batch_predict
    from rich.console import Console

    result = batch_predict(
        args.artifact,
        args.input,
        args.output,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        backend=args.backend,
        precision=args.precision,
        variant=args.variant_id,
        address=args.address,
        progress=True,
    )
    steady = result.steady_rows_per_s
    after = f"; {steady:.1f} rows/s after the first batch" if steady is not None else ""
    Console().print(
        f"{result.rows} rows → {result.output} in {result.seconds:.1f} s "
        f"({result.rows / result.seconds:.1f} rows/s{after})"
    )
    return 0


# ------------------------------------------------------------------------------------------ triton-repo
def add_triton_repo(sub: Any) -> None:
    p = sub.add_parser(
        "triton-repo",
        help="write a Triton Inference Server model repository from an artifact",
        description=(
            "Write DIR/MODEL/config.pbtxt and DIR/MODEL/1/<model files> for each ONNX (ONNX Runtime backend) "
            "and OpenVINO (OpenVINO backend) variant: dims and data types from the manifest, dynamic "
            "batching, instance group, model warm-up; on --device gpu the TensorRT accelerator at the "
            "variant's precision. Variants Triton cannot serve this way are listed with the reason."
        ),
    )
    p.add_argument("artifact", help="artifact directory")
    p.add_argument("-o", "--output", required=True, help="model repository directory")
    p.add_argument("--variant", action="append", help="variant id to write (repeatable; default: all)")
    p.add_argument("--name", help="model name, with exactly one --variant (default: ARTIFACT_VARIANT)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="instance kind (default: cpu)")
    p.add_argument("--max-batch", type=_positive, default=8, help="Triton max_batch_size (default: 8)")
    p.add_argument(
        "--preferred-batch", type=_positive, action="append", help="preferred batch size (repeatable)"
    )
    p.add_argument(
        "--max-queue-delay-us", type=int, default=100, help="dynamic batching delay (default: 100)"
    )
    p.add_argument("--instances", type=_positive, default=1, help="model instances (default: 1)")
    p.add_argument("--threads", type=_positive, help="threads per instance (default: the backend's)")
    p.add_argument("--no-dynamic-batching", action="store_true", help="leave dynamic batching off")
    p.add_argument("--no-warmup", action="store_true", help="no model_warmup section")
    p.add_argument("--overwrite", action="store_true", help="replace model directories that exist")
    p.set_defaults(func=_run_triton_repo)


def _run_triton_repo(args: argparse.Namespace) -> int:
    from infership.serve.triton import write_triton_repository
    from rich.console import Console

    repo = write_triton_repository(
        args.artifact,
        args.output,
        variants=args.variant,
        name=args.name,
        overwrite=args.overwrite,
        device=args.device,
        max_batch_size=args.max_batch,
        preferred_batch_sizes=args.preferred_batch,
        max_queue_delay_us=args.max_queue_delay_us,
        instances=args.instances,
        threads=args.threads,
        dynamic_batching=not args.no_dynamic_batching,
        warmup=not args.no_warmup,
    )
    console = Console()
    for m in repo.models:
        console.print(f"{m.name}: {m.variant} on Triton's {m.backend} backend → {m.path}", highlight=False)
    for variant, why in repo.skipped:
        console.print(f"[yellow]skipped[/] {variant}: {why}", highlight=False)
    return 0
