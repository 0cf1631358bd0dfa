"""``torchvision:NAME``: torchvision architectures built offline, and the class count of their checkpoints.

Nothing here downloads: every builder gets ``weights=None``, and those that take one (segmenters, detectors)
``weights_backbone=None``. Asking for weights is refused with how to load a checkpoint instead.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import Any

from infership.runtime import ConversionError

#: Builder arguments that would make torchvision download weights (``pretrained*`` is its older spelling).
_WEIGHT_ARGS = ("weights", "weights_backbone", "pretrained", "pretrained_backbone")


def build_torchvision(spec: str, name_and_args: str, num_classes: int | None) -> Any:
    """Build ``torchvision:NAME`` (or ``torchvision:NAME?key=value&key=value``) without touching the network.

    Every builder gets ``weights=None``, and those that take one (segmenters, detectors) also
    ``weights_backbone=None``: torchvision would otherwise download an ImageNet backbone for an untrained
    model. Asking for weights (``?weights=DEFAULT``) is refused: they are not available offline.

    Args:
        spec: The whole source string, for messages.
        name_and_args: ``NAME`` or ``NAME?key=value&key=value`` (ints, floats, true/false/none, else text).
        num_classes: Passed as ``num_classes=`` when given.

    Returns:
        The untrained model.

    Raises:
        ConversionError: No such model, malformed arguments, weights asked for, or the builder refuses the
            arguments.
    """
    try:
        import torchvision
    except ImportError as exc:
        raise ConversionError(f"{spec} needs torchvision: pip install 'infership[torch]'") from exc
    name, _, query = name_and_args.partition("?")
    user = _parse_builder_args(spec, query)
    asked = {k: v for k, v in user.items() if k in _WEIGHT_ARGS and v not in (None, False)}
    if asked:
        raise ConversionError(
            f"{spec}: pretrained weights ({', '.join(f'{k}={v}' for k, v in asked.items())}) are not "
            "available offline, and infership never downloads. Build the architecture untrained and load your "
            f"own checkpoint instead: save model.state_dict() (after fine-tuning, or from weights you already "
            f"have) and export the file with --arch torchvision:{name} (API: load_model_source(path, "
            f"arch='torchvision:{name}'))"
        )
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError as exc:
        raise ConversionError(f"{spec}: torchvision has no model named {name!r} ({exc})") from exc
    try:
        takes = set(inspect.signature(builder).parameters)
    except (TypeError, ValueError):  # a builder Python cannot introspect: pass only weights
        takes = {"weights"}
    kwargs: dict[str, Any] = {k: v for k, v in user.items() if k not in _WEIGHT_ARGS}
    kwargs.update({k: None for k in ("weights", "weights_backbone") if k in takes or k == "weights"})
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        return builder(**kwargs)
    except TypeError as exc:
        raise ConversionError(f"{spec}: cannot build with {kwargs}: {exc}") from exc
    except ValueError as exc:
        raise ConversionError(f"{spec}: cannot build with {kwargs}: {exc}") from exc


def _parse_builder_args(spec: str, query: str) -> dict[str, Any]:
    """``"aux_loss=true&num_classes=3"`` → ``{"aux_loss": True, "num_classes": 3}`` (ints, floats,
    true/false/none, else the text)."""
    out: dict[str, Any] = {}
    for part in filter(None, re.split(r"[&,]", query)):
        key, eq, text = part.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise ConversionError(f"{spec}: expected builder arguments as key=value&key=value, got {part!r}")
        out[key] = _parse_value(text.strip())
    return out


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("none", "null", ""):
        return None
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


#: The class-score layers of torchvision's detectors and segmenters (their last weight is not the classes').
_HEAD_KEYS = (
    "roi_heads.box_predictor.cls_score.weight",  # Faster / Mask R-CNN
    "classifier.high_classifier.weight",  # LRASPP
    "classifier.4.weight",  # FCN, DeepLabV3
)


def guess_num_classes(state: Mapping[str, Any]) -> int | None:
    """The number of classes: from a known class-score layer, else the output size of the last 2-D weight
    (the classifier head), if the state_dict ends with one."""
    for key in _HEAD_KEYS:
        if key in state and getattr(state[key], "ndim", 0) in (2, 4):
            return int(state[key].shape[0])
    for key in reversed(list(state)):
        if key.endswith(".weight"):
            w = state[key]
            return int(w.shape[0]) if w.ndim == 2 else None
    return None
