"""Fixtures of the detection tests: a tiny generated COCO-format set, shared by the session."""

import pytest


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> str:
    """12 train / 6 val images of 128x128 with 1..3 shapes each (pycocotools polygons)."""
    from projects.detection.data.synthetic_coco import generate_synthetic_coco

    root = str(tmp_path_factory.mktemp("synthetic_coco"))
    generate_synthetic_coco(root, num_train=12, num_val=6, image_size=(128, 128), max_objects=3, seed=0, progress=False)
    return root
