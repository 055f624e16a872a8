"""tools/predict.py with a detection LazyConfig: COCO-style json and drawn pictures for a user's images."""

import json
import os
import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("detectron2.engine", reason="detectron2 is not installed (bash tools/install_detectron2.sh)")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402

from projects.detection.data.synthetic_coco import CATEGORIES, dataset_paths  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
DEMO = os.path.join(ROOT, "projects", "detection", "configs", "mask_rcnn_mvitv2_demo_synthetic.py")
sys.path.insert(0, os.path.join(ROOT, "tools"))  # tools/ is a folder of scripts, not a package
import predict  # noqa: E402

sys.path.pop(0)


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory) -> str:
    """Random weights of the demo detector (seeded), in the .pth layout train_net writes."""
    from detectron2.config import LazyConfig, instantiate

    torch.manual_seed(0)
    model = instantiate(LazyConfig.load(DEMO).model)
    path = str(tmp_path_factory.mktemp("det") / "model_final.pth")
    torch.save({"model": model.state_dict(), "iteration": 0}, path)
    return path


def _error_line(argv, capsys) -> str:
    from mvit.errors import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: predict.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_detection_predict_writes_coco_json_and_pictures(synthetic_root, demo_checkpoint, tmp_path, capsys):
    images = tmp_path / "photos"
    images.mkdir()
    for source in sorted(dataset_paths(synthetic_root, "val")[1].iterdir())[:2]:
        shutil.copy(source, images)
    one = sorted(images.iterdir())[0]
    out = tmp_path / "pred"
    # A folder and a file after --opts (a key=value override, then a file).
    argv = [
        "--config-file", DEMO, "--checkpoint", demo_checkpoint, "--device", "cpu", "--score-threshold", "0.0",
        "--output", str(out), str(images), "--opts", "model.roi_heads.box_predictor.test_topk_per_image=5", str(one),
    ]  # fmt: skip
    assert predict.main(argv) == 0
    stdout = capsys.readouterr().out
    assert "Device: cpu (--device cpu)" in stdout and f"Weights: {demo_checkpoint} (detectron2 format" in stdout

    files = sorted(str(p) for p in images.iterdir()) + [str(one)]
    results = json.loads((out / "predictions.json").read_text())
    assert results and {r["image_id"] for r in results} <= set(range(len(files)))
    names = {int(c["id"]): c["name"] for c in CATEGORIES}
    for r in results:
        assert set(r) == {"image_id", "file_name", "category_id", "category_name", "bbox", "score", "segmentation"}
        assert r["file_name"] == files[r["image_id"]] and names[r["category_id"]] == r["category_name"]
        assert len(r["bbox"]) == 4 and r["bbox"][2] >= 0 and r["bbox"][3] >= 0 and 0.0 <= r["score"] <= 1.0
        with Image.open(r["file_name"]) as image:
            size = [image.height, image.width]
        assert r["segmentation"]["size"] == size and mask_utils.decode(r["segmentation"]).shape == tuple(size)
    per_image = [sum(r["image_id"] == i for r in results) for i in range(len(files))]
    assert max(per_image) <= 5  # the override reached the model
    # pycocotools reads the file as a results file of a COCO set with these images
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {
        "images": [{"id": i, "height": 128, "width": 128} for i in range(len(files))],
        "annotations": [],
        "categories": [dict(c) for c in CATEGORIES],
    }
    gt.createIndex()
    assert len(gt.loadRes(str(out / "predictions.json")).getAnnIds()) == len(results)

    # One picture per input (the repeated name gets a suffix), readable, at the input's size.
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert len(pictures) == len(files) and f"{one.stem}_1.png" in pictures
    with Image.open(one) as source, Image.open(out / f"{one.stem}.png") as drawn:
        assert drawn.size == source.size
        assert not np.array_equal(np.asarray(drawn.convert("RGB")), np.asarray(source.convert("RGB")))


def test_detection_predict_names_classes_from_a_coco_json(synthetic_root, demo_checkpoint, tmp_path, capsys):
    data = json.loads(dataset_paths(synthetic_root, "train")[0].read_text())
    data["categories"] = [{"id": 10 + c["id"], "name": f"kind{c['id']}"} for c in data["categories"]]
    (tmp_path / "train.json").write_text(json.dumps({**data, "annotations": []}))
    image = str(sorted(dataset_paths(synthetic_root, "val")[1].iterdir())[0])
    out = tmp_path / "pred"
    argv = ["--cfg", DEMO, "--checkpoint", demo_checkpoint, image, "--output", str(out), "--score-threshold", "0"]
    assert predict.main([*argv, "--categories-json", str(tmp_path / "train.json")]) == 0
    results = json.loads((out / "predictions.json").read_text())
    assert results and {(r["category_id"], r["category_name"]) for r in results} <= {
        (11, "kind1"),
        (12, "kind2"),
        (13, "kind3"),
    }

    # Bad input: one line each, exit 2.
    assert "missing.jpg: file not found" in _error_line([*argv[:-4], str(tmp_path / "missing.jpg")], capsys)
    assert "--device" in _error_line([*argv, "--device", "tpu"], capsys)
    if not torch.cuda.is_available():
        assert "--device cuda: torch sees no GPU" in _error_line([*argv, "--device", "cuda"], capsys)
    assert "a detector needs --checkpoint" in _error_line(["--cfg", DEMO, image], capsys)
    data["categories"] = data["categories"][:2]
    (tmp_path / "two.json").write_text(json.dumps(data))
    line = _error_line([*argv, "--categories-json", str(tmp_path / "two.json")], capsys)
    assert "has 2 categories but the model" in line
    torch.save({"model": {"backbone.bottom_up.patch_embed.proj.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    line = _error_line([*argv[:3], str(tmp_path / "bad.pth"), *argv[4:]], capsys)
    assert "bad.pth: does not hold this detector" in line
