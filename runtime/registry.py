"""Backend registry: name → ``"module:Class"``, loaded on first use; third parties add entries through the
``infership.backends`` entry-point group (value: ``"package.module:BackendClass"``).

Which registered backend ``auto`` picks is decided in :mod:`infership.runtime.selection`.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from importlib import metadata

from .backend import Backend
from .errors import BackendUnavailable

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "infership.backends"


@dataclass(frozen=True)
class BackendEntry:
    name: str
    target: str  # "module:Class"
    install_hint: str
    description: str


_BUILTIN: tuple[BackendEntry, ...] = (
    BackendEntry(
        "torch",
        "infership.runtime.backends.torch:TorchBackend",
        "pip install 'infership[torch]'",
        "PyTorch (torch.export / TorchScript program): the reference; CPU and CUDA",
    ),
    BackendEntry(
        "ort-cpu",
        "infership.runtime.backends.ort:OrtCpuBackend",
        "pip install 'infership[ort]'",
        "ONNX Runtime, CPU execution provider",
    ),
    BackendEntry(
        "ort-cuda",
        "infership.runtime.backends.ort:OrtCudaBackend",
        "pip install 'infership[gpu]'",
        "ONNX Runtime, CUDA execution provider, IO binding",
    ),
    BackendEntry(
        "ort-trt",
        "infership.runtime.backends.ort:OrtTensorrtBackend",
        "pip install 'infership[gpu,tensorrt]'",
        "ONNX Runtime, TensorRT execution provider, engine + timing caches",
    ),
    BackendEntry(
        "openvino",
        "infership.runtime.backends.openvino:OpenVinoBackend",
        "pip install 'infership[openvino]'",
        "OpenVINO (CPU by default; any OpenVINO device)",
    ),
    BackendEntry(
        "fake",
        "infership.runtime.backends.fake:FakeBackend",
        "",
        "Deterministic stand-in for users' own tests and for measuring harness overhead",
    ),
    BackendEntry(
        "http",
        "infership.runtime.backends.http:HttpBackend",
        "",
        "A prediction server ('infership serve'); the device is its URL, e.g. http://127.0.0.1:8000",
    ),
)

_lock = threading.Lock()
_entries: dict[str, BackendEntry] | None = None
_instances: dict[str, Backend] = {}


def _load_entries() -> dict[str, BackendEntry]:
    global _entries
    if _entries is not None:
        return _entries
    entries = {e.name: e for e in _BUILTIN}
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # pragma: no cover - Python < 3.10 API
        eps = ()
    for ep in eps:
        if ep.name in entries:
            log.warning("entry point %s=%s ignored: %r is a built-in backend", ep.name, ep.value, ep.name)
            continue
        entries[ep.name] = BackendEntry(ep.name, ep.value, f"the package providing {ep.value}", "third-party")
    _entries = entries
    return entries


def register_backend(name: str, target: str | type, *, description: str = "", install_hint: str = "") -> None:
    """Register a backend by ``"module:Class"`` or class (for in-process plug-ins and tests)."""
    with _lock:
        entries = _load_entries()
        if isinstance(target, type):
            _instances[name] = target()
            target = f"{target.__module__}:{target.__qualname__}"
        entries[name] = BackendEntry(name, target, install_hint, description)


def backend_names() -> list[str]:
    return list(_load_entries())


def entry(name: str) -> BackendEntry:
    entries = _load_entries()
    if name not in entries:
        raise BackendUnavailable(f"unknown backend {name!r}; known backends: {', '.join(entries)}")
    return entries[name]


def get_backend(name: str) -> Backend:
    """The backend instance for ``name`` (imported and created on first use)."""
    with _lock:
        if name in _instances:
            return _instances[name]
        e = entry(name)
        module_name, _, attr = e.target.partition(":")
        try:
            module = importlib.import_module(module_name)
            cls = getattr(module, attr)
        except ImportError as exc:
            raise BackendUnavailable(
                f"backend {name!r} cannot be imported ({exc}); {e.install_hint}"
            ) from exc
        except AttributeError as exc:
            raise BackendUnavailable(f"backend {name!r}: {e.target} not found ({exc})") from exc
        instance = cls()
        _instances[name] = instance
        return instance


@dataclass(frozen=True)
class BackendStatus:
    name: str
    available: bool
    reason: str
    description: str


def backend_status(device: str | None = None) -> list[BackendStatus]:
    """Every registered backend with whether it can run here and why (``check()``, imported lazily)."""
    out = []
    for name, e in _load_entries().items():
        try:
            backend = get_backend(name)
            backend.check(device)
        except BackendUnavailable as exc:
            out.append(BackendStatus(name, False, str(exc), e.description))
            continue
        out.append(BackendStatus(name, True, "ok", e.description))
    return out


def is_available(name: str, device: str | None = None) -> str | None:
    """``None`` if backend ``name`` can run on ``device``, else the reason it cannot."""
    try:
        get_backend(name).check(device)
    except BackendUnavailable as exc:
        return str(exc)
    return None
