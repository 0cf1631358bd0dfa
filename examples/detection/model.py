"""The detection example's architecture: torchvision's Faster R-CNN with a MobileNetV3-Large FPN backbone.

Built offline (``weights=None, weights_backbone=None``) for 160×160 scenes and 11 classes (background and
the ten digits); ``train.py`` fills in the weights, and ``pipeline.toml`` names this file as the ``arch``
its checkpoint belongs to.
"""

from __future__ import annotations

from typing import Any

SIZE = 160
NUM_CLASSES = 11


def build_model() -> Any:
    """The untrained detector (eval mode)."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    model = fasterrcnn_mobilenet_v3_large_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=NUM_CLASSES,
        min_size=SIZE,
        max_size=SIZE,
        box_detections_per_img=20,  # at most four digits a scene
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
        # Few proposals in training too: the box head's first layer is 12,544 × 1,024, per proposal.
        rpn_pre_nms_top_n_train=300,
        rpn_post_nms_top_n_train=128,
        box_batch_size_per_image=64,
    )
    return model.eval()
