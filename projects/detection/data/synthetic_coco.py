"""A small COCO-format instance-segmentation set generated from photos that ship inside Python packages.

Coloured circles, squares and triangles are pasted on random crops of scikit-image's and scikit-learn's sample
photos. Every object is a polygon; its pixels are painted from the same pycocotools rasterisation that COCO
evaluation uses for the ground truth, and objects never overlap, so polygon, mask and box agree exactly. The set
is a deterministic function of the seed.

Two layouts. The shapes set (3 categories: circle, square, triangle) of the CPU demo, under ``root``::

    root/train/000000.jpg ...        root/val/000000.jpg ...
    root/annotations/instances_train.json
    root/annotations/instances_val.json

and a stand-in for COCO 2017 (:func:`generate_coco_layout`) that detectron2's builtin ``coco_2017_train`` /
``coco_2017_val`` read with ``DETECTRON2_DATASETS=root``: COCO's 80 categories with their non-contiguous ids
1..90, images of several sizes named by 12-digit ids, polygon masks, a few ``iscrowd`` regions stored as
uncompressed RLE and images without annotations, as in the real files::

    root/coco/annotations/instances_train2017.json    root/coco/train2017/000000000037.jpg ...
    root/coco/annotations/instances_val2017.json      root/coco/val2017/...

Command line::

    python -m projects.detection.data.synthetic_coco --out data/synthetic_coco --num-train 300 --num-val 60
    python -m projects.detection.data.synthetic_coco --layout coco --out datasets --num-train 16 --num-val 8
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
    "COCO_SPLIT_DIRS",
    "SPLITS",
    "coco_categories",
    "coco_layout_paths",
    "dataset_paths",
    "generate_coco_layout",
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
SHAPES: Tuple[str, ...] = ("circle", "square", "triangle")
# Folder (and json suffix) of each split in detectron2's builtin COCO 2017 layout.
COCO_SPLIT_DIRS: Dict[str, str] = {"train": "train2017", "val": "val2017"}

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


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` dilated by one pixel (4-neighbourhood)."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def _uncompressed_rle(mask: np.ndarray) -> Dict[str, object]:
    """COCO's uncompressed RLE of a binary mask, as its crowd annotations store it: column-major run lengths
    starting with a (possibly empty) run of zeros, ``{"counts": [...], "size": [H, W]}``."""
    flat = mask.astype(np.uint8).reshape(-1, order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _crowd_region(
    rng: np.random.Generator,
    categories: Sequence[Dict[str, object]],
    occupied: np.ndarray,
    radius_range: Tuple[float, float],
) -> Optional[Tuple[Dict[str, object], np.ndarray]]:
    """A crowd of 3..5 small overlapping discs of one category in a free spot: ``(annotation, mask)`` or None."""
    h, w = occupied.shape
    category = categories[rng.integers(len(categories))]
    radius = 0.5 * radius_range[0] * min(h, w)
    center = np.array([rng.uniform(3 * radius, w - 3 * radius), rng.uniform(3 * radius, h - 3 * radius)])
    discs = []
    for _ in range(int(rng.integers(3, 6))):
        disc = _shape_polygon(rng, "circle", center + rng.uniform(-1.5, 1.5, size=2) * radius, radius)
        discs.append([float(round(v, 2)) for v in disc.reshape(-1)])
    rle = mask_utils.merge(mask_utils.frPyObjects(discs, h, w))
    mask = mask_utils.decode(rle).astype(bool)
    if mask.sum() < 16 or (_grow(mask) & occupied).any():
        return None
    annotation = {
        "category_id": int(category["id"]),
        "segmentation": _uncompressed_rle(mask),
        "area": float(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "iscrowd": 1,
    }
    return annotation, mask


def _generate_image(
    rng: np.random.Generator,
    photos: Sequence[np.ndarray],
    size: Tuple[int, int],
    max_objects: int,
    radius_range: Tuple[float, float],
    *,
    categories: Sequence[Dict[str, object]] = CATEGORIES,
    crowd_prob: float = 0.0,
) -> Tuple[np.ndarray, List[Dict[str, object]]]:
    """One image (H, W, 3) uint8 and its annotations (without ids): 1..max_objects non-overlapping shapes.

    A category named like a shape is drawn as that shape; any other is drawn as ``SHAPES[index % 3]`` (its index
    in ``categories``). With probability ``crowd_prob`` an ``iscrowd`` region (uncompressed RLE) is added.
    """
    h, w = size
    image = _random_background(rng, photos, size).astype(np.float32)
    occupied = np.zeros((h, w), dtype=bool)
    annotations: List[Dict[str, object]] = []
    num_objects = int(rng.integers(1, max_objects + 1))
    for _ in range(num_objects):
        for _attempt in range(20):  # rejection sampling for a free spot
            index = int(rng.integers(len(categories)))
            category = categories[index]
            shape = str(category["name"]) if category["name"] in SHAPES else SHAPES[index % len(SHAPES)]
            radius = rng.uniform(*radius_range) * min(h, w)
            center = np.array([rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)])
            polygon = _shape_polygon(rng, shape, center, radius)
            flat = [float(round(v, 2)) for v in polygon.reshape(-1)]
            rle = mask_utils.merge(mask_utils.frPyObjects([flat], h, w))
            mask = mask_utils.decode(rle).astype(bool)
            # One pixel of margin so touching shapes never merge into one blob.
            grown = _grow(mask)
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
    if crowd_prob > 0 and rng.random() < crowd_prob:
        crowd = _crowd_region(rng, categories, occupied, radius_range)
        if crowd is not None:
            annotation, mask = crowd
            image[mask] = _random_colour(rng) + rng.normal(0.0, 10.0, size=(int(mask.sum()), 3))
            annotations.append(annotation)
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


def coco_categories() -> List[Dict[str, object]]:
    """COCO 2017's 80 categories as its json lists them: ``{"id", "name"}`` with the non-contiguous ids 1..90."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    # Indexed by COCO category id; "__background__" is id 0 and "N/A" marks the 10 ids COCO does not use.
    names = MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    categories = [{"id": i, "name": name} for i, name in enumerate(names) if i > 0 and name != "N/A"]
    if len(categories) != 80:
        raise RuntimeError(f"torchvision's COCO category list gave {len(categories)} categories, not 80")
    return categories


def coco_layout_paths(root: str | Path, split: str) -> Tuple[Path, Path]:
    """``(json_file, image_root)`` of one split of :func:`generate_coco_layout`'s folder (detectron2's layout)."""
    if split not in COCO_SPLIT_DIRS:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(COCO_SPLIT_DIRS)}")
    coco = Path(root) / "coco"
    return coco / "annotations" / f"instances_{COCO_SPLIT_DIRS[split]}.json", coco / COCO_SPLIT_DIRS[split]


def generate_coco_layout(
    root: str | Path,
    num_train: int = 16,
    num_val: int = 8,
    image_sizes: Sequence[Tuple[int, int]] = ((192, 256), (256, 192), (224, 224)),
    max_objects: int = 4,
    radius_range: Tuple[float, float] = (0.08, 0.2),
    crowd_prob: float = 0.3,
    num_empty: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> Dict[str, Path]:
    """Write a small stand-in for COCO 2017 under ``root/coco`` and return ``{split: json_file}``.

    detectron2's builtin ``coco_2017_train`` / ``coco_2017_val`` read it with ``DETECTRON2_DATASETS=root``.
    Objects are the shapes of :func:`generate_synthetic_coco` labelled with COCO's 80 categories (real ids and
    names); each image has one of ``image_sizes`` (H, W); with probability ``crowd_prob`` an image also holds an
    ``iscrowd`` region in uncompressed RLE; the last ``num_empty`` images of each split have no annotation.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1, got {num_train} and {num_val}")
    if not 0 <= num_empty < min(num_train, num_val):
        raise ValueError(f"num_empty must be in [0, {min(num_train, num_val)}), got {num_empty}")
    categories = coco_categories()
    photos = load_background_photos()
    outputs = {}
    annotation_id = 0
    for split_index, (split, count) in enumerate(zip(COCO_SPLIT_DIRS, (num_train, num_val))):
        rng = np.random.default_rng([seed, split_index, 2017])
        json_file, image_root = coco_layout_paths(root, split)
        image_root.mkdir(parents=True, exist_ok=True)
        json_file.parent.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for k in tqdm(range(count), desc=f"coco layout {split}", disable=not progress):
            size = tuple(image_sizes[rng.integers(len(image_sizes))])
            if k >= count - num_empty:
                pixels, objects = _random_background(rng, photos, size), []
            else:
                pixels, objects = _generate_image(
                    rng, photos, size, max_objects, radius_range, categories=categories, crowd_prob=crowd_prob
                )
            # Sparse ids, unique across splits, as COCO's are (its file names are the 12-digit id).
            image_id = 37 * (k + 1) + split_index
            file_name = f"{image_id:012d}.jpg"
            Image.fromarray(pixels).save(image_root / file_name, quality=95)
            images.append({"id": image_id, "file_name": file_name, "height": size[0], "width": size[1], "license": 1})
            for obj in objects:
                annotation_id += 1
                annotations.append({"id": 900000 + annotation_id, "image_id": image_id, **obj})
        coco = {
            "info": {"description": f"COCO-layout stand-in: shapes on package photos, seed {seed}", "year": 2017},
            "licenses": [{"id": 1, "name": "the photos' own licenses (scikit-image, scikit-learn)", "url": ""}],
            "images": images,
            "annotations": annotations,
            "categories": categories,
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
    from .coco_checks import checked_detection_dataset_dicts

    register_synthetic_coco(root, prefix)
    return checked_detection_dataset_dicts(f"{prefix}_{split}", filter_empty=filter_empty)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (with --layout coco: DETECTRON2_DATASETS)")
    parser.add_argument(
        "--layout",
        choices=("shapes", "coco"),
        default="shapes",
        help="shapes: the 3-category demo set; coco: COCO 2017's layout and 80 categories under OUT/coco",
    )
    parser.add_argument("--num-train", type=int, default=None, help="default: 300 (shapes), 16 (coco)")
    parser.add_argument("--num-val", type=int, default=None, help="default: 60 (shapes), 8 (coco)")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="shapes layout only")
    parser.add_argument("--max-objects", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.layout == "coco":
        if args.size is not None:
            parser.error("--size is for --layout shapes; the coco layout mixes several image sizes")
        outputs = generate_coco_layout(
            args.out, args.num_train or 16, args.num_val or 8, max_objects=args.max_objects, seed=args.seed
        )
    else:
        outputs = generate_synthetic_coco(
            args.out,
            args.num_train or 300,
            args.num_val or 60,
            tuple(args.size or (256, 256)),
            max_objects=args.max_objects,
            seed=args.seed,
        )
    for split, json_file in outputs.items():
        print(f"{split}: {json_file}")


if __name__ == "__main__":
    main()
