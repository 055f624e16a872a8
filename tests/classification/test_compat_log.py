"""What the config loader says about official MViTv2 / PySlowFast keys reaches the run's log file."""

from __future__ import annotations


def test_ignored_official_keys_are_listed_in_log_txt(image_tree, tiny_cfg, run_net_main, tmp_path, run_net_argv):
    out = tmp_path / "out"
    opts = ("TENSORBOARD.ENABLE", True, "LOG_MODEL_INFO", False, "SOLVER.MAX_EPOCH", 1, "TRAIN.EVAL_PERIOD", 0)
    assert run_net_main(run_net_argv(tiny_cfg, image_tree, out, *opts, "TEST.ENABLE", False)) == 0
    lines = (out / "log.txt").read_text().splitlines()
    listed = [line for line in lines if "accepted without effect here" in line]
    assert len(listed) == 1 and listed[0].endswith("LOG_MODEL_INFO, TENSORBOARD.ENABLE"), listed
    # Before the run's own lines, in the same file.
    assert lines.index(listed[0]) < next(i for i, line in enumerate(lines) if "batch: " in line)
