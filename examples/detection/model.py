"""The detection example's architecture: torchvision's Faster R-CNN with a MobileNetV3-Large FPN backbone.

Built offline (``weights=None, weights_backbone=None``) for 160×160 scenes and 11 classes (background and
the ten digits); ``train.py`` fills in the weights, and ``pipeline.toml`` names this file as the ``arch``
its checkpoint belongs to.

Sized for the task, as one sizes a fine-tuned detector: a scene holds at most four digits, so 50 proposals
reach the box head at inference (torchvision's default for this model is 1,000), and the box head's hidden
layer has 256 units instead of 1,024 (its first layer is 12,544 × 256). Both cut the float work around the
backbone — region pooling and the box head run once per proposal — which also lets int8 matter.
"""

from __future__ import annotations

from typing import Any

SIZE = 160
NUM_CLASSES = 11
#: Units of the box head's hidden layers (torchvision's default: 1,024).
BOX_HEAD = 256


def build_model() -> Any:
    """The untrained detector (eval mode)."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    model = fasterrcnn_mobilenet_v3_large_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=NUM_CLASSES,
        min_size=SIZE,
        max_size=SIZE,
        box_detections_per_img=20,  # at most four digits a scene
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=50,
        # Few proposals in training too: region pooling and the box head run once per proposal.
        rpn_pre_nms_top_n_train=300,
        rpn_post_nms_top_n_train=128,
        box_batch_size_per_image=64,
    )
    # The new head, as a fine-tuner builds it: pooled 256 × 7 × 7 features → BOX_HEAD → classes and boxes.
    model.roi_heads.box_head = TwoMLPHead(256 * 7 * 7, BOX_HEAD)
    model.roi_heads.box_predictor = FastRCNNPredictor(BOX_HEAD, NUM_CLASSES)
    return model.eval()
