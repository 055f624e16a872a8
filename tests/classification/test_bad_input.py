"""Bad input: unreadable files are logged and skipped; bad folders, configs and keys are one-line errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_files_that_are_not_images_are_named_in_the_log_and_skipped(
    image_tree, tiny_cfg, run_net_main, tmp_path, run_net_argv
):
    (image_tree / "train" / "circle" / "notes.txt").write_text("not an image")
    (image_tree / "train" / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (image_tree / "val" / "stripes" / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    # every image is read at least once in an epoch, and the last val item is the empty file
    assert run_net_main(run_net_argv(tiny_cfg, image_tree, out, "SOLVER.MAX_EPOCH", 1, "AUG.NUM_SAMPLE", 1)) == 0
    log = (out / "log.txt").read_text()
    assert "not images" in log and "notes.txt" in log
    assert "cannot read image" in log and "broken.png" in log and "empty.jpg" in log
    assert '"split": "test"' in (out / "metrics.jsonl").read_text()


@pytest.mark.parametrize("case", ["empty", "missing", "no_val_class", "no_images"])
def test_bad_data_folders_are_one_line_errors(case, image_tree, tiny_cfg, run_net_main, tmp_path, capsys, run_net_argv):
    data = image_tree
    if case == "empty":
        data = tmp_path / "empty"
        data.mkdir()
    elif case == "missing":
        data = tmp_path / "does-not-exist"
    elif case == "no_val_class":
        shutil.rmtree(image_tree / "val" / "stripes")
    else:
        for f in (image_tree / "train" / "square").iterdir():
            f.unlink()
    assert run_net_main(run_net_argv(tiny_cfg, data, tmp_path / "out")) == 2
    err = _one_line_error(capsys)
    expected = {"empty": str(data), "missing": str(data), "no_val_class": "'stripes'", "no_images": "square"}[case]
    assert expected in err


def test_config_errors_are_one_line(image_tree, tiny_cfg, run_net_main, tmp_path, capsys, run_net_argv):
    assert run_net_main(["--cfg", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in _one_line_error(capsys)
    assert run_net_main(run_net_argv(tiny_cfg, image_tree, tmp_path / "o", "TRAIN.NO_SUCH_KEY", 1)) == 2
    assert "TRAIN.NO_SUCH_KEY" in _one_line_error(capsys)
    assert run_net_main(run_net_argv(tiny_cfg, image_tree, tmp_path / "o", "MODEL.NUM_CLASSES", 2)) == 2
    assert "MODEL.NUM_CLASSES" in _one_line_error(capsys)
    assert run_net_main(run_net_argv(tiny_cfg, image_tree, tmp_path / "o", "TRAIN.BATCH_SIZE", 3)) == 2
    assert "even" in _one_line_error(capsys)


def test_an_unknown_dataset_is_a_config_error_naming_the_key(run_net_main, tmp_path, capsys):
    """A misspelt TRAIN.DATASET was a KeyError traceback (exit 1) once the job started; now one line at load."""
    argv = ["tools/run_net.py", "--cfg", "configs/DEMO/MVITv2_digits.yaml", "TRAIN.DATASET", "imagenett"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, *argv, "OUTPUT_DIR", str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: TRAIN.DATASET: "), proc.stderr
    assert "'imagenett'" in lines[0] and "did you mean 'imagenet'?" in lines[0]
    assert not (tmp_path / "out").exists()  # refused before anything was written
    # The test set's key when only testing.
    opts = ["TRAIN.ENABLE", "False", "TEST.DATASET", "ssv3", "OUTPUT_DIR", str(tmp_path / "out")]
    assert run_net_main(["--cfg", str(ROOT / "configs/DEMO/MVITv2_digits.yaml"), *opts]) == 2
    err = _one_line_error(capsys)
    assert err.startswith("error: TEST.DATASET: ") and "did you mean 'ssv2'?" in err
