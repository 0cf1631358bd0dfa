"""Exporting object detectors: torchvision's ``list[dict]`` outputs become four flat, named outputs.

A torchvision detector (Faster R-CNN, RetinaNet, FCOS, SSD / SSDlite, Mask R-CNN's boxes) takes a list of
images and returns one ``{"boxes", "scores", "labels"}`` mapping per image, each with its own number of
detections. ONNX graphs and every runtime want tensors, so :class:`DetectorExport` wraps the model: it
takes one batch tensor ``[1, 3, H, W]`` (floats in [0, 1]: the detector normalises and resizes inside,
with its own ``GeneralizedRCNNTransform``) and returns, in this order (see
:data:`infership.runtime.detection.OUTPUTS`):

- ``boxes`` ``[detections, 4]`` float32, ``x1, y1, x2, y2`` in the input's pixels;
- ``scores`` ``[detections]`` float32;
- ``labels`` ``[detections]`` int64 class indices;
- ``batch_index`` ``[detections]`` int64, the image of the batch each detection belongs to.

``detections`` is a symbolic dimension in the manifest (it depends on the image). The batch is fixed at
one image: the detector's internals (per-image NMS and top-k) are traced for a fixed number of images.
``Predictor.detect`` runs a list of images one at a time.

Detectors export with the TorchScript-based ONNX exporter (opset 17): ``torch.export`` cannot capture
their data-dependent post-processing (NMS, score filtering), so ``build_artifact`` tries that exporter
first and keeps the PyTorch program as TorchScript.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from infership.runtime import InvalidInputError
from infership.runtime.detection import DETECTIONS_DIM, OUTPUTS

from .export import Exporter
from .source import ModelSource

log = logging.getLogger(__name__)

#: The exporters tried for detectors, in order.
EXPORT_ORDER = (Exporter.TORCHSCRIPT, Exporter.DYNAMO)
#: The opset detectors are exported at by default.
OPSET = 17

# torchvision's detector classes, by module and name (imported only when torchvision is there).
_DETECTOR_CLASSES = (
    ("torchvision.models.detection.generalized_rcnn", "GeneralizedRCNN"),
    ("torchvision.models.detection.retinanet", "RetinaNet"),
    ("torchvision.models.detection.fcos", "FCOS"),
    ("torchvision.models.detection.ssd", "SSD"),
)


def is_detector(model: Any) -> bool:
    """Whether ``model`` is a torchvision detector (or already wrapped for export).

    Args:
        model: A module.

    Returns:
        True for torchvision's detection models and :class:`DetectorExport`.
    """
    if isinstance(model, DetectorExport):
        return True
    import importlib
    import sys

    if "torchvision" not in sys.modules:
        return False  # a model that is a torchvision detector has imported it already
    for module, name in _DETECTOR_CLASSES:
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):  # an older torchvision without this family
            continue
        if isinstance(model, cls):
            return True
    return False


def returns_detections(result: Any) -> bool:
    """Whether a model's return value is a detector's: a list of mappings with ``boxes`` and ``scores``."""
    return (
        isinstance(result, (list, tuple))
        and len(result) > 0
        and all(isinstance(r, dict) and "boxes" in r and "scores" in r for r in result)
    )


def _module_base() -> type:
    import torch

    return torch.nn.Module


class DetectorExport(_module_base()):  # type: ignore[misc]
    """A torchvision-style detector as a module with tensor outputs (see the module docstring).

    Args:
        detector: The detector, in eval mode; called with a list of ``[3, H, W]`` images.
    """

    def __init__(self, detector: Any) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: Any) -> tuple[Any, Any, Any, Any]:
        import torch

        if torch.jit.is_tracing():
            with _nms_without_branch(), _decode_without_inferred_sizes(), _merge_levels_by_gather():
                results = self.detector(list(images.unbind(0)))
        else:
            results = self.detector(list(images.unbind(0)))
        boxes = torch.cat([r["boxes"].reshape(-1, 4) for r in results])
        scores = torch.cat([r["scores"].reshape(-1) for r in results])
        labels = torch.cat([r["labels"].reshape(-1).to(torch.int64) for r in results])
        index = torch.cat(
            [torch.full_like(r["labels"].reshape(-1), i, dtype=torch.int64) for i, r in enumerate(results)]
        )
        return boxes, scores, labels, index


@contextlib.contextmanager
def _nms_without_branch() -> Iterator[None]:
    """While tracing, torchvision's per-class NMS without its ``if boxes.numel() == 0`` branch.

    That branch is scripted into the traced graph as an ONNX ``If``, which NNCF cannot quantize around
    (it fails extracting the branches). The offset trick it guards works on empty inputs too once the
    largest coordinate is taken over the boxes and 0, so the graph computes the same detections, branch-free.
    """
    import torch
    import torchvision.ops.boxes as box_ops

    def coordinate_trick(boxes: Any, scores: Any, idxs: Any, iou_threshold: float) -> Any:
        max_coordinate = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
        offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
        return box_ops.nms(boxes + offsets[:, None], scores, iou_threshold)

    with _swapped(box_ops, "_batched_nms_coordinate_trick", coordinate_trick):
        yield


@contextlib.contextmanager
def _decode_without_inferred_sizes() -> Iterator[None]:
    """While tracing, torchvision's box decoding without ``reshape(n, -1, 4)``.

    A ``-1`` cannot be inferred from zero rows, so the traced graph failed at run time on an image for which
    the detector proposes no region. The number of boxes per row is read from the tensor instead.
    """
    from torchvision.models.detection import _utils

    def decode(self: Any, rel_codes: Any, boxes: Any) -> Any:
        import torch

        concat_boxes = torch.cat(list(boxes), dim=0)
        rel_codes = rel_codes.reshape(concat_boxes.shape[0], rel_codes.shape[-1])
        pred_boxes = self.decode_single(rel_codes, concat_boxes)
        return pred_boxes.reshape(concat_boxes.shape[0], pred_boxes.shape[-1] // 4, 4)

    with _swapped(_utils.BoxCoder, "decode", decode):
        yield


def merge_levels_by_gather(levels: Any, unmerged: list[Any]) -> Any:
    """Multi-scale RoI pooling's results put back in the order of the regions, by one ``Gather``.

    torchvision's traced version (``_onnx_merge_levels``) scatters each pyramid level's pooled regions into a
    zero tensor with an index expanded to the pooled features' full size (``[regions, channels, 7, 7]``
    int64 per level). Here the levels' results are concatenated in level order and gathered back with the
    inverse of that order — the same tensor, with one scatter of ``regions`` integers
    (``benchmarks/detector_pooling.py`` times both on the detection example).

    Args:
        levels: The pyramid level of each region, ``[regions]``.
        unmerged: Each level's pooled regions, in ``levels`` order within the level.
    """
    import torch

    order = torch.cat([torch.where(levels == level)[0] for level in range(len(unmerged))])
    positions = torch.arange(order.size(0), dtype=order.dtype, device=order.device)
    inverse = torch.zeros_like(order).scatter(0, order, positions)
    return torch.cat(unmerged, 0).index_select(0, inverse)


@contextlib.contextmanager
def _merge_levels_by_gather() -> Iterator[None]:
    """While tracing, :func:`merge_levels_by_gather` in place of torchvision's ``_onnx_merge_levels``."""
    from torchvision.ops import poolers

    with _swapped(poolers, "_onnx_merge_levels", merge_levels_by_gather):
        yield


@contextlib.contextmanager
def _swapped(owner: Any, name: str, replacement: Any) -> Iterator[None]:
    """``owner.name`` replaced by ``replacement`` inside the block, then restored; left alone when ``owner``
    has no such attribute (another torchvision)."""
    original = getattr(owner, name, None)
    if original is None:
        yield
        return
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


def adapt(src: ModelSource, examples: tuple | None = None) -> ModelSource | None:
    """The source wrapped for export when its model is a detector, else ``None``.

    A model counts as a detector when it is one of torchvision's detection classes, or when, given
    ``examples``, it returns a list of ``{"boxes", "scores", "labels"}`` mappings.

    Args:
        src: The loaded model.
        examples: Example inputs, to recognise a detector by what it returns.

    Returns:
        A copy of ``src`` whose model is a :class:`DetectorExport`, or ``None`` for any other model.
    """
    if src.text is not None or src.program is not None or src.kind == "torchscript":
        return None
    model = src.model
    if isinstance(model, DetectorExport):
        return src
    found = is_detector(model)
    if not found and examples is not None and len(examples) == 1:
        import torch

        try:
            with torch.inference_mode():
                found = returns_detections(model(*examples))
        except Exception:  # noqa: BLE001 - any model code; not a detector when it fails on images
            found = False
    if not found:
        return None
    wrapped = DetectorExport(model).eval()
    log.info("detector: outputs %s with a data-dependent %r axis", ", ".join(OUTPUTS), DETECTIONS_DIM)
    return replace(
        src,
        model=wrapped,
        input_names=("images",),
        description=f"{src.description} (detections as {', '.join(OUTPUTS)})",
    )


def fixed_batch(dynamic_batch: bool | None) -> bool:
    """Detectors export with a fixed batch (``dynamic_batch=False``).

    Raises:
        InvalidInputError: A dynamic batch was asked for.
    """
    if dynamic_batch:
        raise InvalidInputError(
            "a detector exports with a fixed batch (its per-image post-processing is traced for a fixed "
            "number of images); leave dynamic_batch unset or False"
        )
    return False


def declare_outputs(path: str | os.PathLike[str], output_names: list[str]) -> None:
    """Name the detections axis of the exported graph's outputs :data:`DETECTIONS_DIM` (and fix the boxes'
    second axis to 4, which the exporter leaves symbolic).

    Args:
        path: The exported ONNX file, rewritten in place.
        output_names: The detector's output names, in :data:`OUTPUTS` order.
    """
    import onnx

    model = onnx.load(os.fspath(Path(path)))
    wanted = set(output_names)
    for vi in model.graph.output:
        if vi.name in wanted:
            dims = vi.type.tensor_type.shape.dim
            if len(dims):
                dims[0].ClearField("dim_value")
                dims[0].dim_param = DETECTIONS_DIM
            if vi.name == output_names[0] and len(dims) == 2:  # boxes: four coordinates each
                dims[1].ClearField("dim_param")
                dims[1].dim_value = 4
    onnx.save(model, os.fspath(Path(path)))
