"""Bad and unusual image files: each loads right, or is named in the log and replaced, or stops the run with one
line naming the folder or file (see the docstring of projects/classification/data.py)."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mvit.config import load_config
from mvit.errors import DataError
from projects.classification import add_classification_config
from projects.classification.data import ImageFolder, build_transform, load_image

ORIENTATION = 0x0112  # the EXIF tag


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def _save(image: Image.Image, path, **kw) -> str:
    image.save(path, **kw)
    return str(path)


@pytest.mark.parametrize(
    "mode, pixel, expected",
    [
        ("L", 100, (100, 100, 100)),
        ("LA", (100, 0), (100, 100, 100)),
        ("RGBA", (10, 20, 30, 0), (10, 20, 30)),  # alpha dropped, as timm's loader does
        ("P", None, (255, 0, 0)),
        ("I;16", 40000, (156, 156, 156)),  # 16-bit scaled to 8 bits (Pillow alone clips it to 255)
        ("RGB", (1, 2, 3), (1, 2, 3)),
    ],
)
def test_image_modes_load_as_8_bit_rgb(mode, pixel, expected, tmp_path):
    if mode == "P":
        image = Image.new("RGB", (5, 4), (255, 0, 0)).convert("P")
    elif mode == "I;16":
        image = Image.fromarray(np.full((4, 5), pixel, np.uint16))
        assert image.mode == "I;16"
    else:
        image = Image.new(mode, (5, 4), pixel)
    loaded = load_image(_save(image, tmp_path / "x.png"))
    assert loaded.mode == "RGB" and loaded.size == (5, 4)
    assert loaded.getpixel((2, 2)) == expected


def test_cmyk_jpeg_and_1x1_images_go_through_both_transforms(tmp_path):
    cfg = load_config(
        None, ["DATA.TRAIN_CROP_SIZE", "16", "DATA.TEST_CROP_SIZE", "16"], extensions=[add_classification_config]
    )
    train, test = build_transform(cfg, is_training=True), build_transform(cfg, is_training=False)
    for image, name in ((Image.new("CMYK", (7, 9), (0, 255, 255, 0)), "cmyk.jpg"), (Image.new("RGB", (1, 1)), "1.png")):
        loaded = load_image(_save(image, tmp_path / name))
        assert loaded.mode == "RGB"
        for _ in range(5):  # random crops and RandAugment ops of every kind on a tiny image
            assert train(loaded).shape == test(loaded).shape == (3, 16, 16)
    assert load_image(str(tmp_path / "cmyk.jpg")).getpixel((3, 4))[0] > 200  # CMYK (0, 255, 255, 0) is red


@pytest.mark.parametrize(
    "orientation, size, red_corner", [(1, (8, 4), (0, 0)), (6, (4, 8), (3, 0)), (3, (8, 4), (7, 3))]
)
def test_exif_orientation_is_applied(orientation, size, red_corner, tmp_path):
    """A camera stores the sensor's pixels and the way to turn them upright; the loader turns them."""
    pixels = np.zeros((4, 8, 3), np.uint8)
    pixels[:2, :2] = (255, 0, 0)  # red in the stored top-left corner
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    path = _save(Image.fromarray(pixels), tmp_path / "photo.jpg", exif=exif.tobytes(), quality=100, subsampling=0)
    loaded = load_image(path)
    assert loaded.size == size
    red = np.asarray(loaded)[..., 0] > 128
    assert red[red_corner[1], red_corner[0]] and red.sum() in range(3, 6), red.astype(int)


def test_undecodable_files_are_named_and_replaced_by_the_next_image(image_tree, caplog):
    folder = image_tree / "train" / "circle"
    jpeg = io.BytesIO()
    Image.open(folder / "000.png").save(jpeg, "JPEG")
    (folder / "000.png").write_bytes(b"plain text in a file named .png\n")
    (folder / "001.png").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])  # a truncated JPEG
    caplog.set_level(logging.WARNING)
    dataset = ImageFolder(str(image_tree / "train"))
    image, label, index = dataset[0]
    assert image.tobytes() == load_image(str(folder / "002.jpg")).tobytes() and (label, index) == (0, 0)
    for name in ("000.png", "001.png"):
        assert f"cannot read image, using the next one: {folder / name}: not a readable image" in caplog.text


def test_a_folder_of_undecodable_files_stops_with_one_line(tmp_path):
    (tmp_path / "a").mkdir()
    for i in range(3):
        (tmp_path / "a" / f"{i}.jpg").write_bytes(b"")
    dataset = ImageFolder(str(tmp_path))
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path))}: 50 images in a row could not be read"):
        dataset[1]


@pytest.mark.parametrize("case", ["val_class_not_in_train", "empty_val_class_folder"])
def test_class_folders_that_do_not_match_are_one_line(
    case, image_tree, tiny_cfg, run_net_main, tmp_path, capsys, run_net_argv
):
    if case == "val_class_not_in_train":
        (image_tree / "val" / "triangle").mkdir()
        Image.new("RGB", (20, 20)).save(image_tree / "val" / "triangle" / "0.png")
        expected = f"{image_tree / 'val'}: class folder 'triangle' is not a class of train/"
    else:
        for f in (image_tree / "val" / "square").iterdir():
            f.unlink()
        expected = f"{image_tree / 'val' / 'square'}: class folder has no images"
    assert run_net_main(run_net_argv(tiny_cfg, image_tree, tmp_path / "out")) == 2
    assert expected in _one_line_error(capsys)


@pytest.fixture
def image_checkpoint(tiny_cfg, tmp_path) -> str:
    from mvit import create_model
    from mvit.checkpoint import save_weights

    path = str(tmp_path / "tiny.pyth")
    save_weights(create_model(load_config(str(tiny_cfg), [], extensions=[add_classification_config])), path)
    return path


@pytest.mark.parametrize("case", ["text_named_jpg", "truncated_jpeg", "missing"])
def test_predict_names_a_file_that_is_not_an_image(case, tiny_cfg, image_checkpoint, tmp_path, helpers):
    path = tmp_path / f"{case}.jpg"
    if case == "text_named_jpg":
        path.write_text("a text file named .jpg\n")
    elif case == "truncated_jpeg":
        jpeg = io.BytesIO()
        Image.new("RGB", (64, 64), (9, 9, 9)).save(jpeg, "JPEG")
        path.write_bytes(jpeg.getvalue()[:300])
    cmd = [sys.executable, "tools/predict.py", "--cfg", str(tiny_cfg), "--checkpoint", image_checkpoint, str(path)]
    env = helpers.RunNet.env
    proc = subprocess.run(cmd, cwd=env["PYTHONPATH"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), proc.stderr[-3000:]
