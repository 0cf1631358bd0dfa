"""The artifact manifest: what an artifact holds, how each file was made, and how it validated.

``manifest.json`` is plain JSON with a ``schema_version``. Every model file is listed with its sha256 and
size; loading a variant re-hashes its files, so a stale or tampered file is an error, never loaded silently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from .errors import ArtifactError
from .spec import TensorSpec, specs_from_list, specs_to_list
from .tasks import Task, infer_task

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

PRECISIONS = ("fp32", "fp16", "int8")
FORMATS = ("onnx", "openvino", "torch-export", "torchscript")


@dataclass(frozen=True)
class FileEntry:
    """One file of a variant, relative to the artifact root."""

    path: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileEntry:
        return cls(path=str(data["path"]), sha256=str(data["sha256"]), size=int(data["size"]))


@dataclass(frozen=True)
class Step:
    """One conversion step that produced (part of) a variant, with its parameters and outcome."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "result": self.result, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        return cls(
            name=str(data["name"]),
            params=dict(data.get("params") or {}),
            result=dict(data.get("result") or {}),
            seconds=data.get("seconds"),
        )


@dataclass(frozen=True)
class Variant:
    """One runnable form of the model.

    Args:
        id: Unique within the artifact, e.g. ``"onnx-fp32"`` or ``"openvino-int8"``.
        format: ``onnx``, ``openvino``, ``torch-export`` or ``torchscript``.
        precision: ``fp32``, ``fp16`` or ``int8``.
        files: The variant's files; the first one is the file a runtime opens.
        steps: How it was produced, in order.
        validation: Figures from comparing it with the fp32 reference (see ``infership.convert``).
        calibration: Provenance of the calibration data for int8 variants.
        target: The backend family it was tuned for (``ort-cpu``, ``ort-trt``, ``openvino``...), if any.
    """

    id: str
    format: str
    precision: str
    files: tuple[FileEntry, ...]
    steps: tuple[Step, ...] = ()
    validation: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    target: str | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ArtifactError(f"variant {self.id!r}: format must be one of {FORMATS}, got {self.format!r}")
        if self.precision not in PRECISIONS:
            raise ArtifactError(
                f"variant {self.id!r}: precision must be one of {PRECISIONS}, got {self.precision!r}"
            )
        if not self.files:
            raise ArtifactError(f"variant {self.id!r} lists no files")
        object.__setattr__(self, "files", tuple(self.files))
        object.__setattr__(self, "steps", tuple(self.steps))

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "format": self.format,
            "precision": self.precision,
            "target": self.target,
            "files": [f.to_dict() for f in self.files],
            "steps": [s.to_dict() for s in self.steps],
            "validation": self.validation,
            "calibration": self.calibration,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Variant:
        return cls(
            id=str(data["id"]),
            format=str(data["format"]),
            precision=str(data["precision"]),
            target=data.get("target"),
            files=tuple(FileEntry.from_dict(f) for f in data["files"]),
            steps=tuple(Step.from_dict(s) for s in data.get("steps") or ()),
            validation=data.get("validation"),
            calibration=data.get("calibration"),
        )


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become the model's input tensor (the same transform used in training).

    Args:
        input: Name of the input the images feed.
        resize: Resize the shorter side to this many pixels (int) or to exactly (height, width).
        crop: Center-crop to (height, width) after resizing.
        mean: Per-channel mean subtracted after scaling.
        std: Per-channel standard deviation divided by after subtracting the mean.
        scale: Multiplier applied to raw pixel values first (``1/255`` maps uint8 to [0, 1]).
        channels: ``"RGB"``, ``"BGR"`` or ``"L"`` (grayscale).
        layout: ``"NCHW"`` or ``"NHWC"``.
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.
        invert: Invert pixel values (255 - v) before scaling, e.g. for dark-on-light digit scans.
    """

    input: str
    resize: int | tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0 / 255.0
    channels: str = "RGB"
    layout: str = "NCHW"
    interpolation: str = "bilinear"
    invert: bool = False

    def __post_init__(self) -> None:
        if self.channels not in ("RGB", "BGR", "L"):
            raise ArtifactError(f"preprocessing.channels must be RGB, BGR or L, got {self.channels!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ArtifactError(f"preprocessing.layout must be NCHW or NHWC, got {self.layout!r}")
        if self.interpolation not in ("bilinear", "bicubic", "nearest"):
            raise ArtifactError(f"preprocessing.interpolation unknown: {self.interpolation!r}")
        if isinstance(self.resize, list):
            object.__setattr__(self, "resize", tuple(self.resize))
        if self.crop is not None:
            object.__setattr__(self, "crop", tuple(self.crop))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("resize", "crop", "mean", "std"):
            if isinstance(d[k], tuple):
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        return cls(**dict(data))


@dataclass(frozen=True)
class Manifest:
    """Everything known about an artifact. Serialized as ``manifest.json``.

    ``task`` decides how outputs are compared, scored and summarised (:mod:`infership.runtime.tasks`); when
    it is not given it is inferred from the outputs and labels, and a manifest written without one (by an
    older infership) gets the inferred task when read.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    variants: tuple[Variant, ...] = ()
    task: Task | None = None
    preprocessing: Preprocessing | None = None
    labels: tuple[str, ...] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "variants", tuple(self.variants))
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))
        if self.task is None:
            task = infer_task(self.outputs, labels=self.labels, images=self.preprocessing is not None)
        else:
            task = Task.parse(self.task)
        object.__setattr__(self, "task", task)
        ids = [v.id for v in self.variants]
        if len(ids) != len(set(ids)):
            raise ArtifactError(f"manifest {self.name!r}: duplicate variant ids in {ids}")

    def variant(self, variant_id: str) -> Variant:
        for v in self.variants:
            if v.id == variant_id:
                return v
        raise ArtifactError(f"no variant {variant_id!r}; the artifact has {[v.id for v in self.variants]}")

    def find(self, *, formats: Sequence[str], precision: str) -> Variant | None:
        """The first variant in one of ``formats`` (in order of preference) with ``precision``."""
        for fmt in formats:
            for v in self.variants:
                if v.format == fmt and v.precision == precision:
                    return v
        return None

    def with_variant(self, variant: Variant) -> Manifest:
        """A copy with ``variant`` added, replacing any variant of the same id."""
        kept = tuple(v for v in self.variants if v.id != variant.id)
        return replace(self, variants=(*kept, variant))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "created": self.created,
            "task": self.task.value,  # type: ignore[union-attr]
            "inputs": specs_to_list(self.inputs),
            "outputs": specs_to_list(self.outputs),
            "preprocessing": self.preprocessing.to_dict() if self.preprocessing else None,
            "labels": list(self.labels) if self.labels is not None else None,
            "variants": [v.to_dict() for v in self.variants],
            "versions": self.versions,
            "environment": self.environment,
            "extra": self.extra,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "manifest") -> Manifest:
        if not isinstance(data, Mapping):
            raise ArtifactError(f"{source}: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ArtifactError(
                f"{source}: schema_version {version!r} is not supported (this infership reads "
                f"{SCHEMA_VERSION}); rebuild the artifact or upgrade infership"
            )
        try:
            pre = data.get("preprocessing")
            return cls(
                schema_version=version,
                name=str(data["name"]),
                task=Task.parse(data["task"]) if data.get("task") else None,
                created=str(data.get("created", "")),
                inputs=specs_from_list(data["inputs"]),
                outputs=specs_from_list(data["outputs"]),
                preprocessing=Preprocessing.from_dict(pre) if pre else None,
                labels=tuple(data["labels"]) if data.get("labels") is not None else None,
                variants=tuple(Variant.from_dict(v) for v in data.get("variants") or ()),
                versions=dict(data.get("versions") or {}),
                environment=data.get("environment"),
                extra=dict(data.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ArtifactError):
                raise
            raise ArtifactError(f"{source}: malformed manifest ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def from_json(cls, text: str, *, source: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{source}: not valid JSON ({exc})") from exc
        return cls.from_dict(data, source=source)
