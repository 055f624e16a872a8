"""Detect objects in a user's images with a detector of a LazyConfig: COCO-style json and drawn pictures.

    python tools/predict.py --config-file projects/detection/configs/mask_rcnn_mvitv2_demo_synthetic.py \\
        --checkpoint output/detection_demo/model_final.pth photos/ more.jpg --output predictions/ \\
        [--score-threshold 0.5] [--device auto] [--categories-json train.json] [--opts key=value ...]

Writes ``{output}/predictions.json``: COCO's results format (a list that ``pycocotools.COCO.loadRes`` reads), one
entry per detection with ``image_id`` (the image's position in the input order), ``file_name``, ``category_id``
(the data set's id), ``category_name``, ``bbox`` (x, y, width, height in pixels of the original image), ``score``
and, for models with a mask head, ``segmentation`` (RLE, pycocotools). And ``{output}/{image stem}.png``: the image
with the kept detections drawn by detectron2's Visualizer, at the image's size.

Class names and ids, in order: ``--categories-json`` (a COCO json, e.g. the training set's), the config's training
set (detectron2's builtin COCO names, the shapes set of the demo), else ``class {i}`` with id ``i``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mvit.checkpoint.hub import resolve_checkpoint
from mvit.errors import CheckpointError, ConfigError, DataError, UserError, report

__all__ = ["IMAGE_SUFFIXES", "category_table", "list_images", "predict_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(paths: Sequence[str]) -> List[str]:
    """The image files among ``paths``; a folder gives its images (sorted, not recursive).

    Raises:
        UserError: a path that does not exist, or a folder without images.
    """
    files: List[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(
                os.path.join(path, name)
                for name in os.listdir(path)
                if name.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(path, name))
            )
            if not found:
                raise DataError(f"{path}: no images in this folder (suffixes {', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise UserError(f"{path}: file not found")
    return files


def category_table(cfg: Any, categories_json: Optional[str] = None) -> Tuple[List[str], List[int]]:
    """``(names, dataset ids)`` of the model's classes, in its contiguous order (see the module docstring)."""
    from detectron2.data import MetadataCatalog

    if categories_json:
        from projects.detection.data.user_coco import read_categories

        categories = read_categories(categories_json, "--categories-json")
        return [n for _, n in categories], [i for i, _ in categories]
    dataset = cfg.dataloader.train.get("dataset", {})
    names = dataset.get("names")
    for name in [names] if isinstance(names, str) else list(names or []):
        meta = MetadataCatalog.get(name)  # detectron2's builtin COCO sets carry their classes without the data
        classes, id_map = meta.get("thing_classes"), meta.get("thing_dataset_id_to_contiguous_id")
        if classes:
            ids = {v: k for k, v in (id_map or {}).items()}
            return list(classes), [int(ids.get(i, i)) for i in range(len(classes))]
    target = dataset.get("_target_")
    if getattr(target, "__name__", str(target)).endswith("synthetic_coco_dataset_dicts"):  # the demo's shapes
        from projects.detection.data.synthetic_coco import CATEGORIES

        return [str(c["name"]) for c in CATEGORIES], [int(c["id"]) for c in CATEGORIES]
    num_classes = cfg.model.get("roi_heads", {}).get("num_classes") or 0
    return [f"class {i}" for i in range(num_classes)], list(range(num_classes))


def _key_reporting_checkpointer(model: torch.nn.Module) -> Any:
    from projects.detection.checkpoint import SafeDetectionCheckpointer

    class KeyReportingCheckpointer(SafeDetectionCheckpointer):
        """Keeps fvcore's incompatible-key report (it only logs it): a partial load is an error here."""

        incompatible = None

        def _log_incompatible_keys(self, incompatible: Any) -> None:
            self.incompatible = incompatible

    return KeyReportingCheckpointer(model)


def load_detector(cfg: Any, checkpoint: str, device: torch.device) -> Tuple[torch.nn.Module, str]:
    """``cfg.model`` with every tensor from ``checkpoint`` (path, URL or ``zoo:<tag>``), and the log line saying so.

    Raises:
        CheckpointError: the file cannot be read, or does not hold this detector (names tensors missing / misshapen).
    """
    from detectron2.config import instantiate

    model = instantiate(cfg.model).eval()
    local = resolve_checkpoint(checkpoint)
    if not os.path.isfile(local):
        raise CheckpointError(f"{checkpoint}: checkpoint not found")
    checkpointer = _key_reporting_checkpointer(model)
    try:
        checkpointer.load(local)  # the restricted unpickler; detectron2 / Caffe2 names converted
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - a file that is not a checkpoint: torch / pickle raise many types
        raise CheckpointError(f"{checkpoint}: cannot read the checkpoint: {report(err)}") from None
    incompatible = checkpointer.incompatible
    if incompatible is None:
        raise CheckpointError(f"{checkpoint}: holds no model weights")
    missing, misshapen = incompatible.missing_keys, incompatible.incorrect_shapes
    if missing or misshapen:
        first = (
            f"{len(missing)} tensors missing (e.g. {missing[0]})"
            if missing
            else f"{len(misshapen)} of another shape (e.g. {misshapen[0][0]}: {tuple(misshapen[0][1])} in the file, "
            f"{tuple(misshapen[0][2])} here)"
        )
        raise CheckpointError(f"{checkpoint}: does not hold this detector: {first}; is it a detector checkpoint?")
    where = local if local == checkpoint else f"{checkpoint} -> {local}"
    return model.to(device), f"Weights: {where} (detectron2 format, {len(model.state_dict())} tensors)"


def _test_augmentations(cfg: Any) -> List[Any]:
    from detectron2.config import instantiate

    return [instantiate(a) for a in cfg.dataloader.test.mapper.get("augmentations", [])]


def _unique_png(output: str, path: str, used: set) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    name, n = f"{stem}.png", 1
    while name in used:
        name, n = f"{stem}_{n}.png", n + 1
    used.add(name)
    return os.path.join(output, name)


@torch.no_grad()
def predict_images(
    model: torch.nn.Module,
    cfg: Any,
    files: Sequence[str],
    output: str,
    names: Sequence[str],
    dataset_ids: Sequence[int],
    score_threshold: float = 0.5,
    device: str | torch.device = "cpu",
) -> List[Dict[str, Any]]:
    """Run ``model`` on each image; write ``predictions.json`` and the drawn pictures into ``output``.

    Returns:
        The COCO-style result entries (also written), for detections scoring at least ``score_threshold``.
    """
    import detectron2.data.transforms as T
    from detectron2.data.catalog import Metadata
    from detectron2.data.detection_utils import read_image
    from detectron2.evaluation.coco_evaluation import instances_to_coco_json
    from detectron2.utils.visualizer import Visualizer
    from PIL import Image, UnidentifiedImageError

    os.makedirs(output, exist_ok=True)
    augmentations = T.AugmentationList(_test_augmentations(cfg))
    input_format = cfg.model.get("input_format", "BGR")
    metadata = Metadata(name="predict", thing_classes=list(names))
    results: List[Dict[str, Any]] = []
    used: set = set()
    for image_id, path in enumerate(files):
        try:
            image = read_image(path, format=input_format)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise DataError(f"{path}: cannot read the image: {report(err)}") from None
        height, width = image.shape[:2]
        resized = augmentations(T.AugInput(image)).apply_image(image)
        inputs = {"image": torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))).to(device)}
        instances = model([{**inputs, "height": height, "width": width}])[0]["instances"].to("cpu")
        instances = instances[instances.scores >= score_threshold]
        for entry in instances_to_coco_json(instances, image_id):  # bbox in XYWH, masks as RLE (pycocotools)
            contiguous = entry["category_id"]
            results.append(
                {
                    "image_id": image_id,
                    "file_name": path,
                    "category_id": dataset_ids[contiguous],
                    "category_name": names[contiguous],
                    **{k: v for k, v in entry.items() if k not in ("image_id", "category_id")},
                }
            )
        rgb = image[:, :, ::-1] if input_format == "BGR" else image
        drawn = Visualizer(rgb, metadata, scale=1.0).draw_instance_predictions(instances).get_image()
        Image.fromarray(drawn).save(_unique_png(output, path, used))
        found = ", ".join(f"{names[c]} {s:.2f}" for c, s in zip(instances.pred_classes.tolist(), instances.scores))
        print(f"{path}: {len(instances)} detections{': ' + found if found else ''}")
    with open(os.path.join(output, "predictions.json"), "w") as f:
        json.dump(results, f)
    return results


def run(
    config_file: str,
    opts: Sequence[str],
    files: Sequence[str],
    checkpoint: str,
    output: str,
    score_threshold: float,
    device_choice: str,
    categories_json: Optional[str] = None,
) -> int:
    """``tools/predict.py`` for a LazyConfig (``.py``) file; see the module docstring."""
    from detectron2.config import LazyConfig

    from mvit.utils.devices import resolve_device

    images = list_images(files)  # before the (slow) model set-up
    if not 0.0 <= score_threshold <= 1.0:
        raise UserError(f"--score-threshold {score_threshold}: expected a score between 0 and 1")
    device, device_line = resolve_device(device_choice)
    try:
        cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), list(opts))
    except Exception as err:  # noqa: BLE001 - the user's config file runs here; any failure is in that file
        raise ConfigError(f"{config_file}: cannot load the config: {report(err)}") from None
    names, dataset_ids = category_table(cfg, categories_json)
    num_classes = cfg.model.get("roi_heads", {}).get("num_classes")
    if num_classes is not None and len(names) != num_classes:
        raise ConfigError(
            f"--categories-json {categories_json} has {len(names)} categories but the model of {config_file} has "
            f"{num_classes} classes (model.roi_heads.num_classes)"
        )
    print(device_line)
    model, weights_line = load_detector(cfg, checkpoint, device)
    print(weights_line)
    results = predict_images(model, cfg, images, output, names, dataset_ids, score_threshold, device)
    print(f"{len(results)} detections in {len(images)} images: {os.path.join(output, 'predictions.json')}")
    return 0
