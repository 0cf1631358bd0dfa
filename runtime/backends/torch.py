"""PyTorch backend: runs the ``torch.export`` program (``.pt2``) or TorchScript file stored in the artifact.

This is the reference every other backend is compared with. CPU and CUDA.
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
from ..errors import ArtifactError, BackendUnavailable, InferenceError, InvalidInputError
from ..manifest import Variant
from ..spec import TensorSpec

log = logging.getLogger(__name__)


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
    extra_keys = frozenset()
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
        torch = _import_torch()
        if options.extra:
            raise InvalidInputError(f"torch: unknown extra option(s) {sorted(options.extra)}; it takes none")
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
                module = torch.jit.load(os.fspath(path), map_location=device)
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
            args = [torch.from_numpy(feeds[n]) for n in self._in_names]
        module = self._module  # one read: close() from another thread cannot pull it away mid-call
        if module is None:
            raise InferenceError("the session is closed")
        try:
            with torch.inference_mode():
                out = module(*args)
        except Exception as exc:  # arbitrary model code: translated below
            raise InferenceError(f"torch forward failed: {type(exc).__name__}: {exc}") from exc
        if isinstance(out, torch.Tensor):
            values = (out,)
        elif isinstance(out, Mapping):
            values = tuple(out[n] for n in self._out_names)
        else:
            values = tuple(out)
        if len(values) != len(self._out_names):
            raise InferenceError(
                f"model returned {len(values)} outputs, the manifest lists {len(self._out_names)}"
            )
        if self._cuda:
            return {n: v.cpu().numpy() for n, v in zip(self._out_names, values, strict=True)}
        # inference-mode tensors on the CPU convert without detach/cpu (each is a dispatcher round trip).
        return {n: v.numpy() for n, v in zip(self._out_names, values, strict=True)}

    def close(self) -> None:
        self._module = None
        if self._holds_threads:
            self._holds_threads = False
            _threads.release(self._torch)
