"""Mask R-CNN + FPN with the MViTv2-T backbone: one training iteration and one inference pass on CPU."""

import os

import pytest
import torch

pytest.importorskip("detectron2.modeling", reason="detectron2 is not installed (bash tools/install_detectron2.sh)")

from detectron2 import model_zoo  # noqa: E402
from detectron2.config import LazyConfig, get_cfg, instantiate  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import BitMasks, Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from projects.detection.backbone import MViTBackbone, add_mvit_config  # noqa: E402

CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "..", "projects", "detection", "configs", "mask_rcnn_mvitv2_t_3x.py"
)


def _batch(height: int = 160, width: int = 224):
    """Two images with one box + mask each (detectron2's input format: CHW float 0..255 tensors)."""
    batch = []
    for i in range(2):
        instances = Instances((height, width))
        box = torch.tensor([[20.0 + 10 * i, 30.0, 120.0, 140.0]])
        instances.gt_boxes = Boxes(box)
        instances.gt_classes = torch.tensor([i])
        mask = torch.zeros(1, height, width, dtype=torch.bool)
        mask[0, 30:140, 20 + 10 * i : 120] = True
        instances.gt_masks = BitMasks(mask)
        batch.append({"image": torch.rand(3, height, width) * 255, "instances": instances})
    return batch


def test_lazyconfig_mask_rcnn_trains_and_predicts():
    cfg = LazyConfig.load(CONFIG)
    cfg.model.roi_heads.num_classes = 3
    model = instantiate(cfg.model)
    assert isinstance(model.backbone.bottom_up, MViTBackbone)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)

    model.train()
    backbone_before = {k: v.clone() for k, v in model.backbone.bottom_up.state_dict().items()}
    with EventStorage(0):
        losses = model(_batch())
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    optimizer.zero_grad()
    total.backward()
    grads = [p.grad for p in model.backbone.bottom_up.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    optimizer.step()
    changed = [k for k, v in model.backbone.bottom_up.state_dict().items() if not torch.equal(v, backbone_before[k])]
    assert len(changed) > 0.9 * len(backbone_before)

    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": torch.rand(3, 150, 200) * 255, "height": 300, "width": 400}])
    instances = out["instances"]
    assert instances.image_size == (300, 400)
    n = len(instances)
    assert instances.pred_boxes.tensor.shape == (n, 4) and instances.scores.shape == (n,)
    assert instances.pred_masks.shape == (n, 300, 400)
    assert ((instances.pred_classes >= 0) & (instances.pred_classes < 3)).all()


def test_yacs_config_builds_mvit_fpn():
    """The BACKBONE_REGISTRY route: MODEL.BACKBONE.NAME = build_mvit_fpn_backbone with MODEL.MVIT.* keys."""
    cfg = get_cfg()
    add_mvit_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.BACKBONE.NAME", "build_mvit_fpn_backbone",
            "MODEL.FPN.IN_FEATURES", ["scale2", "scale3", "scale4", "scale5"],
            "MODEL.MVIT.EMBED_DIM", 16,
            "MODEL.MVIT.DEPTH", 4,
            "MODEL.MVIT.LAST_BLOCK_INDEXES", (0, 1, 2, 3),
            "MODEL.ROI_HEADS.NUM_CLASSES", 3,
            "MODEL.PIXEL_MEAN", [123.675, 116.28, 103.53],
            "MODEL.PIXEL_STD", [58.395, 57.12, 57.375],
            "INPUT.FORMAT", "RGB",
        ]
    )  # fmt: skip
    model = build_model(cfg)
    bottom_up = model.backbone.bottom_up
    assert isinstance(bottom_up, MViTBackbone)
    assert {k: v.stride for k, v in bottom_up.output_shape().items()} == {
        "scale2": 4, "scale3": 8, "scale4": 16, "scale5": 32
    }  # fmt: skip
    model.train()
    with EventStorage(0):
        losses = model(_batch(96, 128))
    assert torch.isfinite(sum(losses.values()))
