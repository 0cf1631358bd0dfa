"""ONNX Runtime backends: ``ort-cpu``, ``ort-cuda`` (IO binding) and ``ort-trt`` (engine + timing caches).

No silent fallback: after a session is created, ``get_providers()`` must start with the provider that was
asked for, else BackendUnavailable is raised. Node placement per provider is reported where ONNX Runtime
records it (``session.record_ep_graph_assignment_info``, ORT ≥ 1.23).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import Artifact
from ..backend import BackendOptions, Placement, SessionBase
from ..errors import ArtifactError, BackendUnavailable, InferenceError, InvalidInputError
from ..hardware import library_versions, no_gpu_reason, nvidia_gpus
from ..integrity import runtime_cache_dir
from ..manifest import Variant
from ..onnxfile import check_external_data
from ..spec import TensorSpec

log = logging.getLogger(__name__)

_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_TRT = "TensorrtExecutionProvider"


def _import_ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(
            "onnxruntime is not installed: pip install 'infership[ort]' (CPU) or 'infership[gpu]' (CUDA/TensorRT)"
        ) from exc
    return onnxruntime


def _cuda_device_id(device: str | None) -> int:
    if device and ":" in device:
        try:
            return int(device.split(":", 1)[1])
        except ValueError as exc:
            raise BackendUnavailable(f"bad CUDA device {device!r}: expected 'cuda' or 'cuda:N'") from exc
    return 0


class _OrtBackendBase:
    name = "ort-cpu"
    provider = _CPU
    formats: tuple[str, ...] = ("onnx",)
    default_device = "cpu"
    honours = frozenset({"intra_op_threads", "inter_op_threads", "cache_dir", "io_binding"})
    #: Backend-specific option keys accepted in ``extra``.
    extra_keys: frozenset[str] = frozenset({"graph_optimization_level", "session_config", "record_placement"})

    def check(self, device: str | None = None) -> None:
        ort = _import_ort()
        if self.provider not in ort.get_available_providers():
            raise BackendUnavailable(
                f"{self.provider} is not in this onnxruntime build ({ort.__version__}); "
                f"providers: {', '.join(ort.get_available_providers())}"
            )
        self._check_device(device)

    def _check_device(self, device: str | None) -> None:
        if device not in (None, "cpu"):
            raise BackendUnavailable(f"{self.name} runs on the CPU; device {device!r} requested")

    def provider_options(
        self, artifact: Artifact, variant: Variant, options: BackendOptions
    ) -> dict[str, Any]:
        return {}

    def open(self, artifact: Artifact, variant: Variant, options: BackendOptions) -> OrtSession:
        ort = _import_ort()
        unknown = set(options.extra) - self.extra_keys
        if unknown:
            raise InvalidInputError(
                f"{self.name}: unknown extra option(s) {sorted(unknown)}; known: {sorted(self.extra_keys)}"
            )
        so = ort.SessionOptions()
        level = options.extra.get("graph_optimization_level", "all")
        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        if level not in levels:
            raise InvalidInputError(
                f"{self.name}: graph_optimization_level must be one of {sorted(levels)}, got {level!r}"
            )
        so.graph_optimization_level = levels[level]
        if options.intra_op_threads is not None:
            so.intra_op_num_threads = options.intra_op_threads
        if options.inter_op_threads is not None:
            so.inter_op_num_threads = options.inter_op_threads
            so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        # Where nodes ran matters on a GPU provider (a silent CPU fallback is refused below); on the CPU
        # provider every node runs there, and recording it costs a few percent of the load: opt-in only.
        record = bool(options.extra.get("record_placement", self.provider != _CPU))
        if record:
            so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        for k, v in dict(options.extra.get("session_config", {})).items():
            so.add_session_config_entry(str(k), str(v))
        providers: list[Any] = [(self.provider, self.provider_options(artifact, variant, options))]
        if self.provider != _CPU:
            providers.append(_CPU)  # for the few ops a GPU provider lacks; counted in placement
        model_path = artifact.path_of(variant.files[0])
        check_external_data(model_path, variant)  # every file ORT reads is listed and hash-checked
        try:
            sess = ort.InferenceSession(
                os.fspath(model_path),
                sess_options=so,
                providers=providers,
                disabled_optimizers=disabled_optimizers(artifact.manifest.task),  # an empty list: none
            )
        except (
            Exception
        ) as exc:  # ORT raises its own Fail/InvalidGraph/RuntimeException types: translated below
            text = str(exc)
            model_fault = type(exc).__name__ in ("InvalidProtobuf", "InvalidGraph", "UnicodeDecodeError")
            # On the CPU provider nothing but the model can make session creation fail; a GPU provider may
            # fail for its own reasons (then another backend may still run the model).
            if self.provider == _CPU or model_fault or "Load model" in text or "INVALID_PROTOBUF" in text:
                raise ArtifactError(
                    f"{model_path}: ONNX Runtime cannot load the model ({text.strip()[:300]})"
                ) from exc
            raise BackendUnavailable(f"{self.name}: session creation failed: {text.strip()[:500]}") from exc
        used = tuple(sess.get_providers())
        if not used or used[0] != self.provider:
            raise BackendUnavailable(
                f"{self.name}: asked for {self.provider} but ONNX Runtime is running on {list(used)} "
                "(the provider failed to initialise; see the onnxruntime log for why)"
            )
        counts = _node_counts(sess) if record else None
        if counts and self.provider != _CPU and counts.get(self.provider, 0) == 0:
            raise BackendUnavailable(
                f"{self.name}: {self.provider} was registered but no node was assigned to it: {counts}"
            )
        placement = Placement(
            backend=self.name,
            device=options.device or self.default_device,
            providers=used,
            node_counts=counts,
        )
        return OrtSession(sess, artifact, placement, self._binding_device(options))

    def _binding_device(self, options: BackendOptions) -> tuple[str, int] | None:
        return None


def _node_counts(sess: Any) -> dict[str, int] | None:
    getter = getattr(sess, "get_provider_graph_assignment_info", None)
    if getter is None:
        return None
    try:
        info = getter()
    except Exception as exc:  # noqa: BLE001 - not recorded / older ORT: placement detail is optional
        log.debug("no graph assignment info: %s", exc)
        return None
    counts: Counter[str] = Counter()
    for sub in info:
        ep = getattr(sub, "ep_name", None) or getattr(sub, "execution_provider", "?")
        nodes = getattr(sub, "get_nodes", None)
        n = len(nodes()) if callable(nodes) else len(getattr(sub, "nodes", ()) or ())
        counts[str(ep)] += n
    return dict(counts)


class OrtCpuBackend(_OrtBackendBase):
    """ONNX Runtime on the CPU execution provider."""

    name = "ort-cpu"
    provider = _CPU


class OrtCudaBackend(_OrtBackendBase):
    """ONNX Runtime on the CUDA execution provider, with IO binding."""

    name = "ort-cuda"
    provider = _CUDA
    default_device = "cuda"
    extra_keys = _OrtBackendBase.extra_keys | {"cudnn_conv_algo_search", "gpu_mem_limit", "enable_cuda_graph"}

    def check(self, device: str | None = None) -> None:
        super().check(device)
        reason = no_gpu_reason()
        if reason is not None:
            raise BackendUnavailable(f"{self.provider} is in the onnxruntime-gpu build, but {reason}")

    def _check_device(self, device: str | None) -> None:
        if device is not None and not device.startswith("cuda"):
            raise BackendUnavailable(f"{self.name} runs on CUDA devices ('cuda' or 'cuda:N'); got {device!r}")
        idx = _cuda_device_id(device)
        gpus = nvidia_gpus()
        if gpus and idx >= len(gpus):
            raise BackendUnavailable(
                f"{self.name}: cuda:{idx} requested but only {len(gpus)} GPU(s) are visible"
            )

    def provider_options(
        self, artifact: Artifact, variant: Variant, options: BackendOptions
    ) -> dict[str, Any]:
        opts: dict[str, Any] = {"device_id": _cuda_device_id(options.device)}
        opts["cudnn_conv_algo_search"] = options.extra.get("cudnn_conv_algo_search", "EXHAUSTIVE")
        if "gpu_mem_limit" in options.extra:
            opts["gpu_mem_limit"] = int(options.extra["gpu_mem_limit"])
        if options.extra.get("enable_cuda_graph"):
            opts["enable_cuda_graph"] = "1"
        return opts

    def _binding_device(self, options: BackendOptions) -> tuple[str, int] | None:
        return ("cuda", _cuda_device_id(options.device)) if options.io_binding else None


class OrtTensorrtBackend(OrtCudaBackend):
    """ONNX Runtime on the TensorRT execution provider.

    Engines and the timing cache live under ``<cache root>/trt/<fingerprint>/`` (the user's cache directory,
    or ``cache_dir``; never the artifact) where the fingerprint hashes the model files, GPU, driver, compute
    capability, ORT and TensorRT versions and the shape profile: any change builds a fresh engine instead
    of loading a stale one, and no engine is found by a model it was not built from. Precision lives in the ONNX graph (fp16
    casts / explicit Q/DQ), as TensorRT 11 requires; the older builder flags are set as well for TensorRT < 11.
    """

    name = "ort-trt"
    provider = _TRT
    extra_keys = OrtCudaBackend.extra_keys | {
        "shape_ranges",
        "dim_ranges",
        "max_batch",
        "opt_batch",
        "trt_max_workspace_size",
        "builder_optimization_level",
    }

    def check(self, device: str | None = None) -> None:
        super().check(device)
        versions = library_versions()
        if "tensorrt" not in versions:
            try:
                import tensorrt  # noqa: F401
            except ImportError as exc:
                raise BackendUnavailable(
                    "TensorRT libraries not found: pip install 'infership[tensorrt]' (the tensorrt wheel)"
                ) from exc

    def provider_options(
        self, artifact: Artifact, variant: Variant, options: BackendOptions
    ) -> dict[str, Any]:
        profile = trt_profile(artifact, options)
        try:
            cache = trt_cache_dir(artifact, variant, options, profile)
        except OSError as exc:
            raise BackendUnavailable(f"ort-trt: cannot create the engine cache folder ({exc})") from exc
        opts: dict[str, Any] = {
            "device_id": _cuda_device_id(options.device),
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": os.fspath(cache),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": os.fspath(cache),
        }
        trt_major = _trt_major()
        if trt_major is not None and trt_major < 11:
            if variant.precision == "fp16":
                opts["trt_fp16_enable"] = "True"
            if variant.precision == "int8":
                opts["trt_int8_enable"] = "True"
        if "trt_max_workspace_size" in options.extra:
            opts["trt_max_workspace_size"] = str(int(options.extra["trt_max_workspace_size"]))
        if "builder_optimization_level" in options.extra:
            opts["trt_builder_optimization_level"] = str(int(options.extra["builder_optimization_level"]))
        if profile:
            for key, idx in (
                ("trt_profile_min_shapes", 0),
                ("trt_profile_opt_shapes", 1),
                ("trt_profile_max_shapes", 2),
            ):
                opts[key] = ",".join(
                    f"{n}:{'x'.join(map(str, shapes[idx]))}" for n, shapes in profile.items()
                )
        log.info("TensorRT engine cache: %s", cache)
        return opts


def _trt_major() -> int | None:
    v = library_versions().get("tensorrt")
    try:
        return int(v.split(".")[0]) if v else None
    except ValueError:
        return None


def trt_profile(
    artifact: Artifact, options: BackendOptions
) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """Min/opt/max shapes per input for TensorRT's optimisation profile, covering every dynamic axis.

    ``extra["shape_ranges"]`` (``{input: [min, opt, max]}``) sets an input's shapes outright. Otherwise each
    dynamic axis gets the range of its symbol, the same in every input that shares it (TensorRT requires
    that): ``extra["dim_ranges"]`` (``{symbol: [min, opt, max]}``) where given; else the range the manifest
    declares (``Manifest.dims``, e.g. ``{"sequence": (1, 512)}`` for text models), with opt at its maximum
    for non-batch axes; else, for axis 0, 1 / ``opt_batch`` (1) / ``max_batch`` (32). A batch axis declared
    unbounded takes ``max_batch``. Any other dynamic axis without a range raises: a guess would either waste
    memory or fail at run time.

    Raises:
        BackendUnavailable: A dynamic axis has no range, or a range is not ``min <= opt <= max``.
    """
    extra = options.extra
    given = extra.get("shape_ranges") or {}
    by_symbol = {str(k): [int(x) for x in v] for k, v in (extra.get("dim_ranges") or {}).items()}
    declared = artifact.manifest.dims
    max_b = int(extra.get("max_batch", 32))
    opt_b = int(extra.get("opt_batch", 1))

    def axis_range(spec_name: str, axis: int, symbol: str | None) -> list[int]:
        if symbol is not None and symbol in by_symbol:
            rng = by_symbol[symbol]
        elif symbol is not None and symbol in declared:
            lo, hi = declared[symbol]
            lo = max(1, lo)
            if axis == 0:
                top = max_b if hi is None else min(hi, max_b)
                rng = [lo, min(max(opt_b, lo), top), top]
            elif hi is None:
                rng = []
            else:
                rng = [lo, hi, hi]
        elif axis == 0:
            rng = [1, opt_b, max_b]
        else:
            rng = []
        if not rng:
            raise BackendUnavailable(
                f"ort-trt: axis {axis} ({symbol or 'unnamed'}) of input {spec_name!r} has no declared range; "
                f"pass extra={{'dim_ranges': {{'{symbol or spec_name}': [min, opt, max]}}}} or "
                f"extra={{'shape_ranges': {{'{spec_name}': [min_shape, opt_shape, max_shape]}}}}"
            )
        if len(rng) != 3 or not 0 <= rng[0] <= rng[1] <= rng[2]:
            raise BackendUnavailable(
                f"ort-trt: range {rng} of axis {axis} of input {spec_name!r} is not [min, opt, max] with "
                "min <= opt <= max"
            )
        return rng

    out: dict[str, tuple[list[int], list[int], list[int]]] = {}
    for spec in artifact.manifest.inputs:
        if spec.name in given:
            lo, opt, hi = (list(map(int, s)) for s in given[spec.name])
            out[spec.name] = (lo, opt, hi)
            continue
        if not spec.dynamic_axes:
            continue
        shapes: tuple[list[int], list[int], list[int]] = ([], [], [])
        for axis, dim in enumerate(spec.shape):
            rng = [dim] * 3 if isinstance(dim, int) else axis_range(spec.name, axis, dim)
            for k in range(3):
                shapes[k].append(int(rng[k]))
        out[spec.name] = shapes
    return out


def trt_cache_dir(
    artifact: Artifact, variant: Variant, options: BackendOptions, profile: Mapping[str, Any]
) -> Path:
    """The engine-cache folder for this model × GPU × driver × library versions × profile."""
    gpus = nvidia_gpus()
    idx = _cuda_device_id(options.device)
    gpu = gpus[idx] if idx < len(gpus) else None
    versions = library_versions()
    key = {
        "model_sha256": variant.files[0].sha256,
        "gpu": gpu.name if gpu else None,
        "compute_capability": gpu.compute_capability if gpu else None,
        "driver": gpu.driver if gpu else None,
        "onnxruntime": versions.get("onnxruntime-gpu") or versions.get("onnxruntime"),
        "tensorrt": versions.get("tensorrt"),
        "profile": profile,
    }
    # Under the user's cache directory (or cache_dir), never under the artifact: an engine someone dropped
    # into an artifact directory is never loaded in place of the model the manifest vouches for.
    return runtime_cache_dir("trt", [f.sha256 for f in variant.files], key, options.cache_dir)


def disabled_optimizers(task: str | None) -> list[str]:
    """ONNX Runtime graph optimizers a session of this task's model runs without.

    A detector's tensors can be empty (no proposal survives, no detection): ONNX Runtime's
    ``ReshapeFusion`` turns a Reshape whose target is computed from a tensor's shape (torchvision's box
    clipping) into a constant target with ``0`` (copy) and ``-1`` (infer) entries, and a ``-1`` cannot be
    inferred from an empty tensor — "The input tensor cannot be reshaped to the requested shape. Input
    shape:{0,11,2,2}, requested shape:{0,11,-1}" on an image where the detector finds nothing. The fusion
    only saves a few shape operators, so detectors go without it.
    """
    return ["ReshapeFusion"] if task == "detection" else []


class OrtSession(SessionBase):
    """One ``onnxruntime.InferenceSession``. ``run`` is thread-safe (ORT sessions are)."""

    def __init__(
        self, sess: Any, artifact: Artifact, placement: Placement, binding: tuple[str, int] | None
    ) -> None:
        self._sess = sess
        self.placement = placement
        self.inputs: tuple[TensorSpec, ...] = tuple(artifact.manifest.inputs)
        self.outputs: tuple[TensorSpec, ...] = tuple(artifact.manifest.outputs)
        self._output_names = [o.name for o in self.outputs]
        graph_out = [o.name for o in sess.get_outputs()]
        graph_in = {i.name for i in sess.get_inputs()}
        if set(graph_out) != set(self._output_names) or graph_in != {i.name for i in self.inputs}:
            raise ArtifactError(
                f"the ONNX graph's inputs {sorted(graph_in)} / outputs {graph_out} differ from the manifest's "
                f"{[i.name for i in self.inputs]} / {self._output_names}"
            )
        self._binding = binding
        self.accepts_device_tensors = binding is not None
        # On the CPU, call the compiled session directly: ``InferenceSession.run``'s Python layer re-checks
        # the feed names (the Predictor has checked them against the same graph; the C++ session checks
        # again), looks for OrtValue ownership and graph capture, and on an execution-provider failure
        # would retry on other providers (a silent fallback). That layer is about 2.7 µs a call here, a tenth
        # of a 30 µs model.
        core = getattr(sess, "_sess", None)
        cpu_only = binding is None and list(sess.get_providers()) == ["CPUExecutionProvider"]
        self._core = core if cpu_only and callable(getattr(core, "run", None)) else None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        core = self._core  # one read each: close() from another thread cannot pull it away mid-call
        if core is not None:
            try:
                results = core.run(self._output_names, feeds, None)
            except TypeError as exc:  # a changed call in another onnxruntime release, or a bad feed
                out = self._run_public(feeds)  # raises for a bad feed
                log.warning(
                    "onnxruntime's compiled session refused the direct call (%s); using its Python API", exc
                )
                self._core = None
                return out
            except Exception as exc:  # as below
                raise InferenceError(f"onnxruntime run failed: {exc}") from exc
            return dict(zip(self._output_names, results, strict=True))
        if self._binding is not None:
            return self._run_bound(feeds)
        return self._run_public(feeds)

    def _run_public(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = self._sess
        if sess is None:
            raise InferenceError("the session is closed")
        try:
            results = sess.run(self._output_names, feeds)
        except Exception as exc:  # ORT raises untyped RuntimeErrors and its own Fail types: translated below
            raise InferenceError(f"onnxruntime run failed: {exc}") from exc
        return dict(zip(self._output_names, results, strict=True))

    def _run_bound(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """IO binding: inputs are copied to the GPU once (or bound in place when they already live
        there as torch CUDA tensors), outputs stay in device memory until one copy back at the end."""
        device_type, device_id = self._binding
        sess = self._sess
        if sess is None:
            raise InferenceError("the session is closed")
        binding = sess.io_binding()  # one per call: IOBinding objects are not thread-safe
        try:
            for name, value in feeds.items():
                if isinstance(value, np.ndarray):
                    binding.bind_cpu_input(name, value)
                else:  # a contiguous torch CUDA tensor (checked by the Predictor), bound in place
                    binding.bind_input(
                        name, device_type, device_id, _np_dtype(value), list(value.shape), value.data_ptr()
                    )
            for name in self._output_names:
                binding.bind_output(name, device_type, device_id)
            sess.run_with_iobinding(binding)
            results = binding.copy_outputs_to_cpu()
        except Exception as exc:  # as above
            raise InferenceError(
                f"onnxruntime run (IO binding on {device_type}:{device_id}) failed: {exc}"
            ) from exc
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        self._core = None
        self._sess = None


def _np_dtype(tensor: Any) -> type:
    return np.dtype(str(tensor.dtype).replace("torch.", "")).type
