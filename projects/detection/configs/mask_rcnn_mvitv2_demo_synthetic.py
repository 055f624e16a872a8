"""A small MViTv2 Mask R-CNN on the generated shapes set (projects/detection/data/synthetic_coco.py), on CPU.

Trained from scratch in minutes: 256 px images, a 6-block MViTv2 (width 48) in detectron2's layout with
16-token windows, a 128-channel FPN and slim heads. Generate the data first (the demo script does it):

    python -m projects.detection.data.synthetic_coco --out data/synthetic_coco
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler

from projects.detection.data.synthetic_coco import CATEGORIES, synthetic_coco_dataset_dicts

from .mask_rcnn_mvitv2_t_3x import dataloader, model, optimizer, train

channels = 128
model.backbone.bottom_up.update(
    embed_dim=48, depth=6, num_heads=1, last_block_indexes=(0, 1, 4, 5), adaptive_window_size=16, drop_path_rate=0.0
)
model.backbone.out_channels = channels
model.proposal_generator.head.in_channels = channels
model.proposal_generator.pre_nms_topk = (1000, 500)
model.proposal_generator.post_nms_topk = (300, 100)
model.roi_heads.num_classes = len(CATEGORIES)
model.roi_heads.batch_size_per_image = 128
model.roi_heads.box_head.input_shape = ShapeSpec(channels=channels, height=7, width=7)
model.roi_heads.box_head.fc_dims = [256, 256]
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=256)
model.roi_heads.box_predictor.test_topk_per_image = 20
model.roi_heads.mask_head.input_shape = ShapeSpec(channels=channels, width=14, height=14)
model.roi_heads.mask_head.conv_dims = [channels] * 4

root = "data/synthetic_coco"
# Registered as {prefix}_train / {prefix}_val when the loaders are built.
dataloader.train.dataset = L(synthetic_coco_dataset_dicts)(root=root, split="train", prefix="synthetic_coco")
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(224, 256, 288), sample_style="choice", max_size=512),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 1
dataloader.test.dataset = L(synthetic_coco_dataset_dicts)(
    root="${...train.dataset.root}", split="val", prefix="${...train.dataset.prefix}", filter_empty=False
)
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=256, max_size=512)]
dataloader.test.num_workers = 1
dataloader.evaluator.dataset_name = "${..test.dataset.prefix}_val"
dataloader.evaluator.output_dir = "${...train.output_dir}/inference"

train.init_checkpoint = ""  # from scratch: no pre-trained weights on this machine
train.output_dir = "output/detection_demo"
train.device = "cpu"
train.max_iter = 500
train.eval_period = 500
train.log_period = 20
train.checkpointer.period = 250
train.checkpointer.max_to_keep = 2
train.seed = 0

optimizer.lr = 4e-4
optimizer.weight_decay = 0.05
# Cosine decay over whatever train.max_iter is; linear warmup over its first 8%.
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.01),
    warmup_length=0.08,
    warmup_factor=0.01,
)
