"""OpenVINO backend: IR (``.xml`` + ``.bin``) or ONNX, CPU by default, any OpenVINO device string.

Thread safety: ``CompiledModel.__call__`` reuses one stored request, so each calling thread gets its own
``InferRequest`` (thread-local). Compiled blobs are cached in ``CACHE_DIR`` so the second load skips
compilation: a folder keyed by the sha256 of the model files under the user's cache directory (or
``cache_dir``), never under the artifact (:func:`infership.runtime.integrity.runtime_cache_dir`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..artifact import Artifact
from ..backend import BackendOptions, PerformanceHint, Placement, SessionBase
from ..errors import (
    ArtifactError,
    BackendUnavailable,
    InferenceError,
    IntegrityError,
    InvalidInputError,
)
from ..integrity import runtime_cache_dir
from ..manifest import Variant
from ..onnxfile import check_external_data
from ..spec import TensorSpec, variable_length

log = logging.getLogger(__name__)


def _import_ov():
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailable("openvino is not installed: pip install 'infership[openvino]'") from exc
    return openvino


class OpenVinoBackend:
    """OpenVINO Runtime."""

    name = "openvino"
    formats: tuple[str, ...] = ("openvino", "onnx")
    default_device = "CPU"
    honours = frozenset({"intra_op_threads", "hint", "num_streams", "cache_dir"})
    extra_keys = frozenset({"config", "inference_precision", "static_batch"})

    def __init__(self) -> None:
        self._core: Any = None
        self._lock = threading.Lock()

    def core(self) -> Any:
        with self._lock:
            if self._core is None:
                self._core = _import_ov().Core()
            return self._core

    @staticmethod
    def _ov_device(device: str | None) -> str:
        if device is None or device.lower() == "cpu":
            return "CPU"
        return device

    def check(self, device: str | None = None) -> None:
        core = self.core()
        dev = self._ov_device(device)
        base = _device_kind(dev)
        if base in ("AUTO", "MULTI", "HETERO", "BATCH"):
            return
        available = core.available_devices
        if dev not in available and not any(d.startswith(base) for d in available):
            raise BackendUnavailable(
                f"OpenVINO device {dev!r} not found; available: {', '.join(available) or 'none'}"
            )

    def open(self, artifact: Artifact, variant: Variant, options: BackendOptions) -> OpenVinoSession:
        unknown = set(options.extra) - self.extra_keys
        if unknown:
            raise InvalidInputError(
                f"openvino: unknown extra option(s) {sorted(unknown)}; known: {sorted(self.extra_keys)}"
            )
        core = self.core()
        device = self._ov_device(options.device)
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "THROUGHPUT" if options.hint is PerformanceHint.THROUGHPUT else "LATENCY"
        }
        if options.intra_op_threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(options.intra_op_threads)
        if options.num_streams is not None:
            config["NUM_STREAMS"] = str(options.num_streams)
        want = options.extra.get("inference_precision") or default_inference_precision(
            variant.precision, artifact.manifest.inputs, device
        )
        if want:
            config["INFERENCE_PRECISION_HINT"] = want
        config.update(dict(options.extra.get("config", {})))
        try:
            # Keyed by the verified model hashes and outside the artifact: a blob someone dropped into an
            # artifact directory is never loaded in place of the model the manifest vouches for.
            cache = runtime_cache_dir(
                "openvino",
                [f.sha256 for f in variant.files],
                {"openvino": _import_ov().__version__, "device": device},
                options.cache_dir,
            )
            config["CACHE_DIR"] = os.fspath(cache)
        except OSError as exc:
            log.warning("openvino: no compiled-model cache (%s); every load compiles", exc)
        files = [artifact.path_of(f) for f in variant.files]
        try:
            if variant.format == "openvino":
                xml = next((p for p in files if p.suffix == ".xml"), None)
                binf = next((p for p in files if p.suffix == ".bin"), None)
                if xml is None:
                    raise ArtifactError(f"variant {variant.id!r} has no .xml file")
                if binf is None and xml.with_suffix(".bin").exists():
                    # OpenVINO would read the unlisted sibling .bin: its hash would go unchecked.
                    raise IntegrityError(
                        f"variant {variant.id!r} lists {xml.name} without its weights, and "
                        f"{xml.with_suffix('.bin').name} lies beside it unlisted; list it among the files"
                    )
                model = core.read_model(os.fspath(xml), os.fspath(binf) if binf else None)
            else:
                check_external_data(files[0], variant)  # every file OpenVINO reads is listed and hashed
                model = core.read_model(os.fspath(files[0]))
        except ArtifactError:
            raise
        except (
            Exception
        ) as exc:  # OpenVINO raises RuntimeError subclasses with C++ messages: translated below
            raise ArtifactError(f"OpenVINO cannot read {files[0].name}: {str(exc).strip()[:400]}") from exc
        static_batch = _static_batch(options.extra.get("static_batch"), artifact.manifest.inputs)
        if static_batch is not None:
            # A dynamic batch compiled as a fixed one: the CPU plugin then plans its memory and kernels
            # once, which is faster for that batch. The Predictor splits (and pads) other batches to it.
            try:
                model.reshape(
                    {s.name: _with_batch(model, s.name, static_batch) for s in artifact.manifest.inputs}
                )
            except Exception as exc:  # OpenVINO's C++ errors: translated
                raise InvalidInputError(
                    f"openvino: cannot fix the batch of {variant.id!r} to {static_batch}: {str(exc).strip()[:300]}"
                ) from exc
        try:
            compiled = core.compile_model(model, device, config)
        except Exception as exc:  # as above
            raise BackendUnavailable(
                f"openvino: compiling for {device} failed: {str(exc).strip()[:400]}"
            ) from exc
        try:
            devices = tuple(compiled.get_property("EXECUTION_DEVICES"))
        except Exception:  # noqa: BLE001 - property missing on some plugins; placement detail is optional
            devices = (device,)
        details = {}
        for prop in ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS"):
            try:
                details[prop.lower()] = str(compiled.get_property(prop))
            except Exception:  # noqa: BLE001 - not every device plugin reports every property
                continue
        if static_batch is not None:
            details["static_batch"] = str(static_batch)
        try:
            optimal = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        except Exception:  # noqa: BLE001 - a plugin without the property runs one request at a time
            optimal = 1
        details["optimal_number_of_infer_requests"] = str(optimal)
        placement = Placement(backend=self.name, device=device, providers=devices, details=details)
        session = OpenVinoSession(compiled, artifact, placement)
        session.optimal_concurrency = optimal
        if static_batch is not None:
            session.inputs = tuple(
                replace(s, shape=(static_batch, *s.shape[1:])) for s in session.inputs
            )  # the Predictor reads the session's batch to split and pad calls
        return session


class OpenVinoSession(SessionBase):
    """One compiled model; one InferRequest per calling thread."""

    def __init__(self, compiled: Any, artifact: Artifact, placement: Placement) -> None:
        self._compiled = compiled
        self.placement = placement
        self.inputs: tuple[TensorSpec, ...] = tuple(artifact.manifest.inputs)
        self.outputs: tuple[TensorSpec, ...] = tuple(artifact.manifest.outputs)
        self._local = threading.local()
        # Map manifest output names to compiled-model output ports (names survive conversion; fall back
        # to position when a converter renamed them).
        ports = list(compiled.outputs)
        self._out_ports: list[tuple[str, int]] = []
        for i, spec in enumerate(self.outputs):
            idx = next((j for j, p in enumerate(ports) if spec.name in p.get_names()), None)
            if idx is None:
                if len(ports) != len(self.outputs):
                    raise ArtifactError(
                        f"openvino model has {len(ports)} outputs, the manifest lists {len(self.outputs)}"
                    )
                idx = i
            self._out_ports.append((spec.name, idx))
        in_names = set()
        for p in compiled.inputs:
            in_names |= set(p.get_names())
        missing = [s.name for s in self.inputs if s.name not in in_names]
        if missing:
            raise ArtifactError(f"openvino model has no input(s) named {missing}")

    def _request(self) -> Any:
        req = getattr(self._local, "req", None)
        if req is None:
            req = self._compiled.create_infer_request()
            self._local.req = req
        return req

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._compiled is None:
            raise InferenceError("the session is closed")
        try:
            req = self._request()
        except AttributeError as exc:  # closed by another thread between the check and here
            raise InferenceError("the session is closed") from exc
        try:
            res = req.infer(dict(feeds), share_inputs=True, share_outputs=True)
        except Exception as exc:  # as above
            raise InferenceError(f"openvino inference failed: {exc}") from exc
        # share_outputs gives views into the request's buffers, overwritten by its next call: copy once.
        return {name: np.array(res[idx], copy=True) for name, idx in self._out_ports}

    def close(self) -> None:
        self._compiled = None
        self._local = threading.local()


def default_inference_precision(precision: str, inputs: Sequence[TensorSpec], device: str) -> str | None:
    """The ``INFERENCE_PRECISION_HINT`` a variant of ``precision`` runs with when the caller names none
    (``None``: the device's default).

    An fp32 variant means fp32 arithmetic on every device: without the hint, CPUs with AMX run bf16 and GPUs
    run f16. The float parts of any other variant of a model with variable-length inputs (a text encoder's
    int8) also run in f32 on the CPU: on an Intel Xeon with AMX, OpenVINO 2026.4's CPU plugin in its default
    bf16 returned all-NaN embeddings for a small BERT in some processes (depending on what the process had
    compiled before) and corrupted the heap running all-MiniLM-L6-v2. Elsewhere the plugin's default stands.
    """
    if precision == "fp32":
        return "f32"
    if _device_kind(device) == "CPU" and variable_length(inputs):
        return "f32"
    return None


def _device_kind(device: str) -> str:
    """``"GPU.1"`` → ``"GPU"``, ``"HETERO:GPU,CPU"`` → ``"HETERO"``: the plugin an OpenVINO device string names."""
    return device.split(":")[0].split(".")[0]


def _static_batch(value: Any, inputs: Sequence[TensorSpec]) -> int | None:
    """``extra["static_batch"]`` checked: a whole number >= 1 for a model whose inputs all have a batch
    axis; ``None`` when not asked for, or when the model's batch is fixed already (to that number)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"openvino: static_batch must be a whole number >= 1, got {value!r}")
    if not inputs or any(not s.ranked or not s.shape for s in inputs):
        raise InvalidInputError("openvino: static_batch needs every input to have a batch axis (axis 0)")
    fixed = {s.batch_size for s in inputs}
    if fixed == {value}:
        return None
    if fixed != {None}:
        raise InvalidInputError(
            f"openvino: static_batch={value} for a model whose batch is fixed already ({sorted(map(str, fixed))})"
        )
    return value


def _with_batch(model: Any, name: str, batch: int) -> Any:
    ov = _import_ov()
    shape = model.input(name).get_partial_shape()
    dims = [ov.Dimension(batch)] + [shape[i] for i in range(1, shape.rank.get_length())]
    return ov.PartialShape(dims)
