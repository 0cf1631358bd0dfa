"""A Triton Inference Server model repository from an artifact.

Each ONNX or OpenVINO variant becomes one Triton model in the documented layout::

    DIR/NAME_onnx-int8/config.pbtxt
    DIR/NAME_onnx-int8/1/model.onnx            (ONNX Runtime backend; external-data files beside it)
    DIR/NAME_openvino-fp32/config.pbtxt
    DIR/NAME_openvino-fp32/1/model.xml, model.bin   (native OpenVINO backend)

``config.pbtxt`` takes its dims and data types from the manifest (the batch axis becomes
``max_batch_size`` when every input and output has a dynamic one; other dynamic axes are ``-1``), and sets
dynamic batching, an instance group, model warm-up, thread counts where given and — on the GPU — the
TensorRT accelerator of the ONNX Runtime backend with the precision of the variant. Variants Triton
cannot serve here are skipped with the reason (:attr:`TritonRepository.skipped`): PyTorch programs
(Triton's PyTorch backend takes TorchScript with its own input naming), OpenVINO on the GPU, OpenVINO
with dynamic non-batch axes (its backend takes a dynamic batch only).

No Triton server is needed to write a repository; docs/serving.md gives the commands to run one.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infership.runtime.artifact import Artifact
from infership.runtime.atomic import make_temp, remove_stale_temporaries, replace_dir
from infership.runtime.errors import ArtifactError, InvalidInputError
from infership.runtime.manifest import Manifest, Variant
from infership.runtime.spec import TensorSpec
from infership.runtime.statistics import REFERENCE_KEY

__all__ = ["TritonModel", "TritonRepository", "model_config", "write_triton_repository"]

log = logging.getLogger(__name__)

#: numpy dtype name → Triton data type.
DATA_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}
#: Variant precision → the ONNX Runtime backend's TensorRT ``precision_mode``.
TRT_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}
TRT_WORKSPACE_BYTES = 1 << 30
#: Variant format → Triton backend.
BACKENDS = {"onnx": "onnxruntime", "openvino": "openvino"}


@dataclass(frozen=True)
class TritonModel:
    """One model written: its Triton name, the variant it serves, Triton's backend and its directory."""

    name: str
    variant: str
    backend: str
    path: Path


@dataclass(frozen=True)
class TritonRepository:
    """What :func:`write_triton_repository` wrote, and which variants it skipped and why."""

    root: Path
    models: tuple[TritonModel, ...]
    skipped: tuple[tuple[str, str], ...]


def _batchable(manifest: Manifest) -> bool:
    return all(s.rank >= 1 and not isinstance(s.shape[0], int) for s in (*manifest.inputs, *manifest.outputs))


def _dims(spec: TensorSpec, batching: bool) -> list[int]:
    shape = spec.shape[1:] if batching else spec.shape
    return [d if isinstance(d, int) else -1 for d in shape]


def _data_type(spec: TensorSpec) -> str:
    try:
        return DATA_TYPES[spec.dtype]
    except KeyError as exc:
        raise InvalidInputError(f"tensor {spec.name!r}: dtype {spec.dtype} has no Triton data type") from exc


def _tensor(spec: TensorSpec, batching: bool) -> str:
    dims = ", ".join(str(d) for d in _dims(spec, batching)) or ""
    return f'  {{\n    name: "{spec.name}"\n    data_type: {_data_type(spec)}\n    dims: [ {dims} ]\n  }}'


def _param(key: str, value: Any) -> str:
    return f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}'


def _warmup_dims(spec: TensorSpec, batching: bool, manifest: Manifest) -> list[int] | None:
    """Concrete dims for a warm-up sample: dynamic ones from the reference statistics, else ``None``."""
    dims = _dims(spec, batching)
    if -1 not in dims:
        return dims
    ref = ((manifest.extra.get(REFERENCE_KEY) or {}).get("inputs") or {}).get(spec.name) or {}
    shape = list(ref.get("shape") or [])
    body = dims if batching else dims[1:]
    if len(shape) != len(body):
        return None
    filled = [s if d == -1 else d for d, s in zip(body, shape, strict=True)]
    return filled if batching else [1 if dims[0] == -1 else dims[0], *filled]


def _warmup(manifest: Manifest, batching: bool, max_batch_size: int) -> str | None:
    dims = {s.name: _warmup_dims(s, batching, manifest) for s in manifest.inputs}
    if any(d is None for d in dims.values()):
        return None
    entries = []
    for batch in sorted({1, max_batch_size} if batching else {1}):
        inputs = []
        for spec in manifest.inputs:
            # Random data for floats; zeros for integers (random token ids could leave the vocabulary).
            data = "random_data: true" if spec.dtype.startswith("float") else "zero_data: true"
            d = ", ".join(str(x) for x in dims[spec.name])  # type: ignore[union-attr]
            inputs.append(
                f'    inputs {{\n      key: "{spec.name}"\n      value: {{\n        data_type: {_data_type(spec)}\n'
                f"        dims: [ {d} ]\n        {data}\n      }}\n    }}"
            )
        entries.append(
            f'  {{\n    name: "batch_{batch}"\n    batch_size: {batch}\n' + "\n".join(inputs) + "\n  }"
        )
    return "model_warmup [\n" + ",\n".join(entries) + "\n]"


def _check_options(*, device: str = "cpu", max_batch_size: int = 8, instances: int = 1, **_: Any) -> None:
    if device not in ("cpu", "gpu"):
        raise InvalidInputError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if max_batch_size < 1 or instances < 1:
        raise InvalidInputError("max_batch_size and instances must be >= 1")


def model_config(
    manifest: Manifest,
    variant: Variant,
    *,
    name: str,
    device: str = "cpu",
    max_batch_size: int = 8,
    instances: int = 1,
    dynamic_batching: bool = True,
    max_queue_delay_us: int = 100,
    preferred_batch_sizes: Sequence[int] | None = None,
    threads: int | None = None,
    warmup: bool = True,
) -> str:
    """The ``config.pbtxt`` text for one variant.

    Args:
        manifest: The artifact's manifest (dims, data types, reference statistics for warm-up shapes).
        variant: An ``onnx`` or ``openvino`` variant.
        name: The Triton model name (its directory name).
        device: ``"cpu"`` or ``"gpu"``.
        max_batch_size: Largest batch Triton forms (ignored for a model without a dynamic batch axis,
            which gets ``max_batch_size: 0`` and full dims).
        instances: Model instances in the instance group.
        dynamic_batching: Let Triton gather requests into batches.
        max_queue_delay_us: Longest a request waits for a batch to fill.
        preferred_batch_sizes: Batch sizes Triton aims for (default: ``max_batch_size``).
        threads: Threads per instance (ONNX Runtime intra-op threads; OpenVINO ``INFERENCE_NUM_THREADS``);
            ``None``: the backend's default.
        warmup: Add ``model_warmup`` samples (skipped, with a log line, when a dynamic non-batch axis has
            no recorded size).

    Returns:
        The configuration in protobuf text format.

    Raises:
        InvalidInputError: A variant format or device Triton cannot serve this way, or a bad option.
    """
    _check_options(device=device, max_batch_size=max_batch_size, instances=instances)
    batching = _batchable(manifest)
    mbs = max_batch_size if batching else 0
    if variant.format == "onnx":
        backend = "onnxruntime"
    elif variant.format == "openvino":
        backend = "openvino"
        if device == "gpu":
            raise InvalidInputError(
                "Triton's OpenVINO backend runs on the CPU; serve an ONNX variant on the GPU"
            )
        if any(-1 in _dims(s, batching) for s in (*manifest.inputs, *manifest.outputs)):
            raise InvalidInputError(
                "Triton's OpenVINO backend takes a dynamic batch only, and this model has other dynamic axes "
                "(pad to fixed lengths and export with static ones, or serve the ONNX variant)"
            )
    else:
        raise InvalidInputError(
            f"variant {variant.id!r} is {variant.format}: Triton's PyTorch backend takes TorchScript with "
            "INPUT__0-style names; serve the ONNX or OpenVINO variant"
        )
    parts = [
        f'name: "{name}"',
        f'backend: "{backend}"',
        f"max_batch_size: {mbs}",
        "input [\n" + ",\n".join(_tensor(s, batching) for s in manifest.inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor(s, batching) for s in manifest.outputs) + "\n]",
    ]
    if batching and dynamic_batching:
        preferred = sorted(
            {int(b) for b in (preferred_batch_sizes or (max_batch_size,)) if 0 < int(b) <= mbs}
        )
        pref = f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n" if preferred else ""
        parts.append(
            f"dynamic_batching {{\n{pref}  max_queue_delay_microseconds: {int(max_queue_delay_us)}\n}}"
        )
    kind = "KIND_GPU" if device == "gpu" else "KIND_CPU"
    parts.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]")
    if device == "gpu":
        trt = [
            ("precision_mode", TRT_PRECISION[variant.precision]),
            ("max_workspace_size_bytes", TRT_WORKSPACE_BYTES),
            ("trt_engine_cache_enable", 1),
        ]
        params = "\n".join(f'        parameters {{ key: "{k}" value: "{v}" }}' for k, v in trt)
        parts.append(
            "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [\n      {\n"
            f'        name: "tensorrt"\n{params}\n      }}\n    ]\n  }}\n}}'
        )
    if threads is not None:
        if backend == "onnxruntime":
            parts += [_param("intra_op_thread_count", threads), _param("inter_op_thread_count", 1)]
        else:
            parts += [_param("INFERENCE_NUM_THREADS", threads), _param("NUM_STREAMS", instances)]
    if warmup:
        block = _warmup(manifest, batching, mbs or 1)
        if block is None:
            log.info("%s: no model_warmup (a dynamic axis has no recorded size)", name)
        else:
            parts.append(block)
    return "\n".join(parts) + "\n"


def _model_name(base: str, variant: Variant) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{base}_{variant.id}")


def _copy_files(artifact: Artifact, variant: Variant, version_dir: Path) -> None:
    version_dir.mkdir(parents=True)
    main = artifact.path_of(variant.files[0])
    if variant.format == "openvino":
        shutil.copy2(main, version_dir / "model.xml")
        shutil.copy2(main.with_suffix(".bin"), version_dir / "model.bin")
        return
    shutil.copy2(main, version_dir / "model.onnx")
    for entry in variant.files[1:]:
        # External-data files are referenced relative to the model file: keep that relation.
        src = artifact.path_of(entry)
        dst = version_dir / os.path.relpath(src, main.parent)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def write_triton_repository(
    artifact: str | os.PathLike[str] | Artifact,
    out: str | os.PathLike[str],
    *,
    variants: Sequence[str] | None = None,
    name: str | None = None,
    overwrite: bool = False,
    **config: Any,
) -> TritonRepository:
    """Write a Triton model repository (or add models to one) for an artifact's variants.

    Args:
        artifact: The artifact (directory or loaded).
        out: The repository directory (created if missing; other models in it are left alone).
        variants: Variant ids to write (default: every ONNX and OpenVINO variant that Triton can serve
            on the chosen device; the others are listed in ``skipped``).
        name: The model name when one variant is written (default ``ARTIFACT_VARIANT`` per variant).
        overwrite: Replace model directories that exist already.
        **config: Options of :func:`model_config` (``device``, ``max_batch_size``, ``instances``,
            ``dynamic_batching``, ``max_queue_delay_us``, ``preferred_batch_sizes``, ``threads``, ``warmup``).

    Returns:
        The models written and the variants skipped, with reasons.

    Raises:
        ArtifactError: No variant could be written, an unknown variant id, or a model file fails its hash.
        InvalidInputError: A bad option, an explicitly named variant Triton cannot serve, or a model directory
            exists and ``overwrite`` is false.
    """
    _check_options(**config)
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    m = art.manifest
    chosen = [m.variant(v) for v in variants] if variants else list(m.variants)
    if name is not None and len(chosen) != 1:
        raise InvalidInputError(
            f"name= needs exactly one variant; {len(chosen)} selected (pass variants=[...])"
        )
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    written: list[TritonModel] = []
    skipped: list[tuple[str, str]] = []
    for variant in chosen:
        model = name or _model_name(m.name, variant)
        try:
            text = model_config(m, variant, name=model, **config)
        except InvalidInputError as exc:
            if variants:
                raise
            skipped.append((variant.id, str(exc)))
            continue
        target = root / model
        if target.exists() and not overwrite:
            raise InvalidInputError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")
        art.verify(variant)
        remove_stale_temporaries(root, model)  # what a killed writer of this model left
        stage = make_temp(root, model, folder=True)
        try:
            _copy_files(art, variant, stage / "1")
            (stage / "config.pbtxt").write_text(text, encoding="utf-8")
            os.chmod(stage, 0o755)
            replace_dir(stage, target)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        written.append(TritonModel(model, variant.id, BACKENDS[variant.format], target))
        log.info("wrote Triton model %s (%s) to %s", model, variant.id, target)
    if not written:
        reasons = "; ".join(f"{v}: {why}" for v, why in skipped) or "the artifact has no variants"
        raise ArtifactError(f"no variant of {m.name!r} can be served by Triton this way: {reasons}")
    return TritonRepository(root, tuple(written), tuple(skipped))
