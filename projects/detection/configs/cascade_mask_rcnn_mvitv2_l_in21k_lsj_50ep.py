"""Cascade Mask R-CNN, MViTv2-L from ImageNet-21k weights, LSJ at 1024, 50 epochs, lr 1e-4.

Published: box AP 55.8, mask AP 48.3. (detectron2's L recipe is 50 epochs: 92,187 iterations at batch 64.)
"""

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from .cascade_mask_rcnn_mvitv2_b_3x import model, optimizer, train
from .common.coco_loader_lsj import dataloader  # noqa: F401

model.backbone.bottom_up.embed_dim = 144
model.backbone.bottom_up.depth = 48
model.backbone.bottom_up.num_heads = 2
model.backbone.bottom_up.last_block_indexes = (1, 7, 43, 47)
model.backbone.bottom_up.drop_path_rate = 0.5

train.init_checkpoint = "detectron2://ImageNetPretrained/mvitv2/MViTv2_L_in21k.pyth"

# 50 epochs = 184375 // 2 iterations x 64 images / 118k images per epoch.
train.max_iter = 184375 // 2
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01], milestones=[163889 // 2, 177546 // 2], num_updates=train.max_iter
    ),
    warmup_length=250 / train.max_iter,
    warmup_factor=0.001,
)
optimizer.lr = 1e-4
