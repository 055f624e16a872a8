"""Mask R-CNN + FPN with an MViTv2-T backbone on COCO, 36 epochs (detectron2's projects/MViTv2 recipe).

Published (detectron2, 64 GPUs): box AP 48.3, mask AP 43.8. The other configs of this folder derive from this one.
"""

from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from projects.detection.backbone import MViTBackbone

from .common.coco_loader import dataloader

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
constants = model_zoo.get_config("common/data/constants.py").constants
model.pixel_mean = constants.imagenet_rgb256_mean
model.pixel_std = constants.imagenet_rgb256_std
model.input_format = "RGB"
model.backbone.bottom_up = L(MViTBackbone)(
    embed_dim=96,
    depth=10,
    num_heads=1,
    last_block_indexes=(0, 2, 7, 9),
    residual_pooling=True,
    drop_path_rate=0.2,
    norm_eps=1e-6,
    out_features=("scale2", "scale3", "scale4", "scale5"),
)
model.backbone.in_features = "${.bottom_up.out_features}"

train = model_zoo.get_config("common/train.py").train
train.amp.enabled = True
train.ddp.fp16_compression = True
# ImageNet-1k weights of the core (official .pyth, mmpretrain or this project's format; a local path works too).
train.init_checkpoint = "detectron2://ImageNetPretrained/mvitv2/MViTv2_T_in1k.pyth"

dataloader.train.total_batch_size = 64

# 36 epochs of COCO train2017 at batch 64; lr x0.1 at 52.5k and 62.5k; 250 warmup iterations.
train.max_iter = 67500
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[52500, 62500, 67500]),
    warmup_length=250 / train.max_iter,
    warmup_factor=0.001,
)

# AdamW, weight decay 0.1 except on norms (weight_decay_norm=0 in the common optimizer) and position tables.
optimizer = model_zoo.get_config("common/optim.py").AdamW
optimizer.params.overrides = {
    "pos_embed": {"weight_decay": 0.0},
    "rel_pos_h": {"weight_decay": 0.0},
    "rel_pos_w": {"weight_decay": 0.0},
}
optimizer.lr = 1.6e-4
