"""Cascade Mask R-CNN, MViTv2-S, 36 epochs. Published: box AP 53.2, mask AP 46.0."""

from .cascade_mask_rcnn_mvitv2_t_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.backbone.bottom_up.depth = 16
model.backbone.bottom_up.last_block_indexes = (0, 2, 13, 15)

train.init_checkpoint = "detectron2://ImageNetPretrained/mvitv2/MViTv2_S_in1k.pyth"
