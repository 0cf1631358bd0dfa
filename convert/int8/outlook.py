"""When int8 will not help: what this CPU's int8 support means for speed and accuracy.

int8 pays on x86 when the CPU has dot-product instructions for 8-bit integers (AVX-512 VNNI or AVX-VNNI;
AMX on Sapphire Rapids and later). Without them, U8S8 products are computed with ``vpmaddubsw``, which
saturates at 16 bits — accuracy can suffer unless weights use 7 bits (``reduce_range``) — and the speedup
over fp32 shrinks or disappears.
"""

from __future__ import annotations

import logging
from typing import Any

from .types import Int8Outlook

log = logging.getLogger(__name__)


_BY_SUPPORT = {
    "amx": (
        "fast",
        "AMX tiles run int8 matrix products; OpenVINO uses them for int8 convolutions and MatMuls.",
    ),
    "vnni": (
        "fast",
        "VNNI dot-product instructions: static int8 (U8S8 QDQ, NNCF) is typically 2–6× fp32 on CNNs.",
    ),
    "avx512": (
        "limited",
        "AVX-512 without VNNI: int8 products saturate at 16 bits; use reduce_range (the cpu_avx2 preset) "
        "and expect a modest speedup over fp32.",
    ),
    "avx2": (
        "limited",
        "AVX2 without VNNI: int8 products saturate at 16 bits (use the cpu_avx2 preset, 7-bit weights); "
        "int8 is often under 1.5× fp32 and small models can be slower than fp32.",
    ),
    "neon-dot": (
        "limited",
        "ARM dot-product instructions: int8 helps on ONNX Runtime; check OpenVINO's ARM support.",
    ),
    "none": ("slow", "No int8 dot-product instructions: int8 will most likely be slower than fp32 here."),
}


def int8_outlook(
    cpu: Any = None,
    *,
    activation_type: str | None = None,
    reduce_range: bool | None = None,
    target: str | None = None,
) -> Int8Outlook:
    """Judge int8 on this CPU (or ``cpu``, a :class:`~infership.runtime.hardware.CpuInfo`) and, when an ONNX
    Runtime configuration is given, whether it fits the CPU. Warnings are logged for ``limited``/``slow``.

    Args:
        cpu: The CPU to judge; default: this machine's.
        activation_type: ``"uint8"`` or ``"int8"`` activations of the ONNX Runtime variant.
        reduce_range: Whether its weights use 7 bits.
        target: Its target backend (``ort-cpu``, ``ort-trt``...); CPU advice is skipped for GPU targets.

    Returns:
        The verdict with its reasons.
    """
    from infership.runtime.hardware import cpu_info

    info = cpu if cpu is not None else cpu_info()
    support = info.int8_support
    verdict, first = _BY_SUPPORT.get(support, ("limited", f"unknown int8 support {support!r}"))
    notes = [first]
    on_cpu = target is None or not target.startswith(("ort-trt", "ort-cuda"))
    if on_cpu and activation_type == "int8" and support not in ("amx", "neon-dot"):
        notes.append(
            "int8 (S8S8) activations run slower than uint8 (U8S8) on x86 CPUs in ONNX Runtime; "
            "use the cpu_vnni preset for CPU deployment (the tensorrt preset is for GPUs)."
        )
        verdict = "limited" if verdict == "fast" else verdict
    if on_cpu and reduce_range is False and support in ("avx512", "avx2"):
        notes.append(
            "without VNNI, 8-bit weights can saturate; reduce_range=True (cpu_avx2 preset) avoids it."
        )
    if info.logical_cores <= 1:
        notes.append("one core: figures measured here will not show multi-threaded speedups.")
    outlook = Int8Outlook(support, verdict, tuple(notes))
    if verdict != "fast":
        log.warning("int8 on this CPU (%s): %s", support, " ".join(notes))
    return outlook
