"""The generated stand-in for COCO 2017: COCO's layout, category ids and names, crowd RLEs, sizes; deterministic."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from projects.detection.data.synthetic_coco import (
    _uncompressed_rle,
    coco_categories,
    coco_layout_paths,
    generate_coco_layout,
)

SIZES = ((96, 128), (128, 96), (112, 112))
# The ids COCO 2017 leaves unused between 1 and 90 (its instances files list 80 categories).
UNUSED_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}


@pytest.fixture(scope="module")
def layout_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("coco_layout"))
    generate_coco_layout(
        root, num_train=8, num_val=4, image_sizes=SIZES, crowd_prob=0.5, num_empty=1, seed=0, progress=False
    )
    return root


def test_categories_are_coco_2017s():
    categories = coco_categories()
    ids = [c["id"] for c in categories]
    assert len(categories) == 80 and ids == sorted(ids)
    assert set(range(1, 91)) - set(ids) == UNUSED_IDS
    names = {c["id"]: c["name"] for c in categories}
    assert (names[1], names[3], names[13], names[90]) == ("person", "car", "stop sign", "toothbrush")


def test_layout_is_detectron2s_builtin_one(layout_root):
    for split, folder in (("train", "train2017"), ("val", "val2017")):
        json_file, image_root = coco_layout_paths(layout_root, split)
        assert json_file.as_posix().endswith(f"coco/annotations/instances_{folder}.json")
        assert image_root.as_posix().endswith(f"coco/{folder}")
        data = json.loads(json_file.read_text())
        assert data["categories"] == coco_categories()
        for image in data["images"]:
            assert image["file_name"] == f"{image['id']:012d}.jpg"
            assert Image.open(image_root / image["file_name"]).size == (image["width"], image["height"])
            assert (image["height"], image["width"]) in SIZES


@pytest.mark.parametrize("split", ["train", "val"])
def test_annotations_match_their_masks(layout_root, split):
    json_file, _ = coco_layout_paths(layout_root, split)
    coco = COCO(str(json_file))
    image_ids = sorted(coco.getImgIds(), key=lambda i: coco.imgs[i]["file_name"])
    assert len(coco.getAnnIds(imgIds=[image_ids[-1]])) == 0, "the last image has no annotation (num_empty=1)"
    crowds = 0
    for ann in coco.loadAnns(coco.getAnnIds()):
        image = coco.imgs[ann["image_id"]]
        mask = coco.annToMask(ann)
        ys, xs = np.nonzero(mask)
        assert mask.sum() == ann["area"] > 0
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        if ann["iscrowd"]:
            crowds += 1
            rle = ann["segmentation"]
            assert isinstance(rle["counts"], list) and rle["size"] == [image["height"], image["width"]]
            assert sum(rle["counts"]) == image["height"] * image["width"]
        else:
            assert isinstance(ann["segmentation"], list) and all(len(p) >= 6 for p in ann["segmentation"])
    if split == "train":
        assert crowds > 0


def test_uncompressed_rle_round_trips():
    rng = np.random.default_rng(0)
    for first in (0, 1):
        mask = rng.random((7, 5)) < 0.5
        mask[0, 0] = bool(first)
        rle = _uncompressed_rle(mask)
        decoded = mask_utils.decode(mask_utils.frPyObjects(rle, *rle["size"]))
        assert np.array_equal(decoded.astype(bool), mask)


def test_same_seed_same_set(layout_root, tmp_path):
    generate_coco_layout(tmp_path, num_train=8, num_val=4, image_sizes=SIZES, crowd_prob=0.5, seed=0, progress=False)
    for split in ("train", "val"):
        (a, images_a), (b, images_b) = coco_layout_paths(layout_root, split), coco_layout_paths(tmp_path, split)
        assert json.loads(a.read_text()) == json.loads(b.read_text())
        name = json.loads(a.read_text())["images"][0]["file_name"]
        assert np.array_equal(np.asarray(Image.open(images_a / name)), np.asarray(Image.open(images_b / name)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_empty"):
        generate_coco_layout("unused", num_train=2, num_val=1, num_empty=1, progress=False)
    with pytest.raises(ValueError, match="unknown split"):
        coco_layout_paths("unused", "test")
