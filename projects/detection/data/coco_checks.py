"""Checks of COCO-format annotation files before detectron2 loads them, with messages that name file and field.

detectron2 reports a broken COCO json with a traceback that names neither the file nor the entry
(``JSONDecodeError``, ``KeyError`` for an unknown category id, ``AssertionError: No valid data found``), or only
in the middle of training (an image file that is missing). :func:`check_coco_json` reads the file first and
raises :class:`mvit.errors.DataError` (one line, exit code 2 from the entry point) naming the json file and the
offending entry (``annotations[12] (id 901234): ...``); entries that a detector can do without are skipped and
logged instead:

==========================================================  ===================================================
problem                                                     what happens
==========================================================  ===================================================
missing file, not JSON, no ``images`` / ``annotations`` /   DataError (the file, the line and column of a JSON
``categories`` list, an entry without a required field,     error, or the list index, id and field)
duplicate ids, an annotation pointing at a missing image
or category, an RLE of another size than its image
an image file missing on disk                               DataError (the image folder, how many, the first)
``categories`` other than a registered dataset's (the       DataError (first differing id and both names)
builtin COCO names) or than the training set's
no usable annotation in a training set                      DataError (instead of detectron2's AssertionError)
a box of zero (or negative, or non-finite) width or height  skipped, logged with the annotation ids
a polygon with fewer than 3 points or an odd length         logged with the annotation ids; detectron2 drops the
                                                            polygon (the annotation if none is left)
an image without annotations                                logged; detectron2 leaves it out of training
                                                            (``filter_empty``) and keeps it for evaluation
==========================================================  ===================================================

:func:`checked_detection_dataset_dicts` is detectron2's ``get_detection_dataset_dicts`` with these checks first;
the COCO recipes' loaders (``configs/common/coco_loader.py``) use it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from mvit.errors import ConfigError, DataError

__all__ = ["CocoCheck", "check_coco_json", "check_same_categories", "checked_detection_dataset_dicts"]

logger = logging.getLogger("detectron2.coco_checks")  # a child of detectron2's logger, so train_net shows it

_REQUIRED_KEYS = ("images", "annotations", "categories")
_LOGGED_IDS = 10  # how many offending ids a log line lists
_INF = math.inf


@dataclass
class CocoCheck:
    """What :func:`check_coco_json` found in one file (it raises :class:`DataError` for what cannot be used)."""

    json_file: str
    num_images: int = 0
    num_annotations: int = 0
    categories: List[Tuple[int, str]] = field(default_factory=list)  # (id, name), sorted by id
    degenerate_boxes: List[Any] = field(default_factory=list)  # annotation ids
    invalid_polygons: List[Any] = field(default_factory=list)  # annotation ids
    images_without_annotations: List[Any] = field(default_factory=list)  # image ids


def _ids(ids: Sequence[Any]) -> str:
    more = f" and {len(ids) - _LOGGED_IDS} more" if len(ids) > _LOGGED_IDS else ""
    return ", ".join(str(i) for i in ids[:_LOGGED_IDS]) + more


def _read_json(json_file: str, dataset: str) -> Dict[str, Any]:
    if not os.path.isfile(json_file):
        hint = ""
        if os.path.basename(json_file).startswith(("instances_", "image_info_")):
            hint = " (detectron2's builtin COCO names read $DETECTRON2_DATASETS/coco/annotations/, default ./datasets)"
        raise DataError(f"{json_file}: annotation file of dataset '{dataset}' not found{hint}")
    try:
        with open(json_file, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(f"{json_file}: not a JSON text file (byte {err.start} is not UTF-8)") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{json_file}: line {err.lineno} column {err.colno}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise DataError(
            f"{json_file}: the top level is a JSON {type(data).__name__}, not a COCO object with {_REQUIRED_KEYS}"
        )
    return data


def _check_images(json_file: str, images: List[Any]) -> Dict[Any, Dict[str, Any]]:
    by_id: Dict[Any, Dict[str, Any]] = {}
    for i, image in enumerate(images):
        where = f"{json_file}: images[{i}]"
        if not isinstance(image, dict):
            raise DataError(f"{where}: an entry of 'images' is a {type(image).__name__}, not an object")
        for key in ("id", "file_name", "height", "width"):
            if key not in image:
                raise DataError(f"{where}: no '{key}' (an image needs id, file_name, height and width)")
        where = f"{where} (id {image['id']})"
        if not isinstance(image["file_name"], str) or not image["file_name"]:
            raise DataError(f"{where}: 'file_name' must be a non-empty string, got {image['file_name']!r}")
        for key in ("height", "width"):
            if not isinstance(image[key], int) or isinstance(image[key], bool) or image[key] < 1:
                raise DataError(f"{where}: '{key}' must be a positive integer, got {image[key]!r}")
        if image["id"] in by_id:
            raise DataError(f"{where}: image id {image['id']} appears twice in 'images'")
        by_id[image["id"]] = image
    return by_id


def _check_categories(json_file: str, categories: List[Any]) -> List[Tuple[int, str]]:
    seen: Dict[Any, str] = {}
    for i, category in enumerate(categories):
        where = f"{json_file}: categories[{i}]"
        if not isinstance(category, dict) or "id" not in category or "name" not in category:
            raise DataError(f"{where}: a category needs an 'id' and a 'name', got {category!r}")
        if not isinstance(category["id"], int) or isinstance(category["id"], bool):
            raise DataError(f"{where}: 'id' must be an integer, got {category['id']!r}")
        if category["id"] in seen:
            raise DataError(f"{where}: category id {category['id']} appears twice in 'categories'")
        seen[category["id"]] = str(category["name"])
    return sorted(seen.items())


def _check_segmentation(where: str, segmentation: Any, image: Dict[str, Any]) -> bool:
    """Raise for a malformed segmentation; return False for polygons that detectron2 drops (< 3 points, odd)."""
    if isinstance(segmentation, dict):  # RLE: {"counts": list or str, "size": [H, W]}
        size = segmentation.get("size")
        if "counts" not in segmentation or not isinstance(size, list) or len(size) != 2:
            raise DataError(
                f"{where}: an RLE 'segmentation' needs 'counts' and 'size' [H, W], got keys {sorted(segmentation)}"
            )
        if list(size) != [image["height"], image["width"]]:
            raise DataError(
                f"{where}: RLE 'size' {size} differs from its image's [height, width] "
                f"[{image['height']}, {image['width']}]"
            )
        return True
    if not isinstance(segmentation, list):
        raise DataError(
            f"{where}: 'segmentation' must be a list of polygons or an RLE object, got {segmentation!r:.60}"
        )
    valid = True
    for polygon in segmentation:
        # The list, not each number: COCO train2017 has ~20M coordinates and a per-number check costs seconds.
        if not isinstance(polygon, list):
            raise DataError(f"{where}: a polygon of 'segmentation' must be a list of numbers, got {polygon!r:.60}")
        if len(polygon) < 6 or len(polygon) % 2:
            valid = False
    return valid


def check_coco_json(
    json_file: str,
    image_root: Optional[str] = None,
    *,
    dataset: str = "",
    expected_categories: Optional[Sequence[Tuple[int, str]]] = None,
    require_annotations: bool = True,
    for_training: bool = True,
) -> CocoCheck:
    """Check a COCO instances file (and that its images exist under ``image_root``); raise or log what is wrong.

    Args:
        json_file: the annotation file.
        image_root: the folder of the images; ``None`` (or a remote ``scheme://`` path) skips the disk check.
        dataset: the registered name, for messages.
        expected_categories: ``(id, name)`` pairs the file must have (a registered dataset's, the training set's).
        require_annotations: ``False`` for test files without ground truth (COCO's ``image_info_test*.json``).
        for_training: a set without any usable annotation is an error (nothing to train on).

    Raises:
        DataError: naming ``json_file`` and the entry (index, id, field), see the module docstring.
    """
    data = _read_json(json_file, dataset or json_file)
    required = _REQUIRED_KEYS if require_annotations else ("images", "categories")
    for key in required:
        if not isinstance(data.get(key), list):
            found = "missing" if key not in data else f"a {type(data[key]).__name__}"
            raise DataError(
                f"{json_file}: '{key}' is {found}, not a list (a COCO instances file has {', '.join(_REQUIRED_KEYS)})"
            )
    if not data["images"]:
        raise DataError(f"{json_file}: 'images' is empty")
    if not data["categories"]:
        raise DataError(f"{json_file}: 'categories' is empty")
    result = CocoCheck(json_file=json_file, num_images=len(data["images"]))
    images = _check_images(json_file, data["images"])
    result.categories = _check_categories(json_file, data["categories"])
    if expected_categories is not None:
        check_same_categories(json_file, result.categories, expected_categories, f"dataset '{dataset}'")
    category_ids = {c for c, _ in result.categories}

    annotations = data.get("annotations") or []
    result.num_annotations = len(annotations)
    annotation_ids: set = set()
    annotated_images: set = set()
    usable_images: set = set()
    for i, ann in enumerate(annotations):
        where = f"{json_file}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise DataError(f"{where}: an entry of 'annotations' is a {type(ann).__name__}, not an object")
        for key in ("id", "image_id", "category_id", "bbox"):
            if key not in ann:
                raise DataError(f"{where}: no '{key}' (an annotation needs id, image_id, category_id and bbox)")
        where = f"{where} (id {ann['id']})"
        if ann["id"] in annotation_ids:
            raise DataError(f"{where}: annotation id {ann['id']} appears twice in 'annotations'")
        annotation_ids.add(ann["id"])
        image = images.get(ann["image_id"])
        if image is None:
            raise DataError(f"{where}: image_id {ann['image_id']!r} is not the id of an entry of 'images'")
        if ann["category_id"] not in category_ids:
            raise DataError(f"{where}: category_id {ann['category_id']!r} is not the id of an entry of 'categories'")
        bbox = ann["bbox"]
        try:
            # Comparisons, not a per-value type check: cheap on COCO's 860k boxes; NaN compares False.
            x, y, w, h = bbox
            has_area = -_INF < x < _INF and -_INF < y < _INF and 0 < w < _INF and 0 < h < _INF
        except (TypeError, ValueError):  # not 4 values, or not numbers
            raise DataError(f"{where}: 'bbox' must be 4 numbers [x, y, width, height], got {bbox!r:.60}") from None
        annotated_images.add(ann["image_id"])
        if not has_area:
            result.degenerate_boxes.append(ann["id"])
            continue
        segmentation = ann.get("segmentation")
        if segmentation and not _check_segmentation(where, segmentation, image):
            result.invalid_polygons.append(ann["id"])
        if not ann.get("iscrowd", 0):
            usable_images.add(ann["image_id"])
    result.images_without_annotations = [i for i in images if i not in annotated_images]

    if image_root is not None and "://" not in image_root:
        _check_image_files(json_file, image_root, data["images"])
    if require_annotations and for_training and not usable_images:
        raise DataError(
            f"{json_file}: none of the {len(images)} images has a usable annotation (not iscrowd, a box of positive "
            f"size): nothing to train on"
        )
    _log(result)
    return result


def _check_image_files(json_file: str, image_root: str, images: List[Dict[str, Any]]) -> None:
    if not os.path.isdir(image_root):
        raise DataError(f"{image_root}: image folder of {json_file} not found")
    # One listing instead of a stat per image (COCO train2017 has 118k images, often on a network disk).
    present = set(os.listdir(image_root))
    missing = []
    for i, image in enumerate(images):
        name = image["file_name"]
        if "/" in name or os.sep in name:
            found = os.path.isfile(os.path.join(image_root, name))
        else:
            found = name in present
        if not found:
            missing.append((i, image))
    if missing:
        i, image = missing[0]
        raise DataError(
            f"{json_file}: {len(missing)} of the {len(images)} images are not in {image_root}, the first "
            f"images[{i}] (id {image['id']}): file_name '{image['file_name']}'"
        )


def _log(result: CocoCheck) -> None:
    name = result.json_file
    if result.degenerate_boxes:
        logger.warning(
            "%s: skipped %d annotations whose box has no area (width or height <= 0), ids: %s",
            name,
            len(result.degenerate_boxes),
            _ids(result.degenerate_boxes),
        )
    if result.invalid_polygons:
        logger.warning(
            "%s: %d annotations have polygons of fewer than 3 points or of odd length, which detectron2 drops "
            "(with the annotation when no polygon is left), ids: %s",
            name,
            len(result.invalid_polygons),
            _ids(result.invalid_polygons),
        )
    if result.images_without_annotations:
        logger.info(
            "%s: %d of %d images have no annotation (left out of training, kept for evaluation), ids: %s",
            name,
            len(result.images_without_annotations),
            result.num_images,
            _ids(result.images_without_annotations),
        )


def check_same_categories(
    json_file: str,
    categories: Sequence[Tuple[int, str]],
    expected: Sequence[Tuple[int, str]],
    expected_from: str,
) -> None:
    """Raise :class:`DataError` unless ``categories`` (id, name) equal ``expected`` (those of ``expected_from``)."""
    mine, theirs = dict(categories), dict(expected)
    if mine == theirs:
        return
    for category_id in sorted(set(mine) | set(theirs)):
        here, there = mine.get(category_id), theirs.get(category_id)
        if here != there:
            here_text = f"'{here}'" if here is not None else "missing"
            there_text = f"'{there}'" if there is not None else "absent"
            raise DataError(
                f"{json_file}: 'categories' differ from those of {expected_from} ({len(mine)} vs {len(theirs)} "
                f"categories): id {category_id} is {here_text} here, {there_text} there"
            )


def _dataset_files(name: str) -> Tuple[Optional[str], Optional[str]]:
    """``(json_file, image_root)`` of a registered COCO-format dataset; ``(None, None)`` for other kinds."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name not in DatasetCatalog.list():
        raise ConfigError(
            f"dataset '{name}' is not registered in detectron2's DatasetCatalog "
            f"(registered COCO-style names include: {', '.join(n for n in DatasetCatalog.list() if 'coco_2017' in n)})"
        )
    meta = MetadataCatalog.get(name)
    # register_coco_instances marks its datasets "coco"; LVIS jsons, for one, have no 'file_name' in 'images'.
    if meta.get("evaluator_type") != "coco":
        return None, None
    return meta.get("json_file"), meta.get("image_root")


def _registered_categories(name: str) -> Optional[List[Tuple[int, str]]]:
    """``(id, name)`` pairs fixed by a dataset's registration (detectron2's builtin COCO metadata), if any."""
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(name)
    classes, id_map = meta.get("thing_classes"), meta.get("thing_dataset_id_to_contiguous_id")
    if classes is None or id_map is None:
        return None
    return sorted((int(dataset_id), str(classes[index])) for dataset_id, index in id_map.items())


_checked: Dict[str, CocoCheck] = {}  # json file -> its check, so the test set compares with the training set cheaply


def _check_dataset(name: str, require_annotations: bool, for_training: bool) -> Optional[CocoCheck]:
    json_file, image_root = _dataset_files(name)
    if json_file is None or "://" in json_file:
        return None  # not a (local) COCO json: nothing to check here
    result = check_coco_json(
        json_file,
        image_root,
        dataset=name,
        expected_categories=_registered_categories(name),
        require_annotations=require_annotations,
        for_training=for_training,
    )
    _checked[json_file] = result
    return result


def _categories_of(name: str) -> Optional[Tuple[str, List[Tuple[int, str]]]]:
    """``(json_file, categories)`` of a registered COCO dataset, read from its json unless checked before."""
    json_file, _ = _dataset_files(name)
    if json_file is None or "://" in json_file:
        return None
    registered = _registered_categories(name)
    if json_file not in _checked and registered is not None:
        return json_file, registered  # a builtin name: its json was (or will be) checked against these
    if json_file not in _checked:
        data = _read_json(json_file, name)
        _checked[json_file] = CocoCheck(
            json_file, categories=_check_categories(json_file, data.get("categories") or [])
        )
    return json_file, _checked[json_file].categories


def checked_detection_dataset_dicts(
    names: Union[str, Sequence[str]],
    filter_empty: bool = True,
    min_keypoints: int = 0,
    proposal_files: Optional[Sequence[str]] = None,
    check_consistency: bool = True,
    same_categories_as: Union[str, Sequence[str], None] = None,
) -> List[Dict[str, Any]]:
    """detectron2's ``get_detection_dataset_dicts`` after :func:`check_coco_json` on each dataset's json.

    Arguments are ``get_detection_dataset_dicts``'s, plus ``same_categories_as``: dataset name(s) whose categories
    these datasets must have (the training set, for a test set). ``filter_empty=True`` marks a training set:
    it must have a usable annotation. Annotations whose box has no area are dropped (and logged).
    """
    from detectron2.data import get_detection_dataset_dicts
    from detectron2.data.build import filter_images_with_few_keypoints, filter_images_with_only_crowd_annotations

    names = [names] if isinstance(names, str) else list(names)
    references = [same_categories_as] if isinstance(same_categories_as, str) else list(same_categories_as or [])
    for name in names:
        result = _check_dataset(name, require_annotations=filter_empty, for_training=filter_empty)
        for reference in references:
            found = _categories_of(reference) if result is not None else None
            if found is not None and found[0] != result.json_file:
                check_same_categories(result.json_file, result.categories, found[1], f"{found[0]} ('{reference}')")

    dicts = get_detection_dataset_dicts(
        names, filter_empty=False, min_keypoints=0, proposal_files=proposal_files, check_consistency=check_consistency
    )
    if not isinstance(dicts, list) or not dicts or "annotations" not in dicts[0]:
        return dicts
    for record in dicts:
        record["annotations"] = [a for a in record["annotations"] if _has_area(a)]
    if filter_empty:
        dicts = filter_images_with_only_crowd_annotations(dicts)
    if min_keypoints > 0:
        dicts = filter_images_with_few_keypoints(dicts, min_keypoints)
    if not dicts:
        raise DataError(f"datasets {names}: no image with a usable annotation is left to train on")
    return dicts


def _has_area(annotation: Dict[str, Any]) -> bool:
    from detectron2.structures import BoxMode

    bbox = annotation.get("bbox")
    if bbox is None:
        return True
    x0, y0, x1, y1 = BoxMode.convert(list(bbox), annotation.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS)
    return all(math.isfinite(v) for v in (x0, y0, x1, y1)) and x1 > x0 and y1 > y0
