"""COCO 2017 instance-segmentation data for the MViTv2 recipes (detectron2's projects/MViTv2 loader).

Multi-scale training (short side 480..800, max 1333) with a random crop applied half of the time; test at short
side 800. Datasets come from detectron2's builtin catalog: ``$DETECTRON2_DATASETS/coco/`` (see the README), read
by ``checked_detection_dataset_dicts``: detectron2's loader after checks of the json files and images that name the
file and entry of a problem (``projects/detection/data/coco_checks.py``).
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader
from detectron2.evaluation import COCOEvaluator
from omegaconf import OmegaConf

from projects.detection.data.coco_checks import checked_detection_dataset_dicts

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(checked_detection_dataset_dicts)(names="coco_2017_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.RandomApply)(
                tfm_or_aug=L(T.AugmentationList)(
                    augs=[
                        L(T.ResizeShortestEdge)(short_edge_length=[400, 500, 600], sample_style="choice"),
                        L(T.RandomCrop)(crop_type="absolute_range", crop_size=(384, 600)),
                    ]
                ),
                prob=0.5,
            ),
            L(T.ResizeShortestEdge)(
                short_edge_length=(480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800),
                sample_style="choice",
                max_size=1333,
            ),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="RGB",
        use_instance_mask=True,
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    # The categories of the test set must be the training set's (the model's classes are those).
    dataset=L(checked_detection_dataset_dicts)(
        names="coco_2017_val", filter_empty=False, same_categories_as="${...train.dataset.names}"
    ),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}")
