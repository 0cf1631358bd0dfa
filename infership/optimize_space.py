"""What ``infership optimize`` searches: backend × variant × runtime settings × batch, per objective.

A :class:`Candidate` is one way to run the model: a backend, one of the artifact's variants, the
:class:`~infership.runtime.BackendOptions` fields to load it with, and how it is called (batch size,
concurrent callers). :func:`candidates` lists them for this machine:

- **Backends**: those that can run here (``check()`` passes), on the CPU or the GPU.
- **Variants**: fp32; fp16 only on a GPU (CPUs here run fp16 by converting it back); int8 variants
  (their accuracy is judged by the search: a recorded pass within the budget, else measured);
  OpenVINO also runs fp32 in bf16 where the CPU has bf16 instructions (then measured for accuracy too).
  torch programs only when this installation built them (the optimizer never widens trust).
- **Settings**: ONNX Runtime's own defaults (its thread count, pinned to cores), intra-op threads,
  spinning on/off, graph optimisation level, sequential or parallel execution; OpenVINO performance hint,
  streams, threads, inference precision and, for a model with a dynamic batch, that batch compiled as
  fixed (``static_batch``); torch threads.
- **Batch and callers**: ``latency`` measures batch 1, one caller; ``throughput`` and ``latency-budget``
  measure batches of 1, 8 and 32 (or the given sizes) with one caller or one per stream / CPU.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from infership.runtime import Artifact, registry
from infership.runtime.hardware import cpu_info, nvidia_gpus
from infership.runtime.manifest import Variant
from infership.runtime.profile import usable_cpus
from infership.runtime.spec import variable_length

CPU_BACKENDS = ("openvino", "ort-cpu", "torch")
GPU_BACKENDS = ("ort-trt", "ort-cuda", "torch")
THROUGHPUT_BATCHES = (1, 8, 32)
_NO_SPIN = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}


@dataclass(frozen=True)
class Candidate:
    """One way to run the model (see the module docstring).

    Args:
        backend: Backend name. variant: Variant id. precision: The variant's precision.
        settings: ``Predictor.load`` options (``intra_op_threads``, ``inter_op_threads``, ``hint``,
            ``num_streams``, ``extra``).
        batch_size: Items per call. concurrency: Parallel callers.
        device: The device (``None``: the backend's default).
        compute: What the arithmetic runs in when it differs from the variant's precision (``bf16``).
    """

    backend: str
    variant: str
    precision: str
    settings: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 1
    concurrency: int = 1
    device: str | None = None
    compute: str | None = None

    @property
    def key(self) -> str:
        """A stable identity (the table and the report use it)."""
        return json.dumps(
            [self.backend, self.variant, self.settings, self.batch_size, self.concurrency, self.device],
            sort_keys=True,
        )

    @property
    def accuracy_key(self) -> tuple[str, str, str | None]:
        """What decides the outputs: the same variant on the same backend at the same compute precision
        gives the same accuracy whatever the threads or batch."""
        return (self.backend, self.variant, self.compute)

    def load_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Predictor.load`` (besides backend and variant)."""
        return {**({"device": self.device} if self.device else {}), **self.settings}

    def describe(self) -> str:
        """Short words for the table: ``ort-cpu onnx-int8 t1 nospin b1×1``."""
        s, extra = self.settings, self.settings.get("extra", {})
        parts = [self.backend, self.variant]
        if self.compute:
            parts.append(self.compute)
        if s.get("hint"):
            parts.append(str(s["hint"])[:3])
        if s.get("num_streams") is not None:
            parts.append(f"s{s['num_streams']}")
        if s.get("intra_op_threads") is not None:
            parts.append(f"t{s['intra_op_threads']}")
        if s.get("inter_op_threads") is not None:
            parts.append("par")
        if extra.get("session_config"):
            parts.append("nospin")
        if extra.get("graph_optimization_level"):
            parts.append(str(extra["graph_optimization_level"]))
        if extra.get("static_batch"):
            parts.append("static")
        parts.append(f"b{self.batch_size}×{self.concurrency}")
        return " ".join(parts)


def _formats(backend: str) -> tuple[str, ...]:
    return registry.get_backend(backend).formats


def _variants_for(art: Artifact, backend: str, gpu: bool) -> list[Variant]:
    """The variants ``backend`` should try: per precision, those in the backend's preferred format that has
    one (the same model in another file format is the same path; two int8 recipes in one format are not)."""
    formats = _formats(backend)
    out = []
    for precision in ("fp32", "fp16", "int8"):
        if precision == "fp16" and not gpu:
            continue
        for fmt in formats:
            found = [
                v
                for v in art.manifest.variants
                if v.format == fmt
                and v.precision == precision
                and (v.format not in ("torch-export", "torchscript") or art.program_trusted(v))
            ]
            if found:
                out.extend(found)
                break
    return out


def _ort_settings(cpus: int, throughput: bool) -> list[tuple[dict[str, Any], int]]:
    """(settings, callers) pairs for ONNX Runtime on the CPU."""
    threads = sorted({cpus, 1, max(1, cpus // 2)}, reverse=True)
    # ONNX Runtime's own defaults first: its thread count (one per physical core) with its threads pinned to
    # cores, which an explicit thread count does not do; the raw tool's default is then always a candidate.
    out: list[tuple[dict[str, Any], int]] = [({}, 1)]
    for level in ("all", "extended"):
        for spin in (True, False):
            extra: dict[str, Any] = {} if level == "all" else {"graph_optimization_level": level}
            if not spin:
                extra = {**extra, "session_config": dict(_NO_SPIN)}
            for t in threads:
                base = {"intra_op_threads": t, **({"extra": extra} if extra else {})}
                callers = 1 if not throughput or t == cpus else max(1, cpus // t)
                out.append((base, callers))
                if t == cpus and cpus > 1 and not throughput:
                    out.append(({**base, "inter_op_threads": 2}, 1))  # parallel execution of branches
    return out


def _openvino_settings(cpus: int, throughput: bool) -> list[tuple[dict[str, Any], int]]:
    out: list[tuple[dict[str, Any], int]] = [({"hint": "latency"}, 1)]
    if cpus > 1:
        out.append(({"hint": "latency", "intra_op_threads": 1}, 1))
    if throughput:
        out += [({"hint": "throughput"}, cpus), ({"hint": "throughput"}, 2 * cpus)]
    else:
        out.append(({"hint": "throughput", "num_streams": 1}, 1))
    return out


def _torch_settings(cpus: int, throughput: bool) -> list[tuple[dict[str, Any], int]]:
    return [({"intra_op_threads": t}, 1) for t in sorted({cpus, 1}, reverse=True)]


_SETTINGS = {"ort-cpu": _ort_settings, "openvino": _openvino_settings, "torch": _torch_settings}


def candidates(
    art: Artifact,
    *,
    objective: str,
    backends: Sequence[str] | None = None,
    batch_sizes: Sequence[int] | None = None,
    device: str | None = None,
) -> list[Candidate]:
    """Every candidate for ``objective`` on this machine (see the module docstring).

    Args:
        art: The artifact.
        objective: ``latency``, ``throughput`` or ``latency-budget``.
        backends: Only these backends (default: all that run here).
        batch_sizes: Batch sizes for the throughput objectives (default :data:`THROUGHPUT_BATCHES`).
        device: ``"cuda"`` to search the GPU backends (default: the GPU when one is visible).
    """
    gpu = bool(nvidia_gpus()) if device is None else device.lower().startswith(("cuda", "gpu"))
    order = GPU_BACKENDS if gpu else CPU_BACKENDS
    names = [b for b in (backends or order) if registry.is_available(b, "cuda" if gpu else None) is None]
    throughput = objective != "latency"
    batches = tuple(batch_sizes or THROUGHPUT_BATCHES) if throughput else (1,)
    first = art.manifest.inputs[0].shape[0] if art.manifest.inputs else None
    if isinstance(first, int):
        batches = (first,)  # a static-batch model runs its own batch only
    cpus = usable_cpus()
    bf16 = bool({"avx512_bf16", "amx_bf16"} & set(cpu_info().flags))
    # OpenVINO fp32 computed in bf16 is not searched for models with a variable-length input: on a 2 vCPU
    # Intel Xeon with AMX, OpenVINO 2026.4's CPU plugin corrupted the heap running all-MiniLM-L6-v2 in bf16
    # ("double free or corruption"), hung under the throughput hint, and gave a tiny BERT all-NaN embeddings
    # in some processes. A search must never take the caller's process down (the backend also runs such
    # models' float parts in f32 unless told otherwise: runtime/backends/openvino.py).
    fixed_length = not variable_length(art.manifest.inputs)
    out: list[Candidate] = []
    for backend in names:
        for v in _variants_for(art, backend, gpu):
            if gpu:
                grid = [({}, 1), ({}, 2)] if throughput else [({}, 1)]
            else:
                grid = _SETTINGS.get(backend, lambda c, t: [({}, 1)])(cpus, throughput)
            computes: list[str | None] = [None]
            if backend == "openvino" and v.precision == "fp32" and bf16 and not gpu and fixed_length:
                computes.append("bf16")
            for compute in computes:
                for settings, callers in grid:
                    s = dict(settings)
                    if compute:
                        s["extra"] = {**s.get("extra", {}), "inference_precision": compute}
                    for b in batches:
                        shapes = [s]
                        if backend == "openvino" and first is not None and not isinstance(first, int):
                            # the dynamic batch compiled as fixed at b: planned once, often faster
                            shapes.append({**s, "extra": {**s.get("extra", {}), "static_batch": b}})
                        for settings_b in shapes:
                            out.append(
                                Candidate(
                                    backend, v.id, v.precision, settings_b, batch_size=b, concurrency=callers,
                                    device="cuda" if gpu and backend == "torch" else None, compute=compute,
                                )
                            )  # fmt: skip
    return list({c.key: c for c in out}.values())
