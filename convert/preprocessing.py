"""Attach the training preprocessing and class names to an artifact.

With them recorded, ``Predictor.predict`` also takes raw images (paths, PIL images, HWC uint8 arrays) and
applies exactly this transform (``infership.runtime.preprocess``).

Presets (``make_preprocessing("imagenet", ...)``):

- ``imagenet``: resize the short side to ``crop / 0.875`` (256 for 224), center-crop, scale to [0, 1],
  normalize with the ImageNet mean/std — torchvision's classification transform.
- ``unit``: resize to the input size, scale to [0, 1].
- ``centered``: resize to the input size, scale to [-1, 1] (mean 0.5, std 0.5; Inception/ViT style).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from infership.runtime import ConversionError, Preprocessing, TensorSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRESETS = ("imagenet", "unit", "centered")


@dataclass(frozen=True)
class PreprocessingRequest:
    """Preprocessing asked for before the model's input spec is known (a preset and/or explicit fields).

    ``build_artifact`` resolves it against the exported model's image input with :func:`make_preprocessing`.

    Args:
        preset: ``"imagenet"``, ``"unit"``, ``"centered"`` or None.
        input: The image input's name; default: the model's only rank-4 input.
        resize, crop, mean, std, scale, channels, layout, interpolation, invert: Override the preset;
            see :class:`~infership.runtime.Preprocessing`.
    """

    preset: str | None = None
    input: str | None = None
    resize: int | tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: float | None = None
    channels: str | None = None
    layout: str | None = None
    interpolation: str | None = None
    invert: bool | None = None

    def resolve(self, inputs: Sequence[TensorSpec]) -> Preprocessing:
        """The :class:`Preprocessing` for the model whose inputs are ``inputs``.

        Raises:
            ConversionError: No (or no unique) image input, or the fields do not fit it.
        """
        if self.input is not None:
            spec = next((s for s in inputs if s.name == self.input), None)
            if spec is None:
                raise ConversionError(
                    f"preprocessing names input {self.input!r}; the inputs are {[s.name for s in inputs]}"
                )
        else:
            images = [s for s in inputs if s.rank == 4]
            if len(images) != 1:
                raise ConversionError(
                    f"preprocessing needs exactly one rank-4 image input (or input=...); inputs: {[s.name for s in inputs]}"
                )
            spec = images[0]
        return make_preprocessing(
            self.preset,
            spec,
            resize=self.resize,
            crop=self.crop,
            mean=self.mean,
            std=self.std,
            scale=self.scale,
            channels=self.channels,
            layout=self.layout,
            interpolation=self.interpolation,
            invert=self.invert,
        )


def make_preprocessing(
    preset: str | None,
    spec: TensorSpec,
    *,
    resize: int | tuple[int, int] | None = None,
    crop: tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    scale: float | None = None,
    channels: str | None = None,
    layout: str | None = None,
    interpolation: str | None = None,
    invert: bool | None = None,
) -> Preprocessing:
    """A :class:`Preprocessing` for input ``spec`` from a preset and/or explicit fields.

    Explicit fields override the preset's. Without a preset, unspecified fields keep
    :class:`Preprocessing`'s defaults (scale 1/255, RGB, NCHW, bilinear, no mean/std).

    Args:
        preset: ``"imagenet"``, ``"unit"``, ``"centered"`` or None.
        spec: The image input (rank 4, NCHW or NHWC). Its fixed spatial size sets the preset's crop.
        resize, crop, mean, std, scale, channels, layout, interpolation, invert: See :class:`Preprocessing`.

    Returns:
        The preprocessing, checked against ``spec`` (see :func:`check_preprocessing`).

    Raises:
        ConversionError: Unknown preset, or the preprocessing cannot produce ``spec``'s shape.
    """
    if preset is not None and preset not in PRESETS:
        raise ConversionError(
            f"unknown preprocessing preset {preset!r}; expected one of {', '.join(PRESETS)}"
        )
    lay = layout or "NCHW"
    hw = _spatial(spec, lay)
    fields: dict[str, object] = {"input": spec.name, "layout": lay}
    if preset == "imagenet":
        if hw is not None:
            fields["crop"] = hw
            fields["resize"] = round(min(hw) / 0.875)
        fields.update(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    elif preset in ("unit", "centered"):
        if hw is not None:
            fields["resize"] = hw
        if preset == "centered":
            fields.update(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    explicit = {
        "resize": resize,
        "crop": crop,
        "mean": tuple(mean) if mean is not None else None,
        "std": tuple(std) if std is not None else None,
        "scale": scale,
        "channels": channels,
        "interpolation": interpolation,
        "invert": invert,
    }
    fields.update({k: v for k, v in explicit.items() if v is not None})
    try:
        pre = Preprocessing(**fields)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise ConversionError(f"invalid preprocessing: {exc}") from exc
    check_preprocessing(pre, spec)
    return pre


def check_preprocessing(pre: Preprocessing, spec: TensorSpec) -> None:
    """Check that ``pre`` produces tensors of ``spec``'s shape (channels, fixed height/width).

    Raises:
        ConversionError: It names a different input, or channels/size/mean/std do not fit.
    """
    if pre.input != spec.name:
        raise ConversionError(
            f"preprocessing is for input {pre.input!r}, the model's image input is {spec.name!r}"
        )
    if spec.rank != 4:
        raise ConversionError(
            f"preprocessing needs a rank-4 image input; {spec.name!r} has shape {spec.shape_str()}"
        )
    c_axis = 1 if pre.layout == "NCHW" else 3
    want_c = 1 if pre.channels == "L" else 3
    c = spec.shape[c_axis]
    if isinstance(c, int) and c != want_c:
        raise ConversionError(
            f"preprocessing gives {want_c} channel(s) ({pre.channels}, {pre.layout}) but input {spec.name!r} has "
            f"{c} on axis {c_axis} (shape {spec.shape_str()})"
        )
    for name in ("mean", "std"):
        n = len(getattr(pre, name))
        if n not in (1, want_c):
            raise ConversionError(f"preprocessing {name} has {n} values; expected 1 or {want_c}")
    if any(s == 0 for s in pre.std):
        raise ConversionError("preprocessing std contains 0")
    hw = _spatial(spec, pre.layout)
    if hw is None:
        return
    final = pre.crop if pre.crop is not None else (pre.resize if isinstance(pre.resize, tuple) else None)
    if final is None:
        raise ConversionError(
            f"input {spec.name!r} is fixed at {hw[0]}x{hw[1]}: give crop={hw} or resize={hw} so every image "
            "ends up that size"
        )
    if tuple(final) != hw:
        raise ConversionError(
            f"preprocessing produces {final[0]}x{final[1]} images, input {spec.name!r} needs {hw[0]}x{hw[1]}"
        )


def read_labels(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Class names from a file: a JSON list, a JSON object index → name, or one name per line.

    Raises:
        ConversionError: The file is missing, empty, or a JSON object with non-contiguous indices.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConversionError(f"cannot read labels file {p}: {exc}") from exc
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConversionError(f"{p}: not valid JSON ({exc})") from exc
        if isinstance(data, dict):
            try:
                items = sorted((int(k), str(v)) for k, v in data.items())
            except ValueError as exc:
                raise ConversionError(
                    f"{p}: expected keys that are class indices, got {list(data)[:5]}"
                ) from exc
            if [i for i, _ in items] != list(range(len(items))):
                raise ConversionError(f"{p}: class indices must be 0..{len(items) - 1} without gaps")
            labels = tuple(v for _, v in items)
        elif isinstance(data, list):
            labels = tuple(str(v) for v in data)
        else:
            raise ConversionError(f"{p}: expected a JSON list or object, got {type(data).__name__}")
    else:
        labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not labels:
        raise ConversionError(f"labels file {p} holds no labels")
    return labels


def check_labels(labels: Sequence[str], outputs: Sequence[TensorSpec]) -> None:
    """Check that the number of labels matches the classes of the first output, when it has a fixed count:
    axis 1 of ``[batch, classes]`` scores, or channel 1 of ``[batch, classes, H, W]`` per-pixel scores (a
    segmenter).

    Raises:
        ConversionError: The counts differ.
    """
    first = outputs[0]
    if first.rank in (2, 4) and isinstance(first.shape[1], int) and first.shape[1] != len(labels):
        raise ConversionError(
            f"{len(labels)} labels given but output {first.name!r} has {first.shape[1]} classes (shape {first.shape_str()})"
        )


def _spatial(spec: TensorSpec, layout: str) -> tuple[int, int] | None:
    if spec.rank != 4:
        return None
    h, w = (spec.shape[2], spec.shape[3]) if layout == "NCHW" else (spec.shape[1], spec.shape[2])
    if isinstance(h, int) and isinstance(w, int):
        return (h, w)
    return None
