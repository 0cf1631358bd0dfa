"""The artifact manifest: what an artifact holds, how each file was made, and how it validated.

``manifest.json`` is plain JSON with a ``schema_version``. Every model file is listed with its sha256 and
size; loading a variant re-hashes its files, so a stale or tampered file is an error, never loaded silently.

Reading is strict: every field has the type it is documented with, file paths are plain relative paths
(:func:`infership.runtime.integrity.check_relpath`), variant ids are plain names, and names of inputs and
of outputs are unique. Anything else is an :class:`ArtifactError` saying what was expected and what was
found — a hand-edited or hostile manifest never reaches a runtime.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any

from .errors import ArtifactError
from .integrity import check_relpath
from .spec import TensorSpec, specs_from_list, specs_to_list
from .tasks import Task, infer_task

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

PRECISIONS = ("fp32", "fp16", "int8")
FORMATS = ("onnx", "openvino", "torch-export", "torchscript")

#: Variant ids are plain names (they name cache folders and appear in file names).
_VARIANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _want(value: Any, kinds: type | tuple[type, ...], what: str, *, optional: bool = False) -> Any:
    """``value`` if it has one of ``kinds`` (``None`` too when ``optional``), else ArtifactError."""
    if value is None and optional:
        return None
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in _as_tuple(kinds)):
        return value
    names = " or ".join(k.__name__ for k in _as_tuple(kinds)) + (" or null" if optional else "")
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    raise ArtifactError(f"{what}: expected {names}, got {type(value).__name__} {shown}")


def _as_tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _unique(names: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    dup = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if dup:
        raise ArtifactError(f"{what} names must be unique; repeated: {dup}")


@dataclass(frozen=True)
class FileEntry:
    """One file of a variant, relative to the artifact root."""

    path: str
    sha256: str
    size: int

    def __post_init__(self) -> None:
        check_relpath(self.path)
        if not isinstance(self.sha256, str) or not _SHA256.fullmatch(self.sha256):
            raise ArtifactError(
                f"file {self.path}: sha256 must be 64 lower-case hex digits, got {self.sha256!r}"
            )
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ArtifactError(f"file {self.path}: size must be an integer >= 0, got {self.size!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileEntry:
        _want(data, Mapping, "a file entry")
        return cls(path=data["path"], sha256=data["sha256"], size=data["size"])


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
        _want(data, Mapping, "a step")
        seconds = _want(data.get("seconds"), (int, float), "step seconds", optional=True)
        return cls(
            name=_want(data["name"], str, "step name"),
            params=dict(_want(data.get("params"), Mapping, "step params", optional=True) or {}),
            result=dict(_want(data.get("result"), Mapping, "step result", optional=True) or {}),
            seconds=seconds,
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
        if not isinstance(self.id, str) or not _VARIANT_ID.fullmatch(self.id):
            raise ArtifactError(
                f"variant id {self.id!r}: expected a plain name (letters, digits, '.', '_', '+', '-'; up to 128)"
            )
        if self.format not in FORMATS:
            raise ArtifactError(f"variant {self.id!r}: format must be one of {FORMATS}, got {self.format!r}")
        if self.precision not in PRECISIONS:
            raise ArtifactError(
                f"variant {self.id!r}: precision must be one of {PRECISIONS}, got {self.precision!r}"
            )
        if not self.files:
            raise ArtifactError(f"variant {self.id!r} lists no files")
        _unique([f.path for f in self.files], f"variant {self.id!r}: file")
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
        _want(data, Mapping, "a variant")
        vid = data.get("id")
        return cls(
            id=vid,
            format=_want(data["format"], str, f"variant {vid!r} format"),
            precision=_want(data["precision"], str, f"variant {vid!r} precision"),
            target=_want(data.get("target"), str, f"variant {vid!r} target", optional=True),
            files=tuple(FileEntry.from_dict(f) for f in _want(data["files"], list, f"variant {vid!r} files")),
            steps=tuple(
                Step.from_dict(s)
                for s in _want(data.get("steps"), list, f"variant {vid!r} steps", optional=True) or ()
            ),
            validation=_want(data.get("validation"), dict, f"variant {vid!r} validation", optional=True),
            calibration=_want(data.get("calibration"), dict, f"variant {vid!r} calibration", optional=True),
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
        self._check_sizes()
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
        object.__setattr__(self, "mean", self._floats(self.mean, "mean"))
        object.__setattr__(self, "std", self._floats(self.std, "std"))
        if any(s == 0.0 for s in self.std):
            raise ArtifactError(f"preprocessing.std must not contain 0 (it divides), got {list(self.std)}")
        scale = _want(self.scale, numbers.Real, "preprocessing.scale")
        if not math.isfinite(scale) or scale == 0:
            raise ArtifactError(f"preprocessing.scale must be finite and non-zero, got {scale!r}")
        _want(self.invert, bool, "preprocessing.invert")
        _want(self.input, str, "preprocessing.input")

    def _check_sizes(self) -> None:
        def size(v: Any) -> bool:
            return isinstance(v, numbers.Integral) and not isinstance(v, bool) and 1 <= v <= 65536

        r = self.resize
        if r is not None and not (
            size(r) or (isinstance(r, (list, tuple)) and len(r) == 2 and all(size(v) for v in r))
        ):
            raise ArtifactError(
                f"preprocessing.resize must be an int or [height, width] in 1..65536, got {r!r}"
            )
        c = self.crop
        if c is not None and not (isinstance(c, (list, tuple)) and len(c) == 2 and all(size(v) for v in c)):
            raise ArtifactError(f"preprocessing.crop must be [height, width] in 1..65536, got {c!r}")

    @staticmethod
    def _floats(values: Any, what: str) -> tuple[float, ...]:
        if isinstance(values, numbers.Real) and not isinstance(values, bool):
            values = (values,)
        _want(values, (list, tuple), f"preprocessing.{what}")
        if not 1 <= len(values) <= 4:
            raise ArtifactError(f"preprocessing.{what}: expected 1 to 4 values, got {len(values)}")
        out = tuple(float(_want(v, numbers.Real, f"preprocessing.{what}")) for v in values)
        if not all(math.isfinite(v) for v in out):
            raise ArtifactError(f"preprocessing.{what} must be finite, got {list(out)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("resize", "crop", "mean", "std"):
            if isinstance(d[k], tuple):
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        _want(data, Mapping, "preprocessing")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ArtifactError(f"preprocessing: unknown field(s) {sorted(map(str, unknown))}")
        return cls(**dict(data))


#: What may feed a model input from a tokenizer's encoding (``tokenizers.Encoding`` field names).
TOKEN_FIELDS = ("ids", "attention_mask", "type_ids")


@dataclass(frozen=True)
class Tokenizer:
    """How text becomes the model's token inputs, carried like :class:`Preprocessing` is for images: the
    tokenizer files (hash-checked like model files) and the settings used with them at run time
    (:mod:`infership.runtime.text`, with the ``tokenizers`` library).

    Args:
        files: The tokenizer's files; the first is a ``tokenizers`` JSON file (``tokenizer.json``).
        inputs: Model input name → the encoding field that feeds it (one of :data:`TOKEN_FIELDS`).
        max_length: Longest input in tokens, special tokens included.
        truncation: Cut longer texts to ``max_length`` (else they are refused).
        padding_side: ``right`` or ``left``; each batch is padded to its longest input.
        pad_id: Token id used for padding.
        pad_token: Its text.
    """

    files: tuple[FileEntry, ...]
    inputs: dict[str, str]
    max_length: int
    truncation: bool = True
    padding_side: str = "right"
    pad_id: int = 0
    pad_token: str = "[PAD]"

    def __post_init__(self) -> None:
        if not self.files:
            raise ArtifactError("tokenizer lists no files")
        object.__setattr__(self, "files", tuple(self.files))
        _want(self.inputs, Mapping, "tokenizer.inputs")
        bad = {k: v for k, v in self.inputs.items() if not isinstance(k, str) or v not in TOKEN_FIELDS}
        if not self.inputs or bad:
            raise ArtifactError(f"tokenizer.inputs: expected input name → one of {TOKEN_FIELDS}, got {bad}")
        object.__setattr__(self, "inputs", dict(self.inputs))
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise ArtifactError(f"tokenizer.max_length must be an integer >= 1, got {self.max_length!r}")
        _want(self.truncation, bool, "tokenizer.truncation")
        if self.padding_side not in ("right", "left"):
            raise ArtifactError(f"tokenizer.padding_side must be right or left, got {self.padding_side!r}")
        _want(self.pad_id, int, "tokenizer.pad_id")
        _want(self.pad_token, str, "tokenizer.pad_token")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "files": [f.to_dict() for f in self.files]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tokenizer:
        _want(data, Mapping, "tokenizer")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ArtifactError(f"tokenizer: unknown field(s) {sorted(map(str, unknown))}")
        files = tuple(FileEntry.from_dict(f) for f in _want(data["files"], list, "tokenizer.files"))
        return cls(**{**dict(data), "files": files})


def _dim_ranges(dims: Mapping[str, Any], inputs: Sequence[TensorSpec]) -> dict[str, tuple[int, int | None]]:
    """``{symbol: (min, max)}`` checked: every symbol names a dynamic axis of an input; ``max`` may be None."""
    symbols = {d for s in inputs for d in s.shape if isinstance(d, str)}
    out: dict[str, tuple[int, int | None]] = {}
    for sym, rng in _want(dims, Mapping, "dims").items():
        lo, hi = tuple(rng) if isinstance(rng, (list, tuple)) and len(rng) == 2 else (None, None)
        ok = isinstance(lo, int) and not isinstance(lo, bool) and lo >= 0
        ok = ok and (hi is None or (isinstance(hi, int) and not isinstance(hi, bool) and hi >= lo))
        if not ok or sym not in symbols:
            raise ArtifactError(
                f"dims.{sym}: expected [min, max or null] with 0 <= min <= max for a symbolic dimension of "
                f"the inputs ({sorted(symbols)}), got {rng!r}"
            )
        out[sym] = (lo, hi)
    return out


@dataclass(frozen=True)
class Manifest:
    """Everything known about an artifact. Serialized as ``manifest.json``.

    ``task`` decides how outputs are compared, scored and summarised (:mod:`infership.runtime.tasks`); when
    it is not given it is inferred from the outputs and labels, and a manifest written without one (by an
    older infership) gets the inferred task when read. ``tokenizer`` lets the model take text;
    ``dims`` declares the range of symbolic dimensions (``{"sequence": (1, 512)}``; max ``None``: unbounded).
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    variants: tuple[Variant, ...] = ()
    task: Task | None = None
    preprocessing: Preprocessing | None = None
    labels: tuple[str, ...] | None = None
    tokenizer: Tokenizer | None = None
    dims: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "variants", tuple(self.variants))
        _unique([s.name for s in self.inputs], f"manifest {self.name!r}: input")
        _unique([s.name for s in self.outputs], f"manifest {self.name!r}: output")
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))
        if self.task is None:
            task = infer_task(self.outputs, labels=self.labels, images=self.preprocessing is not None)
        else:
            task = Task.parse(self.task)
        object.__setattr__(self, "task", task)
        object.__setattr__(self, "dims", _dim_ranges(self.dims, self.inputs))
        if self.tokenizer is not None and not set(self.tokenizer.inputs) <= {s.name for s in self.inputs}:
            raise ArtifactError(f"tokenizer.inputs {sorted(self.tokenizer.inputs)} are not all model inputs")
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
            **({"tokenizer": self.tokenizer.to_dict()} if self.tokenizer else {}),
            **({"dims": {k: list(v) for k, v in self.dims.items()}} if self.dims else {}),
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
            pre = _want(data.get("preprocessing"), Mapping, "preprocessing", optional=True)
            labels = _want(data.get("labels"), list, "labels", optional=True)
            if labels is not None:
                labels = [_want(x, str, "a label") for x in labels]
            task = _want(data.get("task"), str, "task", optional=True)
            return cls(
                schema_version=version,
                name=_want(data["name"], str, "name"),
                task=Task.parse(task) if task else None,
                created=str(_want(data.get("created", ""), str, "created")),
                inputs=specs_from_list(_want(data["inputs"], list, "inputs")),
                outputs=specs_from_list(_want(data["outputs"], list, "outputs")),
                preprocessing=Preprocessing.from_dict(pre) if pre else None,
                labels=tuple(labels) if labels is not None else None,
                tokenizer=Tokenizer.from_dict(data["tokenizer"]) if data.get("tokenizer") else None,
                dims=dict(_want(data.get("dims"), Mapping, "dims", optional=True) or {}),
                variants=tuple(
                    Variant.from_dict(v)
                    for v in _want(data.get("variants"), list, "variants", optional=True) or ()
                ),
                versions=dict(_want(data.get("versions"), Mapping, "versions", optional=True) or {}),
                environment=_want(data.get("environment"), Mapping, "environment", optional=True),
                extra=dict(_want(data.get("extra"), Mapping, "extra", optional=True) or {}),
            )
        except ArtifactError as exc:
            raise ArtifactError(f"{source}: malformed manifest ({exc})") from exc
        except (KeyError, TypeError, ValueError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
            raise ArtifactError(f"{source}: malformed manifest ({what})") from exc

    @classmethod
    def from_json(cls, text: str, *, source: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, int digit limits, deep nesting
            raise ArtifactError(f"{source}: not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from exc
        return cls.from_dict(data, source=source)
