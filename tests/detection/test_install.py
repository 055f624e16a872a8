"""The detectron2 install route: the parts this project uses import, and nothing shadows the project's tools/."""

import importlib.util
import os
from importlib import metadata

import pytest

pytest.importorskip("detectron2.modeling", reason="detectron2 is not installed (bash tools/install_detectron2.sh)")

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_tools_resolves_to_the_project():
    spec = importlib.util.find_spec("tools")
    assert spec is not None
    locations = [os.path.realpath(p) for p in (spec.submodule_search_locations or [])]
    assert locations and all(p.startswith(ROOT) for p in locations), f"'tools' resolves to {locations}"


def test_sal_detectron2_left_no_stray_tools_on_disk():
    try:
        dist = metadata.distribution("sal-detectron2")
    except metadata.PackageNotFoundError:
        pytest.skip("detectron2 was not installed from the sal-detectron2 wheel")
    stray = [str(f) for f in dist.files or [] if f.parts[0] == "tools" and os.path.exists(f.locate())]
    assert stray == []


def test_detectron2_modules_used_here_import():
    for name in ("detectron2.config", "detectron2.engine", "detectron2.evaluation", "detectron2.modeling"):
        importlib.import_module(name)


def test_ops_of_mask_rcnn_run_without_compiled_detectron2_ops():
    """ROIAlign and NMS come from torchvision, so Mask R-CNN needs no detectron2._C."""
    import torch
    from detectron2.layers import ROIAlign, batched_nms

    features = torch.arange(16.0).reshape(1, 1, 4, 4)
    pooled = ROIAlign((1, 1), spatial_scale=1.0, sampling_ratio=1, aligned=True)(
        features, torch.tensor([[0, 0, 0, 4, 4.0]])
    )
    assert pooled.item() == features.mean().item()
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30.0]])
    keep = batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3, dtype=torch.long), 0.5)
    assert keep.tolist() == [0, 2]
