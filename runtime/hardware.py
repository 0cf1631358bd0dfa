"""What this machine can do: CPU model and ISA flags, NVIDIA GPUs, and an environment fingerprint.

Reads ``/proc`` and runs ``nvidia-smi`` when present; imports no runtime. Results are cached per process.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
    "asimd",
    "asimddp",
    "sve",
)


@dataclass(frozen=True)
class CpuInfo:
    model: str
    arch: str
    logical_cores: int
    physical_cores: int | None
    flags: tuple[str, ...]

    @property
    def int8_support(self) -> str:
        """``"amx"``, ``"vnni"``, ``"avx512"`` (int8 without VNNI), ``"avx2"``, ``"neon-dot"`` or ``"none"``."""
        f = set(self.flags)
        if "amx_int8" in f:
            return "amx"
        if "avx512_vnni" in f or "avx_vnni" in f:
            return "vnni"
        if "avx512bw" in f:
            return "avx512"
        if "avx2" in f:
            return "avx2"
        if "asimddp" in f:
            return "neon-dot"
        return "none"


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_mib: int | None
    driver: str | None
    compute_capability: str | None


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """The CPU model, core counts and the ISA flags that matter for inference."""
    model, flags, physical = platform.processor() or "unknown", set(), None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    cores: set[tuple[str, str]] = set()
    phys_id = core_id = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name":
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "physical id":
            phys_id = value
        elif key == "core id":
            core_id = value
            cores.add((phys_id, core_id))
    if cores:
        physical = len(cores)
    return CpuInfo(
        model=model,
        arch=platform.machine(),
        logical_cores=os.cpu_count() or 1,
        physical_cores=physical,
        flags=tuple(f for f in _ISA_FLAGS if f in flags),
    )


@functools.lru_cache(maxsize=1)
def nvidia_gpus() -> tuple[GpuInfo, ...]:
    """NVIDIA GPUs visible to this process, in CUDA's order (empty when there is no driver or device).

    ``CUDA_VISIBLE_DEVICES`` is honoured as CUDA reads it: indices or ``GPU-…`` UUIDs (prefixes allowed), in
    the order given; the listed GPUs get indices 0, 1, … as CUDA numbers them. MIG instance ids cannot be
    mapped from ``nvidia-smi --query-gpu``, so with those the physical GPUs are listed unfiltered.
    """
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    query = "index,name,memory.total,driver_version,compute_cap,uuid"
    try:
        out = subprocess.run(
            [smi, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("nvidia-smi failed: %s", exc)
        return ()
    rows = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 6:
            continue
        mem = int(parts[2]) if parts[2].isdigit() else None
        rows.append((parts[0], parts[5], parts[1], mem, parts[3] or None, parts[4] or None))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and "MIG-" in visible:
        # MIG instances are not rows of --query-gpu; claiming "no GPU" would be wrong, so keep them all.
        log.debug("CUDA_VISIBLE_DEVICES names MIG instances; listing the physical GPUs unfiltered")
        visible = None
    if visible is not None:
        picked = []
        for want in (v.strip() for v in visible.split(",")):
            if not want:
                break  # CUDA stops at the first invalid entry
            match = next((r for r in rows if r[0] == want or (len(want) > 4 and r[1].startswith(want))), None)
            if match is None:
                break
            picked.append(match)
        rows = picked
    return tuple(GpuInfo(i, name, mem, drv, cc) for i, (_, _, name, mem, drv, cc) in enumerate(rows))


def no_gpu_reason() -> str | None:
    """``None`` if an NVIDIA GPU is visible, else a sentence saying why not."""
    if nvidia_gpus():
        return None
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU: nvidia-smi not found (no driver installed)"
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return "no NVIDIA GPU: CUDA_VISIBLE_DEVICES is empty"
    return "no NVIDIA GPU: nvidia-smi lists no device"


_LIBRARIES = (
    "infership",
    "numpy",
    "torch",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "nncf",
    "tensorrt",
)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that affect speed or numerics (read from metadata, no import)."""
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def environment() -> dict[str, Any]:
    """A description of this machine for results files and caches."""
    cpu = cpu_info()
    return {
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": {**asdict(cpu), "flags": list(cpu.flags), "int8_support": cpu.int8_support},
        "gpus": [asdict(g) for g in nvidia_gpus()],
        "libraries": library_versions(),
    }


def fingerprint(
    env: dict[str, Any] | None = None, *, keys: tuple[str, ...] = ("cpu", "gpus", "libraries")
) -> str:
    """A short stable hash of the parts of the environment that decide speed and compiled-engine validity."""
    env = environment() if env is None else env
    payload = json.dumps({k: env.get(k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
