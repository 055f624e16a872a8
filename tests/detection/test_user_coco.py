"""Own COCO-format data through train_net.py's flags only: registered, categories from the json, heads sized."""

import json
import os
import shutil

import pytest

pytest.importorskip("detectron2.engine", reason="detectron2 is not installed (bash tools/install_detectron2.sh)")

import torch  # noqa: E402

from projects.detection import train_net  # noqa: E402
from projects.detection.data.synthetic_coco import dataset_paths  # noqa: E402

DEMO = os.path.join(
    os.path.dirname(__file__), "..", "..", "projects", "detection", "configs", "mask_rcnn_mvitv2_demo_synthetic.py"
)
# A user's own categories: other names, non-contiguous ids, and one without annotations (4 classes, not the
# demo config's 3), so that the head size can only come from the json.
RENAMED = {1: (7, "cat"), 2: (9, "dog"), 3: (12, "bird")}
UNUSED = {"id": 20, "name": "zebra"}


@pytest.fixture(scope="module")
def own_coco(tmp_path_factory, synthetic_root) -> dict:
    """The generated set copied to a layout of the user's choosing with the user's categories."""
    root = tmp_path_factory.mktemp("mine")
    files = {}
    for split in ("train", "val"):
        json_file, image_root = dataset_paths(synthetic_root, split)
        data = json.loads(json_file.read_text())
        data["categories"] = [{"id": RENAMED[c["id"]][0], "name": RENAMED[c["id"]][1]} for c in data["categories"]]
        data["categories"].append(UNUSED)
        if split == "val":  # 2 images: the final evaluation stays quick
            data["images"] = data["images"][:2]
            data["annotations"] = [a for a in data["annotations"] if a["image_id"] in {i["id"] for i in data["images"]}]
        for annotation in data["annotations"]:
            annotation["category_id"] = RENAMED[annotation["category_id"]][0]
        (root / f"{split}.json").write_text(json.dumps(data))
        shutil.copytree(image_root, root / "pictures" / split)
        files[split] = (str(root / f"{split}.json"), str(root / "pictures" / split))
    return files


def test_own_coco_json_trains_two_iterations_via_flags_only(own_coco, tmp_path):
    out = tmp_path / "run"
    argv = [
        "--config-file", DEMO,
        "--train-json", own_coco["train"][0], "--train-images", own_coco["train"][1],
        "--val-json", own_coco["val"][0], "--val-images", own_coco["val"][1],
        "--dataset-name", "test_own_coco",
        f"train.output_dir={out}",
        "train.max_iter=2",
        "train.eval_period=2",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "dataloader.train.total_batch_size=2",
    ]  # fmt: skip
    assert train_net.invoke_main(argv) == 0
    assert (out / "model_final.pth").is_file()
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    assert state["roi_heads.box_predictor.cls_score.weight"].shape[0] == 4 + 1  # + background
    assert state["roi_heads.mask_head.predictor.weight"].shape[0] == 4
    from detectron2.data import MetadataCatalog

    assert MetadataCatalog.get("test_own_coco_train").thing_classes == ["cat", "dog", "bird", "zebra"]
    assert MetadataCatalog.get("test_own_coco_val").json_file == os.path.abspath(own_coco["val"][0])
    config = (out / "config.yaml").read_text()
    assert "names: test_own_coco_train" in config and "dataset_name: test_own_coco_val" in config
    log = (out / "log.txt").read_text()
    assert "Evaluation results for bbox" in log and "4 categories (cat, dog, bird, zebra)" in log


@pytest.mark.parametrize("case", ["missing_json", "missing_images_flag", "bad_json", "other_categories"])
def test_bad_own_coco_input_is_one_line(case, own_coco, tmp_path, capsys):
    from mvit.errors import run_cli

    train_json, train_images = own_coco["train"]
    val_json = own_coco["val"][0]
    flags = ["--train-json", train_json, "--train-images", train_images]
    if case == "missing_json":
        flags[1] = expected = str(tmp_path / "nope.json")
    elif case == "missing_images_flag":
        flags, expected = flags[:2], "--train-json needs --train-images"
    elif case == "bad_json":
        flags[1] = expected = str(tmp_path / "broken.json")
        (tmp_path / "broken.json").write_text('{"images": [')
    else:  # a validation json with another category set than the training json
        data = json.loads(open(val_json).read())
        data["categories"][0]["name"] = "lion"
        (tmp_path / "val.json").write_text(json.dumps(data))
        flags += ["--val-json", str(tmp_path / "val.json"), "--val-images", own_coco["val"][1]]
        expected = "id 7 is 'lion' here, 'cat' there"
    argv = ["--config-file", DEMO, *flags, "--dataset-name", f"test_bad_{case}", f"train.output_dir={tmp_path / 'o'}"]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: train_net.invoke_main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not (tmp_path / "o").exists()  # refused before the run started
