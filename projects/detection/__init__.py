"""COCO detection and instance segmentation with MViTv2 as a detectron2 backbone."""
