"""The generated COCO-format set: deterministic, consistent masks/boxes, loadable by pycocotools and detectron2."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from projects.detection.data.synthetic_coco import CATEGORIES, dataset_paths, generate_synthetic_coco


def test_same_seed_same_set_other_seed_other_set(tmp_path, synthetic_root):
    again = tmp_path / "again"
    other = tmp_path / "other"
    generate_synthetic_coco(again, 12, 6, (128, 128), max_objects=3, seed=0, progress=False)
    generate_synthetic_coco(other, 12, 6, (128, 128), max_objects=3, seed=1, progress=False)
    for split in ("train", "val"):
        (json_a, images_a), (json_b, images_b) = dataset_paths(synthetic_root, split), dataset_paths(again, split)
        assert json.loads(json_a.read_text()) == json.loads(json_b.read_text())
        for name in ("000000.jpg", "000005.jpg"):
            assert np.array_equal(np.asarray(Image.open(images_a / name)), np.asarray(Image.open(images_b / name)))
    first = json.loads(dataset_paths(synthetic_root, "train")[0].read_text())["annotations"]
    assert first != json.loads(dataset_paths(other, "train")[0].read_text())["annotations"]


@pytest.mark.parametrize("split", ["train", "val"])
def test_annotations_are_consistent(synthetic_root, split):
    json_file, image_root = dataset_paths(synthetic_root, split)
    coco = COCO(str(json_file))
    assert sorted(coco.getCatIds()) == [c["id"] for c in CATEGORIES]
    assert len(coco.getImgIds()) == (12 if split == "train" else 6)
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        assert Image.open(image_root / info["file_name"]).size == (info["width"], info["height"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert 1 <= len(anns) <= 3
        union = np.zeros((info["height"], info["width"]), dtype=np.int32)
        for ann in anns:
            mask = coco.annToMask(ann)
            union += mask
            assert mask.sum() == ann["area"] > 0
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert mask_utils.area(mask_utils.encode(np.asfortranarray(mask))) == ann["area"]
        assert union.max() == 1, "shapes must not overlap"


def test_shapes_are_painted_exactly_where_the_masks_are():
    """On a black photo, the painted pixels are exactly the union of the annotation masks."""
    from projects.detection.data.synthetic_coco import _generate_image

    rng = np.random.default_rng(0)
    for _ in range(5):
        image, anns = _generate_image(rng, [np.zeros((200, 300, 3), np.uint8)], (96, 128), 4, (0.1, 0.2))
        union = np.zeros((96, 128), dtype=bool)
        for ann in anns:
            union |= mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], 96, 128))) > 0
        painted = image.max(axis=2) > 0
        assert np.array_equal(painted, union)


def test_register_is_idempotent_and_loads(synthetic_root, tmp_path):
    pytest.importorskip("detectron2.data", reason="detectron2 is not installed (bash tools/install_detectron2.sh)")
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from projects.detection.data.synthetic_coco import register_synthetic_coco

    names = register_synthetic_coco(synthetic_root, prefix="test_shapes")
    assert register_synthetic_coco(synthetic_root, prefix="test_shapes") == names
    dicts = DatasetCatalog.get(names[1])
    assert len(dicts) == 6 and all(d["annotations"] for d in dicts)
    assert MetadataCatalog.get(names[1]).thing_classes == [c["name"] for c in CATEGORIES]
    generate_synthetic_coco(tmp_path / "elsewhere", 2, 1, (64, 64), seed=3, progress=False)
    with pytest.raises(ValueError, match="already registered"):
        register_synthetic_coco(tmp_path / "elsewhere", prefix="test_shapes")
    with pytest.raises(FileNotFoundError, match="instances_train.json"):
        register_synthetic_coco(tmp_path / "missing", prefix="test_missing")
