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


class _Stop(Exception):
    """Raised in place of training: the test only looks at what the demo hands to train_net."""


@pytest.mark.parametrize(
    ("flag", "cuda", "expected"),
    [("cpu", False, "cpu"), ("cpu", True, "cpu"), ("auto", False, "cpu"), ("auto", True, "cuda")],
)
def test_demo_device_flag_reaches_the_config(flag, cuda, expected, synthetic_root, tmp_path, monkeypatch, capsys):
    import torch

    from projects.detection import demo

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    seen = {}

    def fake_train(args):
        seen["opts"] = args.opts
        raise _Stop

    monkeypatch.setattr(train_net, "main", fake_train)
    with pytest.raises(_Stop):
        demo.main(["--device", flag, "--root", synthetic_root, "--output", str(tmp_path / "out"), "--max-iter", "2"])
    assert f"train.device={expected}" in seen["opts"]
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"Device: {expected}") and (flag in line), line


@pytest.mark.parametrize("value", ["tpu", "cuda"])
def test_demo_bad_device_is_one_line(value, monkeypatch, tmp_path, capsys):
    import torch

    from mvit.errors import run_cli
    from projects.detection import demo

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # no GPU: cuda is refused
    argv = ["--device", value, "--root", str(tmp_path / "never_made")]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: demo.main(argv) and 0)  # as the script's __main__ does
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "--device" in lines[0]
    assert not (tmp_path / "never_made").exists()  # refused before generating data
