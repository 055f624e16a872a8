"""Datasets of the detection project."""

from .synthetic_coco import CATEGORIES, generate_synthetic_coco, register_synthetic_coco, synthetic_coco_dataset_dicts

__all__ = ["CATEGORIES", "generate_synthetic_coco", "register_synthetic_coco", "synthetic_coco_dataset_dicts"]
