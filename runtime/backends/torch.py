"""PyTorch backend: runs the ``torch.export`` program (``.pt2``) or TorchScript file stored in the artifact.

This is the reference every other backend is compared with. CPU and CUDA.

A TorchScript or ``torch.export`` file is a program: loading it deserialises code, and running it calls
whatever operators it names (file-reading ones included), with the rights of the process. The backend
therefore opens only programs this installation built — recorded by :class:`ArtifactWriter` when it
committed them, or an in-memory candidate — unless the caller opts in for a program built elsewhere with
``extra={"trust_program": True}`` or ``INFERSHIP_TRUST_PROGRAMS=1``. ONNX and OpenVINO variants of the
same artifact (closed operator sets, no code) need no opt-in.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..artifact import Artifact
from ..backend import BackendOptions, Placement, SessionBase
from ..errors import ArtifactError, BackendUnavailable, InferenceError, InvalidInputError, UntrustedProgram
from ..manifest import Variant
from ..spec import TensorSpec

log = logging.getLogger(__name__)

#: Set to ``1`` to run torch programs this installation did not build (see the module docstring).
TRUST_ENV = "INFERSHIP_TRUST_PROGRAMS"


class _ThreadSetting:
    """torch's intra-op thread count is process-wide. Sessions that set it hold a reference; the count the
    process had before the first of them is restored when the last one closes (not when any one does)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._original: int | None = None

    def acquire(self, torch: Any, threads: int) -> None:
        with self._lock:
            if self._holders == 0:
                self._original = torch.get_num_threads()
            self._holders += 1
            torch.set_num_threads(threads)

    def release(self, torch: Any) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and self._original is not None:
                torch.set_num_threads(self._original)
                self._original = None


_threads = _ThreadSetting()


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailable("torch is not installed: pip install 'infership[torch]'") from exc
    return torch


class TorchBackend:
    """PyTorch eager execution of an exported program or TorchScript module."""

    name = "torch"
    formats: tuple[str, ...] = ("torch-export", "torchscript")
    default_device = "cpu"
    extra_keys = frozenset({"trust_program"})
    honours = frozenset({"intra_op_threads"})

    def check(self, device: str | None = None) -> None:
        dev = device or "cpu"
        if dev == "cpu":
            # Importing torch costs seconds; finding it is enough to know the CPU path can run.
            if importlib.util.find_spec("torch") is None:
                raise BackendUnavailable("torch is not installed: pip install 'infership[torch]'")
            return
        torch = _import_torch()
        if dev.startswith("cuda"):
            if not torch.cuda.is_available():
                from ..hardware import no_gpu_reason

                why = (
                    no_gpu_reason()
                    or "torch.cuda.is_available() is False (CPU-only build or driver mismatch)"
                )
                raise BackendUnavailable(f"torch on {dev}: {why}")
            idx = int(dev.split(":", 1)[1]) if ":" in dev else 0
            if idx >= torch.cuda.device_count():
                raise BackendUnavailable(
                    f"torch: {dev} requested, {torch.cuda.device_count()} CUDA device(s) visible"
                )
        elif dev != "cpu":
            raise BackendUnavailable(f"torch backend runs on 'cpu' or 'cuda[:N]', got {dev!r}")

    def open(self, artifact: Artifact, variant: Variant, options: BackendOptions) -> TorchSession:
        unknown = set(options.extra) - self.extra_keys
        if unknown:
            raise InvalidInputError(
                f"torch: unknown extra option(s) {sorted(unknown)}; known: {sorted(self.extra_keys)}"
            )
        trusted = options.extra.get("trust_program") is True or os.environ.get(TRUST_ENV) == "1"
        if not (trusted or artifact.program_trusted(variant)):
            raise UntrustedProgram(
                f"variant {variant.id!r} of {artifact.root} is a {variant.format} program this installation "
                "did not build; running it executes its code with your rights. If you trust its source, "
                f"pass extra={{'trust_program': True}} or set {TRUST_ENV}=1; or run its onnx/openvino "
                "variants, which need no trust"
            )
        torch = _import_torch()
        device = torch.device(options.device or "cpu")
        sets_threads = options.intra_op_threads is not None
        if sets_threads:
            _threads.acquire(torch, int(options.intra_op_threads))
        path = artifact.path_of(variant.files[0])
        try:
            if variant.format == "torch-export":
                program = torch.export.load(os.fspath(path))
                module = program.module()
                module.to(device)
            else:
                module = _jit_load(torch, path, device)
                module.eval()
        except Exception as exc:  # torch raises many unrelated types for a bad file: translated below
            if sets_threads:
                _threads.release(torch)
            raise ArtifactError(
                f"torch cannot load {path.name}: {type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
        placement = Placement(
            backend=self.name, device=str(device), providers=(f"torch {torch.__version__} {device}",)
        )
        return TorchSession(module, artifact, placement, device, holds_threads=sets_threads)


def _jit_load(torch: Any, path: Any, device: Any) -> Any:
    try:
        return torch.jit.load(os.fspath(path), map_location=device)
    except RuntimeError as exc:
        # A traced detector calls torchvision's operators (torchvision::nms, roi_align), which exist only
        # once torchvision is imported: import it then, and only then (it costs a second on every load).
        if "torchvision::" not in str(exc):
            raise
        import torchvision  # noqa: F401

        return torch.jit.load(os.fspath(path), map_location=device)


class TorchSession(SessionBase):
    def __init__(
        self,
        module: Any,
        artifact: Artifact,
        placement: Placement,
        device: Any,
        *,
        holds_threads: bool = False,
    ) -> None:
        import torch

        self._torch = torch
        self._module = module
        self._device = device
        self.placement = placement
        self.inputs: tuple[TensorSpec, ...] = tuple(artifact.manifest.inputs)
        self.outputs: tuple[TensorSpec, ...] = tuple(artifact.manifest.outputs)
        self._in_names = [s.name for s in self.inputs]
        self._out_names = [s.name for s in self.outputs]
        self._cuda = device.type == "cuda"
        self.accepts_device_tensors = self._cuda
        self._holds_threads = holds_threads

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        if self._cuda:
            args = [
                (torch.from_numpy(v) if isinstance(v, np.ndarray) else v).to(self._device, non_blocking=True)
                for v in (feeds[n] for n in self._in_names)
            ]
        else:
            # torch warns about (and cannot mark) read-only memory: such inputs are copied, others shared.
            args = [
                torch.from_numpy(v if v.flags.writeable else v.copy())
                for v in (feeds[n] for n in self._in_names)
            ]
        module = self._module  # one read: close() from another thread cannot pull it away mid-call
        if module is None:
            raise InferenceError("the session is closed")
        try:
            with torch.inference_mode():
                out = module(*args)
        except Exception as exc:  # arbitrary model code: translated below
            raise InferenceError(f"torch forward failed: {type(exc).__name__}: {exc}") from exc
        values = self._values(out)
        try:
            if self._cuda:
                return {n: v.cpu().numpy() for n, v in zip(self._out_names, values, strict=True)}
            # inference-mode tensors on the CPU convert without detach/cpu (each is a dispatcher round trip).
            return {n: v.numpy() for n, v in zip(self._out_names, values, strict=True)}
        except (TypeError, RuntimeError) as exc:  # bfloat16, float8, sparse, quantized: no numpy form
            kinds = {n: str(v.dtype) for n, v in zip(self._out_names, values, strict=True)}
            raise InferenceError(f"torch outputs {kinds} cannot be returned as numpy arrays: {exc}") from exc

    def _values(self, out: Any) -> tuple[Any, ...]:
        """The model's outputs in the manifest's order; every one a tensor, as many as it lists."""
        torch = self._torch
        if isinstance(out, torch.Tensor):
            if len(self._out_names) != 1:
                raise InferenceError(f"model returned 1 output, the manifest lists {len(self._out_names)}")
            return (out,)  # the common case, checked without more work
        if isinstance(out, Mapping):
            missing = [n for n in self._out_names if n not in out]
            if missing:
                raise InferenceError(f"model returned outputs {sorted(map(str, out))}, missing {missing}")
            values: tuple[Any, ...] = tuple(out[n] for n in self._out_names)
        elif isinstance(out, (tuple, list)):
            values = tuple(out)
        else:
            raise InferenceError(f"model returned a {type(out).__name__}, expected tensors")
        if len(values) != len(self._out_names):
            raise InferenceError(
                f"model returned {len(values)} outputs, the manifest lists {len(self._out_names)}"
            )
        if not all(isinstance(v, torch.Tensor) for v in values):
            kinds = [type(v).__name__ for v in values]
            raise InferenceError(f"model returned {kinds}, expected a tensor per output")
        return values

    def close(self) -> None:
        self._module = None
        if self._holds_threads:
            self._holds_threads = False
            _threads.release(self._torch)
