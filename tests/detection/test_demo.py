"""A short version of the detection demo: a small MViTv2 Mask R-CNN learns the generated shapes from scratch."""

import os

import pytest

pytest.importorskip("detectron2.engine", reason="detectron2 is not installed (bash tools/install_detectron2.sh)")

from projects.detection import train_net  # noqa: E402
from projects.detection.data.synthetic_coco import generate_synthetic_coco  # noqa: E402

DEMO = os.path.join(
    os.path.dirname(__file__), "..", "..", "projects", "detection", "configs", "mask_rcnn_mvitv2_demo_synthetic.py"
)


@pytest.mark.slow
def test_short_demo_learns_the_shapes(tmp_path):
    """100 iterations (the full demo runs 500): box and mask AP50 are clearly above an untrained model's ~1."""
    root = str(tmp_path / "shapes")
    generate_synthetic_coco(root, num_train=200, num_val=30, seed=0, progress=False)
    args = train_net.parse_args(
        [
            "--config-file", DEMO,
            f"dataloader.train.dataset.root={root}",
            "dataloader.train.dataset.prefix=test_short_demo",
        "dataloader.train.num_workers=0",
            "dataloader.test.num_workers=0",
            f"train.output_dir={tmp_path / 'run'}",
            "train.max_iter=100",
            "train.eval_period=100",
            "train.checkpointer.period=1000",
        ]
    )  # fmt: skip
    results = train_net.main(args)
    assert results["bbox"]["AP50"] > 10.0, results["bbox"]
    assert results["segm"]["AP50"] > 10.0, results["segm"]
