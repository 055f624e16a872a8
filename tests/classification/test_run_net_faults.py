"""run_net's answer to training faults: a locked OUTPUT_DIR and a diverging loss are one line and exit code 2."""

from __future__ import annotations

import os
import re

from mvit.runtime.lock import LOCK_NAME, OutputDirLock


def test_second_run_on_one_output_dir_is_refused(tiny_cfg, image_tree, tmp_path, run_net_main, run_net_argv, capsys):
    out = tmp_path / "out"
    with OutputDirLock(str(out)):
        # An official key that the config loader reports: its line must not go to the other run's log.txt.
        assert run_net_main(run_net_argv(tiny_cfg, image_tree, out, "TENSORBOARD.ENABLE", True)) == 2
        assert os.listdir(out) == [LOCK_NAME]  # nothing written before the refusal
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: OUTPUT_DIR {out} is in use by another run (host ")
    assert f"pid {os.getpid()}, started " in err[0]


def test_diverging_loss_stops_with_one_line_and_writes_no_checkpoint(
    tiny_cfg, image_tree, tmp_path, run_net_main, run_net_argv, capsys
):
    out = tmp_path / "out"
    argv = run_net_argv(tiny_cfg, image_tree, out, "SOLVER.BASE_LR", 1e30, "MIXUP.ENABLE", False)
    assert run_net_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    pattern = r"error: loss is nan at epoch 1 iteration \d/6 \(step \d\); last good checkpoint: no checkpoint yet; "
    assert re.match(pattern, err[0]), err[0]
    assert not (out / "checkpoints").exists() and not (out / LOCK_NAME).exists()
