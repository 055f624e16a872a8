"""A small COCO-format instance-segmentation set generated from photos that ship inside Python packages.

Coloured circles, squares and triangles are pasted on random crops of scikit-image's and scikit-learn's sample
photos. Every object is a polygon; its pixels are painted from the same pycocotools rasterisation that COCO
evaluation uses for the ground truth, and objects never overlap, so polygon, mask and box agree exactly. The set
is a deterministic function of the seed.

Layout written under ``root``::

    root/train/000000.jpg ...        root/val/000000.jpg ...
    root/annotations/instances_train.json
    root/annotations/instances_val.json

Command line::

    python -m projects.detection.data.synthetic_coco --out data/synthetic_coco --num-train 300 --num-val 60
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

__all__ = [
    "CATEGORIES",
    "SPLITS",
    "dataset_paths",
    "generate_synthetic_coco",
    "register_synthetic_coco",
    "synthetic_coco_dataset_dicts",
]

CATEGORIES: Tuple[Dict[str, object], ...] = (
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
)
SPLITS: Tuple[str, ...] = ("train", "val")

# Photos bundled inside scikit-image (no download at run time); grey ones are stacked to RGB.
_SKIMAGE_PHOTOS: Tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
    "camera",
    "coins",
    "grass",
    "gravel",
    "brick",
    "moon",
)
_SKLEARN_PHOTOS: Tuple[str, ...] = ("china.jpg", "flower.jpg")
_CIRCLE_VERTICES = 48


def load_background_photos() -> List[np.ndarray]:
    """The real photos used as backgrounds: a list of (H, W, 3) uint8 arrays, always in the same order."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    photos = []
    for name in _SKIMAGE_PHOTOS:
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        photos.append(np.ascontiguousarray(image[..., :3].astype(np.uint8)))
    photos.extend(np.asarray(load_sample_image(name), dtype=np.uint8) for name in _SKLEARN_PHOTOS)
    return photos


def _random_background(rng: np.random.Generator, photos: Sequence[np.ndarray], size: Tuple[int, int]) -> np.ndarray:
    """A random crop (random scale and aspect, random flip) of a random photo, resized to ``size`` = (H, W)."""
    photo = photos[rng.integers(len(photos))]
    ph, pw = photo.shape[:2]
    h, w = size
    scale = rng.uniform(0.35, 1.0)
    ch = max(16, min(ph, int(round(ph * scale))))
    cw = max(16, min(pw, int(round(ch * w / h * rng.uniform(0.8, 1.25)))))
    top, left = rng.integers(ph - ch + 1), rng.integers(pw - cw + 1)
    crop = Image.fromarray(photo[top : top + ch, left : left + cw]).resize((w, h), Image.BILINEAR)
    image = np.asarray(crop)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def _shape_polygon(rng: np.random.Generator, category: str, center: np.ndarray, radius: float) -> np.ndarray:
    """Vertices (K, 2) as (x, y) of a shape of circumradius ``radius`` around ``center``, randomly rotated."""
    if category == "circle":
        angles = np.linspace(0.0, 2.0 * math.pi, _CIRCLE_VERTICES, endpoint=False)
    elif category == "square":
        angles = rng.uniform(0.0, math.pi / 2) + np.arange(4) * (math.pi / 2)
    elif category == "triangle":
        angles = rng.uniform(0.0, 2 * math.pi / 3) + np.arange(3) * (2 * math.pi / 3)
    else:
        raise ValueError(f"unknown shape category {category!r}; known: {[c['name'] for c in CATEGORIES]}")
    return center + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated RGB colour (a random hue at high saturation and value)."""
    hue = rng.uniform(0.0, 1.0)
    sat, val = rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    rgb = val - val * sat * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return rgb * 255.0


def _generate_image(
    rng: np.random.Generator,
    photos: Sequence[np.ndarray],
    size: Tuple[int, int],
    max_objects: int,
    radius_range: Tuple[float, float],
) -> Tuple[np.ndarray, List[Dict[str, object]]]:
    """One image (H, W, 3) uint8 and its annotations (without ids): 1..max_objects non-overlapping shapes."""
    h, w = size
    image = _random_background(rng, photos, size).astype(np.float32)
    occupied = np.zeros((h, w), dtype=bool)
    annotations: List[Dict[str, object]] = []
    num_objects = int(rng.integers(1, max_objects + 1))
    for _ in range(num_objects):
        for _attempt in range(20):  # rejection sampling for a free spot
            category = CATEGORIES[rng.integers(len(CATEGORIES))]
            radius = rng.uniform(*radius_range) * min(h, w)
            center = np.array([rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)])
            polygon = _shape_polygon(rng, str(category["name"]), center, radius)
            flat = [float(round(v, 2)) for v in polygon.reshape(-1)]
            rle = mask_utils.merge(mask_utils.frPyObjects([flat], h, w))
            mask = mask_utils.decode(rle).astype(bool)
            # One pixel of margin so touching shapes never merge into one blob.
            grown = mask.copy()
            grown[1:] |= mask[:-1]
            grown[:-1] |= mask[1:]
            grown[:, 1:] |= mask[:, :-1]
            grown[:, :-1] |= mask[:, 1:]
            if mask.sum() < 16 or (grown & occupied).any():
                continue
            occupied |= grown
            colour = _random_colour(rng)
            shading = rng.normal(0.0, 10.0, size=(int(mask.sum()), 3))  # texture, so a shape is not one flat colour
            image[mask] = colour + shading
            annotations.append(
                {
                    "category_id": int(category["id"]),
                    "segmentation": [flat],
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                }
            )
            break
    return np.clip(image, 0, 255).astype(np.uint8), annotations


def dataset_paths(root: str | Path, split: str) -> Tuple[Path, Path]:
    """``(json_file, image_root)`` of one split of a generated set."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    root = Path(root)
    return root / "annotations" / f"instances_{split}.json", root / split


def generate_synthetic_coco(
    root: str | Path,
    num_train: int = 300,
    num_val: int = 60,
    image_size: Tuple[int, int] = (256, 256),
    max_objects: int = 4,
    radius_range: Tuple[float, float] = (0.08, 0.2),
    seed: int = 0,
    progress: bool = True,
) -> Dict[str, Path]:
    """Write the set under ``root`` and return ``{split: json_file}``.

    Args:
        root: output folder (created).
        num_train / num_val: number of images per split.
        image_size: (H, W) of every image.
        max_objects: each image holds 1..max_objects shapes.
        radius_range: circumradius of a shape as a fraction of min(H, W).
        seed: the whole set is a deterministic function of this seed and the arguments.
        progress: show a tqdm bar per split.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1, got {num_train} and {num_val}")
    photos = load_background_photos()
    outputs = {}
    for split_index, (split, count) in enumerate(zip(SPLITS, (num_train, num_val))):
        rng = np.random.default_rng([seed, split_index])  # one stream per split: val does not depend on num_train
        json_file, image_root = dataset_paths(root, split)
        image_root.mkdir(parents=True, exist_ok=True)
        json_file.parent.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for image_id in tqdm(range(count), desc=f"synthetic_coco {split}", disable=not progress):
            pixels, objects = _generate_image(rng, photos, image_size, max_objects, radius_range)
            file_name = f"{image_id:06d}.jpg"
            Image.fromarray(pixels).save(image_root / file_name, quality=95)
            images.append({"id": image_id, "file_name": file_name, "height": image_size[0], "width": image_size[1]})
            for obj in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **obj})
        coco = {
            "info": {"description": f"synthetic shapes on package photos, seed {seed}"},
            "images": images,
            "annotations": annotations,
            "categories": [dict(c) for c in CATEGORIES],
        }
        json_file.write_text(json.dumps(coco))
        outputs[split] = json_file
    return outputs


def register_synthetic_coco(root: str | Path, prefix: str = "synthetic_coco") -> Tuple[str, ...]:
    """Register the generated splits in detectron2's catalogs as ``{prefix}_train`` / ``{prefix}_val``.

    Registering the same name again for the same files is a no-op, so configs and tests may call this freely.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    names = []
    for split in SPLITS:
        json_file, image_root = dataset_paths(root, split)
        if not json_file.is_file():
            raise FileNotFoundError(f"{json_file} not found: generate the set first (python -m {__name__} --out ...)")
        name = f"{prefix}_{split}"
        if name in DatasetCatalog.list():
            registered = MetadataCatalog.get(name).get("json_file")
            if registered != str(json_file):
                raise ValueError(f"dataset {name!r} is already registered for {registered}, not {json_file}")
        else:
            thing_classes = [str(c["name"]) for c in CATEGORIES]
            register_coco_instances(name, {"thing_classes": thing_classes}, str(json_file), str(image_root))
        names.append(name)
    return tuple(names)


def synthetic_coco_dataset_dicts(
    root: str | Path, split: str, prefix: str = "synthetic_coco", filter_empty: bool = True
) -> List[Dict[str, object]]:
    """detectron2 dataset dicts of one split, registering the set first (the LazyConfig entry point).

    Use in a LazyConfig as ``L(synthetic_coco_dataset_dicts)(root=..., split="train")`` in place of
    ``get_detection_dataset_dicts``; the evaluator then finds ``{prefix}_{split}`` registered.
    """
    from detectron2.data import get_detection_dataset_dicts

    register_synthetic_coco(root, prefix)
    return get_detection_dataset_dicts(f"{prefix}_{split}", filter_empty=filter_empty)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num-train", type=int, default=300)
    parser.add_argument("--num-val", type=int, default=60)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    parser.add_argument("--max-objects", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    outputs = generate_synthetic_coco(
        args.out, args.num_train, args.num_val, tuple(args.size), max_objects=args.max_objects, seed=args.seed
    )
    for split, json_file in outputs.items():
        print(f"{split}: {json_file}")


if __name__ == "__main__":
    main()
