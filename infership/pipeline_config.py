"""The main job's configuration: build it in code, from flags, or from a TOML file."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from infership.runtime.errors import InvalidInputError


@dataclass(frozen=True)
class PipelineConfig:
    """Everything the pipeline needs; build one in code, from flags, or from a TOML file.

    Args:
        model: Any source ``infership export`` accepts (checkpoint, ``.pt2``, TorchScript,
            ``torchvision:NAME``, ``module:factory``, ``file.py:factory``).
        output: Output directory (see the module docstring for its layout).
        arch: Architecture for a state_dict checkpoint.
        num_classes: Classes, for torchvision architectures and factories.
        input_shape: Example input shape (batch first), e.g. ``(1, 3, 224, 224)``.
        preprocessing: A preprocessing preset name (``imagenet``, ``digits``...) attached to the artifact.
        task: What the model does (``classification``, ``tensor``): how every step judges its outputs;
            ``None``: inferred at export where obvious (see :func:`infership.runtime.infer_task`).
        labels: Class names file, or the names themselves.
        calibration: Calibration source (a ``.npy``/``.npz`` file, an image folder, ``file.py:function``,
            or a registered ``scheme:...``); ``None``: no int8 variants are made (the pipeline says so).
        holdout: Labelled held-out data for accuracy, in the same forms; ``None``: 20 % split off the
            calibration data (and with neither, accuracy is not measured — the pipeline says so). Its first
            batches are also what the build step checks each variant against torch on, besides random inputs.
        calibration_samples: Calibration samples drawn.
        method: Calibration method (``minmax``, ``entropy``, ``percentile``).
        int8_targets: Where to make int8 variants (``ort``, ``openvino``, ``torch``).
        max_accuracy_drop: Allowed int8 accuracy drop in points; repaired towards, then enforced.
        backends: Backends to evaluate and benchmark; unavailable ones are reported, not hidden.
        precisions: Precisions to evaluate and benchmark (a missing combination is reported).
        batch_sizes: Benchmark batch sizes.
        scenarios: Benchmark scenarios (``single-stream``, ``offline``, ``server``, ``multi-stream``).
        duration_s: Seconds measured per benchmark run.
        fp16: Make the fp16 ONNX variant (for GPUs).
        openvino: Make OpenVINO IR variants.
    """

    model: str
    output: Path
    arch: str | None = None
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    preprocessing: str | None = None
    task: str | None = None
    labels: tuple[str, ...] | str | None = None
    calibration: str | None = None
    holdout: str | None = None
    calibration_samples: int = 256
    method: str = "minmax"
    int8_targets: tuple[str, ...] = ("ort", "openvino")
    max_accuracy_drop: float | None = 0.5
    backends: tuple[str, ...] = ("torch", "ort-cpu", "openvino", "ort-cuda", "ort-trt")
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    batch_sizes: tuple[int, ...] = (1, 16)
    scenarios: tuple[str, ...] = ("single-stream", "offline")
    duration_s: float = 3.0
    fp16: bool = True
    openvino: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", Path(self.output))
        for name in ("int8_targets", "backends", "precisions", "batch_sizes", "scenarios", "input_shape"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = tuple(v.strip() for v in value.split(",") if v.strip())
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.labels, list):
            object.__setattr__(self, "labels", tuple(self.labels))
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", _positive_ints(self.input_shape, "input_shape"))
        object.__setattr__(self, "batch_sizes", _positive_ints(self.batch_sizes, "batch_sizes"))
        if self.duration_s <= 0:
            raise InvalidInputError(f"duration_s must be > 0, got {self.duration_s}")
        if self.task is not None:
            from infership.runtime.tasks import Task

            Task.parse(self.task)  # refuse a typo before any work
        if self.calibration_samples < 1:
            raise InvalidInputError(f"calibration_samples must be >= 1, got {self.calibration_samples}")

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], **overrides: Any) -> PipelineConfig:
        """Read ``[pipeline]`` from a TOML file (relative paths are relative to the file); ``overrides``
        (e.g. from command-line flags) win over the file.

        Raises:
            InvalidInputError: The file is missing, not TOML, or has unknown keys.
        """
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InvalidInputError(f"cannot read pipeline config {p}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInputError(f"{p} is not valid TOML: {exc}") from exc
        table = data.get("pipeline", data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise InvalidInputError(f"{p}: unknown key(s) {unknown} in [pipeline]; known: {sorted(known)}")
        values = dict(table)
        base = p.resolve().parent
        for key in ("model", "arch", "output", "calibration", "holdout", "labels"):
            v = values.get(key)
            # ``output`` is always a path; the others when they look like one or name something next to
            # the file (``torchvision:NAME``, ``module:function`` and registered ``scheme:...`` are not paths).
            if isinstance(v, str) and (key == "output" or _looks_like_path(v) or (base / v).exists()):
                values[key] = _rebase(v, base)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "model" not in values or "output" not in values:
            raise InvalidInputError(f"{p}: 'model' and 'output' are required (in the file or as flags)")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output"] = str(self.output)
        return d


#: Suffixes of the files a pipeline reads: a bare ``m.pt`` is a path even before it exists.
_FILE_SUFFIXES = (".py", ".pt", ".pth", ".pt2", ".ckpt", ".onnx", ".npy", ".npz", ".txt", ".json", ".ts")


def _looks_like_path(v: str) -> bool:
    head = v.split(":", 1)[0]
    return head.lower().endswith(_FILE_SUFFIXES) or v.startswith(("./", "../")) or "/" in head


def _rebase(v: str, base: Path) -> str:
    """Make a path (or the ``file.py`` part of ``file.py:attr``) relative to ``base`` absolute."""
    from infership.calibration import split_callable

    parts = split_callable(v)
    if parts is not None and parts[0].lower().endswith(".py"):
        path, sep, rest = parts[0], ":", parts[1]
    else:
        path, sep, rest = v, "", ""
    if not Path(path).is_absolute():
        path = str((base / path).resolve())
    return path + sep + rest


def _positive_ints(values: Any, what: str) -> tuple[int, ...]:
    """``values`` as whole numbers ≥ 1, or a clear error naming the setting and the value given."""
    out = []
    for v in values:
        try:
            n = int(v)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{what}: expected whole numbers >= 1, got {v!r} in {values!r}") from None
        if n < 1 or (isinstance(v, float) and v != n):
            raise InvalidInputError(f"{what}: expected whole numbers >= 1, got {v!r} in {values!r}")
        out.append(n)
    return tuple(out)
