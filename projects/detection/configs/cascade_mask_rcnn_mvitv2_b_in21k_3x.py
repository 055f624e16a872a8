"""Cascade Mask R-CNN, MViTv2-B from ImageNet-21k weights, 36 epochs. Published: box AP 54.9, mask AP 47.4."""

from .cascade_mask_rcnn_mvitv2_b_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.init_checkpoint = "detectron2://ImageNetPretrained/mvitv2/MViTv2_B_in21k.pyth"
