"""The digits demo end to end (prepare, train, evaluate, save, predict) and tools/predict.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torchvision.models import ResNet50_Weights

from mvit import create_model
from mvit.checkpoint import save_weights
from mvit.checkpoint.hub import MIRROR_ENV
from mvit.config import load_config
from mvit.models import MViT
from mvit.models.weights import get_weights

DEMO = "configs/DEMO/MVITv2_digits.yaml"


def _predict(helpers, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    runner = helpers.RunNet()
    cmd = [sys.executable, "tools/predict.py", *map(str, args)]
    return subprocess.run(
        cmd,
        cwd=runner.env["PYTHONPATH"],
        env={**runner.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _results(stdout: str) -> list[str]:
    """The per-file lines of predict's output, after its device and weights lines."""
    lines = stdout.splitlines()
    assert lines[0].startswith("Device: cpu") and lines[1].startswith("Weights: "), stdout
    return lines[2:]


def test_prepare_digits_writes_a_stratified_folder_tree(tmp_path):
    from sklearn.datasets import load_digits

    sys.path.insert(0, "tools")
    try:
        from prepare_digits import prepare_digits
    finally:
        sys.path.remove("tools")
    counts = prepare_digits(str(tmp_path), val_fraction=0.2, seed=0, progress=False)
    assert counts == {"train": 1437, "val": 360}
    target = load_digits().target
    for split in ("train", "val"):
        folders = sorted(p.name for p in (tmp_path / split).iterdir())
        assert folders == [str(d) for d in range(10)]
    for d in range(10):  # stratified: each class keeps its share in val
        n_val = len(list((tmp_path / "val" / str(d)).glob("*.png")))
        assert abs(n_val - 0.2 * (target == d).sum()) <= 1
    assert prepare_digits(str(tmp_path), progress=False) == counts  # complete tree: left as it is


@pytest.mark.slow
def test_digits_demo_reaches_90_percent_and_predicts(tmp_path, helpers):
    data, out = tmp_path / "digits", tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "tools/prepare_digits.py", "--out", str(data)],
        cwd=helpers.RunNet.env["PYTHONPATH"],
        env=helpers.RunNet.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    done = helpers.RunNet()(DEMO, "DATA.PATH_TO_DATA_DIR", data, "OUTPUT_DIR", out, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    test = [r for r in records if r["split"] == "test"][-1]
    assert test["num_samples"] == 360 and test["top1"] >= 90.0, test
    assert (out / "curves.png").exists()

    images = [sorted((data / "val" / str(d)).glob("*.png"))[0] for d in range(10)]
    pred = _predict(helpers, "--cfg", DEMO, "--checkpoint", out / "checkpoints" / "last.pyth", *images)
    assert pred.returncode == 0, pred.stderr
    top1 = [line.split()[2] for line in pred.stdout.splitlines() if line.strip().startswith("1.")]
    assert len(top1) == 10 and sum(t == str(d) for d, t in enumerate(top1)) >= 8, pred.stdout


def test_predict_names_classes_from_the_checkpoint_and_imagenet(
    image_tree, tiny_cfg, run_net_main, tmp_path, helpers, run_net_argv
):
    out = tmp_path / "out"
    argv = run_net_argv(tiny_cfg, image_tree, out, "SOLVER.MAX_EPOCH", 1, "TEST.ENABLE", False)
    assert run_net_main(argv) == 0
    image = sorted((image_tree / "val" / "square").iterdir())[0]
    pred = _predict(helpers, "--cfg", tiny_cfg, "--checkpoint", out / "checkpoints" / "last.pyth", image)
    assert pred.returncode == 0, pred.stderr
    lines = _results(pred.stdout)
    assert lines[0] == str(image) and len(lines) == 4  # 3 classes: top-3 only
    assert {line.split()[2] for line in lines[1:]} == {"circle", "square", "stripes"}

    # A 1000-class image model in another weights format: ImageNet's class names.
    cfg = load_config(str(tiny_cfg), ["MODEL.NUM_CLASSES", "1000"], freeze=False)
    model = create_model(cfg)
    torch.nn.init.normal_(model.head.projection.weight, std=1.0)
    save_weights(model, str(tmp_path / "w.pyth"))
    pred = _predict(
        helpers, "--cfg", tiny_cfg, "--checkpoint", tmp_path / "w.pyth", image, "--opts", "MODEL.NUM_CLASSES", "1000"
    )
    assert pred.returncode == 0, pred.stderr
    imagenet = ResNet50_Weights.IMAGENET1K_V2.meta["categories"]
    names = [line.split("%", 1)[1].strip().rsplit(" (", 1)[0] for line in _results(pred.stdout)[1:]]
    assert len(names) == 5 and all(n in imagenet for n in names)

    # The data set's own names come before the released set's: a classes.txt of 1000 names.
    (image_tree / "classes.txt").write_text("".join(f"kind{i}\n" for i in range(1000)))
    pred = _predict(
        helpers, "--cfg", tiny_cfg, "--checkpoint", tmp_path / "w.pyth", image,
        "--opts", "MODEL.NUM_CLASSES", "1000", "DATA.PATH_TO_DATA_DIR", image_tree,
    )  # fmt: skip
    assert pred.returncode == 0, pred.stderr
    assert all(line.split("%", 1)[1].strip().startswith("kind") for line in _results(pred.stdout)[1:])

    bad = _predict(helpers, "--cfg", tiny_cfg, "--checkpoint", tmp_path / "w.pyth", tmp_path / "missing.png")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and "missing.png" in bad.stderr


def test_predict_pretrained_reads_the_release_from_the_cache(image_tree, tiny_cfg, tmp_path, helpers):
    # No network: the release is placed in torch.hub's cache under its official name, as a user would.
    env = {"TORCH_HOME": str(tmp_path / "torch"), MIRROR_ENV: "http://127.0.0.1:9"}
    weights = get_weights("mvitv2_t.fb_in1k")
    model = MViT(create_model("mvitv2_t").config)
    target = os.path.join(env["TORCH_HOME"], "hub", "checkpoints", weights.file_name)  # torch.hub's layout
    os.makedirs(os.path.dirname(target), exist_ok=True)
    torch.save({"model_state": model.state_dict()}, target)
    image = sorted((image_tree / "val" / "square").iterdir())[0]
    pred = _predict(helpers, "--cfg", "configs/IN1K/MVITv2_T.yaml", "--pretrained", image, env=env)
    assert pred.returncode == 0, pred.stderr
    names = [line.split("%", 1)[1].strip().rsplit(" (", 1)[0] for line in _results(pred.stdout)[1:]]
    assert len(names) == 5 and all(n in ResNet50_Weights.IMAGENET1K_V2.meta["categories"] for n in names)

    # Without the file and without a network: one line naming the URL and where to put the file.
    os.remove(target)
    offline = _predict(helpers, "--cfg", "configs/IN1K/MVITv2_T.yaml", "--pretrained", image, env=env)
    assert offline.returncode == 2 and "Traceback" not in offline.stderr
    assert offline.stderr.count("\n") == 1 and target in offline.stderr and "MViTv2_T_in1k.pyth" in offline.stderr

    # A config without MVIT.ARCH names no release.
    no_arch = _predict(helpers, "--cfg", tiny_cfg, "--pretrained", image, env=env)
    assert no_arch.returncode == 2 and "--pretrained needs MVIT.ARCH" in no_arch.stderr
