"""train_net's log names the config file and where the full config is saved, without detectron2's colour dump of the
file (``--verbose`` keeps it)."""

import os

import pytest

pytest.importorskip("detectron2.engine", reason="detectron2 is not installed (bash tools/install_detectron2.sh)")

from detectron2.config import LazyConfig  # noqa: E402

from projects.detection import train_net  # noqa: E402

DEMO = os.path.join(
    os.path.dirname(__file__), "..", "..", "projects", "detection", "configs", "mask_rcnn_mvitv2_demo_synthetic.py"
)


@pytest.mark.parametrize("verbose", [False, True])
def test_the_log_names_the_config_instead_of_dumping_it_in_colour(tmp_path, verbose):
    args = train_net.parse_args(["--config-file", DEMO, *(["--verbose"] * verbose), f"train.output_dir={tmp_path}"])
    cfg = LazyConfig.apply_overrides(LazyConfig.load(DEMO), args.opts)
    train_net._default_setup(cfg, args)
    log = (tmp_path / "log.txt").read_text()
    assert f"Full config saved to {tmp_path / 'config.yaml'}" in log and (tmp_path / "config.yaml").is_file()
    assert ("Contents of args.config_file" in log) is verbose and ("\x1b[" in log) is verbose  # colour: ANSI codes
    assert (f"Config file: {DEMO} (its contents in the log: --verbose)" in log) is not verbose
