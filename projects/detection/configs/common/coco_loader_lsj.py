"""Large-scale jitter (LSJ) at 1024 for MViTv2-L / H: flip, rescale by 0.1..2.0, fixed 1024x1024 crop."""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from .coco_loader import dataloader

image_size = 1024
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(T.ResizeScale)(min_scale=0.1, max_scale=2.0, target_height=image_size, target_width=image_size),
    L(T.FixedSizeCrop)(crop_size=(image_size, image_size)),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.mapper.recompute_boxes = True  # boxes from the cropped masks
dataloader.train.total_batch_size = 64
