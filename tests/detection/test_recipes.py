"""Every shipped COCO recipe trains a few iterations and evaluates on a generated COCO-layout folder.

The data go through detectron2's builtin ``coco_2017_train`` / ``coco_2017_val`` with ``DETECTRON2_DATASETS``
pointing at the generated folder, exactly as a user's COCO would. Only sizes shrink: images (every size of the
recipe's augmentations scaled by ``SCALE``), the backbone (4 blocks, the recipe's heads per stage), the width of
FPN and heads (their number of convs / fcs and Cascade's 3 stages stay) and the ROI counts. The recipe's
augmentations, heads, mapper and loaders stay; the random crop is forced on, so the polygon-crop path (shapely)
runs in every recipe.
"""

import json
import math
import os

import pytest
import torch

pytest.importorskip("detectron2.engine", reason="detectron2 is not installed (bash tools/install_detectron2.sh)")

import detectron2.data.transforms as T  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.datasets import builtin, register_coco_instances  # noqa: E402
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402

from projects.detection import train_net  # noqa: E402
from projects.detection.data.synthetic_coco import generate_coco_layout  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "projects", "detection", "configs")
RECIPES = [
    "mask_rcnn_mvitv2_t_3x.py",
    "cascade_mask_rcnn_mvitv2_t_3x.py",
    "cascade_mask_rcnn_mvitv2_s_3x.py",
    "cascade_mask_rcnn_mvitv2_b_3x.py",
    "cascade_mask_rcnn_mvitv2_b_in21k_3x.py",
    "cascade_mask_rcnn_mvitv2_l_in21k_lsj_50ep.py",
    "cascade_mask_rcnn_mvitv2_h_in21k_lsj_3x.py",
]
BUILTIN_NAMES = ("coco_2017_train", "coco_2017_val")
SCALE = 0.2  # of every image size in the recipes' augmentations (short side 480..800 -> 96..160, LSJ 1024 -> 205)
WIDTH, FC_WIDTH = 32, 64  # FPN / conv width and fc width of the heads (recipe: 256 and 1024)
MAX_ITER = 2


def test_every_shipped_recipe_is_tested():
    shipped = sorted(f for f in os.listdir(CONFIGS) if f.endswith(".py") and "demo" not in f)
    assert shipped == sorted(RECIPES)


def _register_builtin(name: str, root: str) -> None:
    """What detectron2's ``builtin.register_all_coco(root)`` does for ``name``, after forgetting the old one."""
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
    image_root, json_file = builtin._PREDEFINED_SPLITS_COCO["coco"][name]
    register_coco_instances(
        name, _get_builtin_metadata("coco"), os.path.join(root, json_file), os.path.join(root, image_root)
    )


@pytest.fixture(scope="module")
def coco_datasets(tmp_path_factory):
    """A generated COCO 2017 folder behind detectron2's builtin names, as ``DETECTRON2_DATASETS`` would give."""
    root = str(tmp_path_factory.mktemp("datasets"))
    generate_coco_layout(
        root,
        num_train=6,
        num_val=3,
        image_sizes=((128, 160), (160, 128), (144, 144)),
        crowd_prob=0.5,
        num_empty=1,
        seed=0,
        progress=False,
    )
    # detectron2 registered the builtin names from DETECTRON2_DATASETS when it was imported: register them again
    # from the new value, as a process started with it would.
    old_root = os.path.dirname(os.path.dirname(os.path.dirname(MetadataCatalog.get(BUILTIN_NAMES[0]).json_file)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: extra threads only spin on a shared 2-core machine
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETECTRON2_DATASETS", root)
        for name in BUILTIN_NAMES:
            _register_builtin(name, os.environ["DETECTRON2_DATASETS"])
        yield root
    for name in BUILTIN_NAMES:
        _register_builtin(name, old_root)
    torch.set_num_threads(threads)


def _scale(value, factor: float):
    if isinstance(value, (int, float)):
        return int(round(value * factor))
    return [_scale(v, factor) for v in value]  # list, tuple or omegaconf ListConfig


def _shrink_augmentations(augmentations, factor: float) -> list:
    """Scale every size of the recipe's augmentations and force random ones on; unknown kinds fail the test."""
    seen = []
    for aug in augmentations:
        target = aug._target_
        seen.append(target.__name__)
        if target is T.RandomApply:
            aug.prob = 1.0
            seen += _shrink_augmentations([aug.tfm_or_aug], factor)
        elif target is T.AugmentationList:
            seen += _shrink_augmentations(aug.augs, factor)
        elif target is T.ResizeShortestEdge:
            aug.short_edge_length = _scale(aug.short_edge_length, factor)
            aug.max_size = _scale(aug.get("max_size", 1333), factor)
        elif target is T.RandomCrop:
            assert aug.crop_type in ("absolute", "absolute_range"), aug.crop_type
            aug.crop_size = _scale(aug.crop_size, factor)
        elif target is T.ResizeScale:
            aug.target_height, aug.target_width = _scale([aug.target_height, aug.target_width], factor)
        elif target is T.FixedSizeCrop:
            aug.crop_size = _scale(aug.crop_size, factor)
        elif target is not T.RandomFlip:
            raise AssertionError(f"the recipe test does not know how to shrink {target}: teach _shrink_augmentations")
    return seen


def _narrow_head(head) -> None:
    """Same layers, narrower: channels WIDTH, fc width FC_WIDTH."""
    shape = head.input_shape
    if shape.channels == 1024:  # a predictor after the fc layers
        head.input_shape = ShapeSpec(channels=FC_WIDTH)
    else:
        head.input_shape = ShapeSpec(channels=WIDTH, height=shape.height, width=shape.width)
    if "conv_dims" in head:
        head.conv_dims = [WIDTH] * len(head.conv_dims)
    if "fc_dims" in head:
        head.fc_dims = [FC_WIDTH] * len(head.fc_dims)


def _shrink(cfg) -> list:
    """Fit ``cfg`` to a 2-core CPU test (see the module docstring); returns the augmentations' names."""
    bottom_up = cfg.model.backbone.bottom_up
    heads = bottom_up.get("num_heads", 1)
    bottom_up.update(embed_dim=8 * heads, depth=4, last_block_indexes=(0, 1, 2, 3))
    cfg.model.backbone.out_channels = WIDTH
    cfg.model.proposal_generator.head.in_channels = WIDTH
    cfg.model.proposal_generator.pre_nms_topk = (200, 100)
    cfg.model.proposal_generator.post_nms_topk = (64, 32)
    roi_heads = cfg.model.roi_heads
    roi_heads.batch_size_per_image = 32
    box_heads = roi_heads.get("box_heads") or [roi_heads.box_head]
    predictors = roi_heads.get("box_predictors") or [roi_heads.box_predictor]
    for head in [*box_heads, *predictors, roi_heads.mask_head]:
        _narrow_head(head)
    for predictor in predictors:
        predictor.test_score_thresh = 0.0  # an untrained model still predicts, so COCOeval scores something
        predictor.test_topk_per_image = 20
    seen = _shrink_augmentations(cfg.dataloader.train.mapper.augmentations, SCALE)
    _shrink_augmentations(cfg.dataloader.test.mapper.augmentations, SCALE)
    return seen


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_and_evaluates_on_coco_layout(recipe, coco_datasets, tmp_path):
    out = str(tmp_path / "run")
    args = train_net.parse_args(
        [
            "--config-file", os.path.join(CONFIGS, recipe),
            "train.init_checkpoint=", "train.device=cpu", f"train.output_dir={out}", "train.seed=0",
            f"train.max_iter={MAX_ITER}", f"train.eval_period={MAX_ITER}", "train.log_period=1",
            "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
        ]
    )  # fmt: skip
    cfg = train_net.setup(args)
    # The recipe reads COCO through the builtin names, which now point at the generated folder.
    assert cfg.dataloader.train.dataset.names == "coco_2017_train"
    assert cfg.dataloader.test.dataset.names == "coco_2017_val"
    assert cfg.dataloader.evaluator.dataset_name == "coco_2017_val"
    augmentations = _shrink(cfg)
    assert "RandomCrop" in augmentations or "FixedSizeCrop" in augmentations
    expected_heads = 1 if recipe.startswith("mask_rcnn") else 3

    results = train_net.do_train(args, cfg)

    with open(os.path.join(out, "metrics.json")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    losses = [r for r in records if "total_loss" in r]
    assert [r["iteration"] for r in losses] == list(range(MAX_ITER))
    for record in losses:
        loss_keys = [k for k in record if k.startswith("loss_")]
        assert {"loss_rpn_cls", "loss_rpn_loc"} <= set(loss_keys)
        assert len([k for k in loss_keys if k.startswith("loss_mask")]) == 1
        assert len([k for k in loss_keys if k.startswith("loss_cls")]) == expected_heads
        assert all(math.isfinite(record[k]) for k in loss_keys + ["total_loss"])
    assert os.path.isfile(os.path.join(out, "model_final.pth"))

    assert set(results) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        assert {"AP", "AP50", "AP75"} <= set(results[task])
        assert 0.0 <= results[task]["AP"] <= 100.0, results[task]  # a number: COCOeval ran on predictions
