"""Cascade Mask R-CNN, MViTv2-B, 36 epochs. Published: box AP 54.1, mask AP 46.7."""

from .cascade_mask_rcnn_mvitv2_t_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.backbone.bottom_up.depth = 24
model.backbone.bottom_up.last_block_indexes = (1, 4, 20, 23)
model.backbone.bottom_up.drop_path_rate = 0.4

train.init_checkpoint = "detectron2://ImageNetPretrained/mvitv2/MViTv2_B_in1k.pyth"
