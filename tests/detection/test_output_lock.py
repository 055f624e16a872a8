"""train_net.py takes its output_dir's lock before writing anything: a second training run there is refused."""

import os

import pytest

pytest.importorskip("detectron2.engine", reason="detectron2 is not installed (bash tools/install_detectron2.sh)")

from mvit.runtime.lock import LOCK_NAME, OutputDirLock, OutputDirLocked, release_held  # noqa: E402
from projects.detection import train_net  # noqa: E402

DEMO = os.path.join(
    os.path.dirname(__file__), "..", "..", "projects", "detection", "configs", "mask_rcnn_mvitv2_demo_synthetic.py"
)


def test_training_on_a_locked_output_dir_is_refused_before_writing(tmp_path):
    out = tmp_path / "run"
    args = train_net.parse_args(["--config-file", DEMO, f"train.output_dir={out}"])
    with OutputDirLock(str(out)):
        with pytest.raises(OutputDirLocked, match=f"OUTPUT_DIR {out} is in use by another run .*pid {os.getpid()}"):
            train_net.setup(args)
        assert os.listdir(out) == [LOCK_NAME]  # no log, no config.yaml
    try:
        train_net.setup(args)  # free again: taken, and held by this process
        with pytest.raises(OutputDirLocked):
            OutputDirLock(str(out)).acquire()
    finally:
        release_held(str(out))
    assert not (out / LOCK_NAME).exists()
