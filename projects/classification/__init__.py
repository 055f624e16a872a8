"""ImageNet-style image classification with MViTv2 on the shared engine.

Importing the package registers the ``"imagenet"`` dataset (``TRAIN.DATASET`` / ``TEST.DATASET``) and the
image input loader of ``tools/predict.py``.
"""

from mvit.data import register_dataset, register_input_loader

from .config import add_classification_config
from .data import IMAGE_SUFFIXES, ImageFolder, build_imagenet, build_transform, load_for_predict

register_dataset("imagenet", build_imagenet)
register_input_loader("image", load_for_predict, IMAGE_SUFFIXES)

__all__ = ["ImageFolder", "add_classification_config", "build_imagenet", "build_transform"]
