"""Broken COCO data: one DataError naming the json file and the entry, or the entry skipped and logged."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from mvit.errors import DataError, UserError
from projects.detection.data.coco_checks import check_coco_json
from projects.detection.data.synthetic_coco import coco_layout_paths, generate_coco_layout

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> str:
    """A valid generated COCO 2017 folder (6 train / 3 val images, crowd regions, one image without annotations)."""
    root = str(tmp_path_factory.mktemp("coco_checks"))
    generate_coco_layout(root, num_train=6, num_val=3, image_sizes=((96, 128),), crowd_prob=1.0, progress=False)
    return root


def _broken(coco_root: str, tmp_path, mutate, split: str = "train") -> tuple:
    """``(json_file, image_root)``: the split's json changed by ``mutate(data)``, images shared with the valid set."""
    json_file, image_root = coco_layout_paths(coco_root, split)
    data = json.loads(json_file.read_text())
    mutate(data)
    broken = tmp_path / json_file.name
    broken.write_text(json.dumps(data))
    return str(broken), str(image_root)


def _first(data: dict, crowd: int = 0) -> dict:
    return next(a for a in data["annotations"] if a["iscrowd"] == crowd)


def _one_line_data_error(excinfo, json_file: str) -> str:
    message = str(excinfo.value)
    assert isinstance(excinfo.value, UserError) and "\n" not in message
    assert message.startswith(json_file) or json_file in message, message
    return message


def test_the_generated_set_passes(coco_root):
    for split, count in (("train", 6), ("val", 3)):
        json_file, image_root = coco_layout_paths(coco_root, split)
        result = check_coco_json(str(json_file), str(image_root))
        assert result.num_images == count and len(result.categories) == 80
        assert result.degenerate_boxes == [] and result.invalid_polygons == []
        assert len(result.images_without_annotations) == 1


def test_not_json(coco_root, tmp_path):
    json_file = tmp_path / "instances_train2017.json"
    json_file.write_text('{"images": [\n  {"id": 1,, }\n')
    with pytest.raises(DataError) as excinfo:
        check_coco_json(str(json_file))
    assert "line 2 column 12: not valid JSON" in _one_line_data_error(excinfo, str(json_file))
    json_file.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(DataError, match="not a JSON text file"):
        check_coco_json(str(json_file))
    with pytest.raises(DataError, match="not found"):
        check_coco_json(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_list(coco_root, tmp_path, key):
    json_file, image_root = _broken(coco_root, tmp_path, lambda d: d.pop(key))
    with pytest.raises(DataError) as excinfo:
        check_coco_json(json_file, image_root)
    assert f"'{key}' is missing, not a list" in _one_line_data_error(excinfo, json_file)


def test_test_file_without_annotations_is_accepted(coco_root, tmp_path):
    """COCO's image_info_test*.json have no ground truth: fine for a test set, not for training."""
    json_file, image_root = _broken(coco_root, tmp_path, lambda d: d.pop("annotations"), split="val")
    result = check_coco_json(json_file, image_root, require_annotations=False, for_training=False)
    assert result.num_annotations == 0


def _set_crowd_size(data: dict) -> None:
    _first(data, crowd=1)["segmentation"]["size"] = [1, 1]


def _duplicate_annotation_id(data: dict) -> None:
    data["annotations"][1]["id"] = data["annotations"][0]["id"]


def _duplicate_image_id(data: dict) -> None:
    data["images"][1]["id"] = data["images"][0]["id"]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["annotations"][0].update(image_id=999999), r"annotations\[0\] \(id \d+\): image_id 999999 is not"),
        (lambda d: d["annotations"][1].update(category_id=12), r"annotations\[1\] \(id \d+\): category_id 12 is not"),
        (lambda d: d["annotations"][2].pop("bbox"), r"annotations\[2\]: no 'bbox'"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\] \(id \d+\): 'bbox' must be 4"),
        (lambda d: d["annotations"][0].update(bbox=["1", 2, 3, 4]), r"annotations\[0\] \(id \d+\): 'bbox' must be"),
        (lambda d: d["images"][2].pop("file_name"), r"images\[2\]: no 'file_name'"),
        (lambda d: d["images"][0].update(height=0), r"images\[0\] \(id \d+\): 'height' must be a positive"),
        (lambda d: d["categories"][3].pop("name"), r"categories\[3\]: a category needs an 'id' and a 'name'"),
        (_duplicate_annotation_id, r"annotations\[1\] \(id \d+\): annotation id \d+ appears twice"),
        (_duplicate_image_id, r"images\[1\] \(id \d+\): image id \d+ appears twice"),
        (_set_crowd_size, r"RLE 'size' \[1, 1\] differs from its image's \[height, width\] \[96, 128\]"),
        (lambda d: d.update(images=[]), r"'images' is empty"),
    ],
    ids=[
        "orphan-annotation",
        "unknown-category",
        "no-bbox",
        "short-bbox",
        "text-bbox",
        "no-file-name",
        "zero-height",
        "nameless-category",
        "duplicate-annotation-id",
        "duplicate-image-id",
        "rle-size",
        "no-images",
    ],
)
def test_unusable_entry_names_file_and_entry(coco_root, tmp_path, mutate, expected):
    json_file, image_root = _broken(coco_root, tmp_path, mutate)
    with pytest.raises(DataError, match=expected) as excinfo:
        check_coco_json(json_file, image_root)
    _one_line_data_error(excinfo, json_file)


def test_image_file_missing_on_disk(coco_root, tmp_path):
    json_file, image_root = coco_layout_paths(coco_root, "train")
    images = tmp_path / "train2017"
    shutil.copytree(image_root, images)
    first = json.loads(json_file.read_text())["images"][1]
    (images / first["file_name"]).unlink()
    with pytest.raises(DataError) as excinfo:
        check_coco_json(str(json_file), str(images))
    message = _one_line_data_error(excinfo, str(json_file))
    assert f"1 of the 6 images are not in {images}" in message
    assert f"images[1] (id {first['id']}): file_name '{first['file_name']}'" in message
    with pytest.raises(DataError, match="image folder of .* not found"):
        check_coco_json(str(json_file), str(tmp_path / "nowhere"))


def test_nothing_to_train_on(coco_root, tmp_path):
    """Only crowd regions: detectron2 would stop with "AssertionError: No valid data found"."""
    json_file, image_root = _broken(coco_root, tmp_path, lambda d: [a.update(iscrowd=1) for a in d["annotations"]])
    with pytest.raises(DataError, match="none of the 6 images has a usable annotation"):
        check_coco_json(json_file, image_root)
    assert check_coco_json(json_file, image_root, for_training=False).num_images == 6


def test_categories_other_than_expected(coco_root, tmp_path):
    def rename(data):
        data["categories"][2]["name"] = "automobile"

    json_file, image_root = _broken(coco_root, tmp_path, rename)
    expected = [
        (c["id"], c["name"]) for c in json.loads(coco_layout_paths(coco_root, "train")[0].read_text())["categories"]
    ]
    with pytest.raises(DataError) as excinfo:
        check_coco_json(json_file, image_root, dataset="coco_2017_train", expected_categories=expected)
    message = _one_line_data_error(excinfo, json_file)
    assert (
        "differ from those of dataset 'coco_2017_train'" in message
        and "id 3 is 'automobile' here, 'car' there" in message
    )


# ----------------------------------------------------------------------------------------------- through detectron2
requires_detectron2 = pytest.mark.skipif(
    importlib.util.find_spec("detectron2") is None,
    reason="detectron2 is not installed (bash tools/install_detectron2.sh)",
)


def _register(json_file: str, image_root: str, builtin_metadata: bool = False) -> str:
    from detectron2.data.datasets import register_coco_instances
    from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

    name = f"test_coco_checks_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, _get_builtin_metadata("coco") if builtin_metadata else {}, json_file, image_root)
    return name


def _annotation_count(dicts: list) -> int:
    return sum(len(d["annotations"]) for d in dicts)


@requires_detectron2
def test_degenerate_boxes_are_skipped_and_logged(coco_root, tmp_path, caplog):
    from projects.detection.data.coco_checks import checked_detection_dataset_dicts

    json_file, image_root = coco_layout_paths(coco_root, "train")
    # filter_empty=False: an image whose only annotation goes keeps its place, so counts compare one to one.
    valid = checked_detection_dataset_dicts(_register(str(json_file), str(image_root)), filter_empty=False)

    ids = []

    def flatten(data):
        for ann in data["annotations"][:2]:
            ann["bbox"][2] = 0.0  # zero width
            ids.append(ann["id"])

    broken, image_root = _broken(coco_root, tmp_path, flatten)
    with caplog.at_level("WARNING", logger="detectron2.coco_checks"):
        dicts = checked_detection_dataset_dicts(_register(broken, image_root), filter_empty=False)
    assert f"skipped 2 annotations whose box has no area (width or height <= 0), ids: {ids[0]}, {ids[1]}" in caplog.text
    assert broken in caplog.text
    assert _annotation_count(dicts) == _annotation_count(valid) - 2
    assert all(a["bbox"][2] > 0 and a["bbox"][3] > 0 for d in dicts for a in d["annotations"])


@requires_detectron2
def test_short_polygons_are_logged_and_dropped(coco_root, tmp_path, caplog):
    from projects.detection.data.coco_checks import checked_detection_dataset_dicts

    json_file, image_root = coco_layout_paths(coco_root, "train")
    # filter_empty=False: an image whose only annotation goes keeps its place, so counts compare one to one.
    valid = checked_detection_dataset_dicts(_register(str(json_file), str(image_root)), filter_empty=False)
    target = {}

    def shorten(data):
        ann = _first(data)
        ann["segmentation"] = [ann["segmentation"][0][:4]]  # two points
        target["id"] = ann["id"]

    broken, image_root = _broken(coco_root, tmp_path, shorten)
    with caplog.at_level("WARNING", logger="detectron2.coco_checks"):
        dicts = checked_detection_dataset_dicts(_register(broken, image_root), filter_empty=False)
    assert "1 annotations have polygons of fewer than 3 points or of odd length" in caplog.text
    assert f"ids: {target['id']}" in caplog.text
    assert _annotation_count(dicts) == _annotation_count(valid) - 1


@requires_detectron2
def test_images_without_annotations_leave_training_only(coco_root, caplog):
    from projects.detection.data.coco_checks import checked_detection_dataset_dicts

    json_file, image_root = coco_layout_paths(coco_root, "train")
    name = _register(str(json_file), str(image_root))
    with caplog.at_level("INFO", logger="detectron2.coco_checks"):
        train = checked_detection_dataset_dicts(name)
    assert "1 of 6 images have no annotation" in caplog.text
    assert len(train) == 5 and all(d["annotations"] for d in train)
    assert len(checked_detection_dataset_dicts(name, filter_empty=False)) == 6


@requires_detectron2
def test_test_set_with_other_categories_than_training(coco_root, tmp_path):
    from projects.detection.data.coco_checks import checked_detection_dataset_dicts

    train_json, train_images = coco_layout_paths(coco_root, "train")
    train = _register(str(train_json), str(train_images))
    checked_detection_dataset_dicts(train)

    def drop_category(data):
        data["categories"] = [c for c in data["categories"] if c["id"] != 90]  # toothbrush
        data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 90]

    val_json, val_images = _broken(coco_root, tmp_path, drop_category, split="val")
    with pytest.raises(DataError) as excinfo:
        checked_detection_dataset_dicts(_register(val_json, val_images), filter_empty=False, same_categories_as=train)
    message = _one_line_data_error(excinfo, val_json)
    assert f"differ from those of {train_json} ('{train}') (79 vs 80 categories): id 90 is missing here" in message


@requires_detectron2
def test_builtin_coco_metadata_fixes_the_categories(coco_root, tmp_path):
    """detectron2's builtin COCO names carry COCO's categories: a json with others fails with file and id."""
    from projects.detection.data.coco_checks import checked_detection_dataset_dicts

    def rename(data):
        data["categories"][0]["name"] = "human"

    broken, image_root = _broken(coco_root, tmp_path, rename)
    with pytest.raises(DataError, match=r"id 1 is 'human' here, 'person' there"):
        checked_detection_dataset_dicts(_register(broken, image_root, builtin_metadata=True))


@requires_detectron2
def test_unregistered_name_is_a_config_error():
    from mvit.errors import ConfigError
    from projects.detection.data.coco_checks import checked_detection_dataset_dicts

    with pytest.raises(ConfigError, match="dataset 'coco_2071_train' is not registered"):
        checked_detection_dataset_dicts("coco_2071_train")


@requires_detectron2
def test_train_net_on_a_broken_json_stops_with_one_line(coco_root, tmp_path):
    """End to end: the recipe as a user runs it, DETECTRON2_DATASETS pointing at a folder whose json is broken."""
    datasets = tmp_path / "datasets"
    shutil.copytree(os.path.join(coco_root, "coco"), datasets / "coco")
    json_file, _ = coco_layout_paths(datasets, "train")
    json_file.write_text('{"images": [}')
    env = {**os.environ, "DETECTRON2_DATASETS": str(datasets), "PYTHONPATH": ROOT}
    command = [
        sys.executable, os.path.join(ROOT, "projects", "detection", "train_net.py"),
        "--config-file", os.path.join(ROOT, "projects", "detection", "configs", "mask_rcnn_mvitv2_t_3x.py"),
        "train.init_checkpoint=", "train.device=cpu", f"train.output_dir={tmp_path / 'out'}",
        "dataloader.train.num_workers=0",
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    expected = f"{json_file}: line 1 column 13: not valid JSON (Expecting value)"
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"error: {expected}" in proc.stderr.splitlines(), proc.stderr[-3000:]


@requires_detectron2
def test_other_dataset_kinds_are_left_to_detectron2(coco_root, tmp_path):
    """Only COCO-format registrations are checked (an LVIS json, for one, has no 'file_name' in 'images')."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from projects.detection.data.coco_checks import checked_detection_dataset_dicts

    json_file, image_root = _broken(coco_root, tmp_path, lambda d: [i.pop("file_name") for i in d["images"]])
    name = f"test_coco_checks_lvis_{uuid.uuid4().hex[:8]}"
    records = [{"file_name": "x.jpg", "image_id": 1, "height": 8, "width": 8, "annotations": []}]
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="lvis")
    assert checked_detection_dataset_dicts(name, filter_empty=False) == records


@requires_detectron2
def test_train_net_refuses_heads_with_fewer_classes_than_the_data(coco_root, tmp_path, capsys):
    """A custom COCO-format set with more categories than model.roi_heads.num_classes: one line, before training."""
    from detectron2.data.datasets import register_coco_instances

    from mvit.errors import run_cli
    from projects.detection import train_net

    json_file, image_root = coco_layout_paths(coco_root, "train")
    name = f"test_coco_checks_classes_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, str(json_file), str(image_root))
    argv = [
        "--config-file", os.path.join(ROOT, "projects", "detection", "configs", "mask_rcnn_mvitv2_t_3x.py"),
        "train.init_checkpoint=", "train.device=cpu", f"train.output_dir={tmp_path / 'out'}",
        f"dataloader.train.dataset.names={name}", "dataloader.train.num_workers=0", "model.roi_heads.num_classes=3",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: train_net.invoke_main(argv))
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: model.roi_heads.num_classes is 3 but {name} ({json_file}) has 80 categories: "
        "set model.roi_heads.num_classes=80"
    ]
