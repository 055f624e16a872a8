"""Fixtures of the classification tests: a generated image folder tree and a tiny run_net config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]

CLASSES = ("circle", "square", "stripes")

# A 2-block MViTv2 on 16x16 images (8x8 tokens, then 4x4): seconds per epoch on one CPU thread.
TINY_YAML = """\
# The CPU runs of the tests: NUM_GPUS processes on the CPU (a GPU config stops with one line where CUDA is missing).
DEVICE: cpu
MVIT:
  PATCH_KERNEL: [3, 3]
  PATCH_STRIDE: [2, 2]
  PATCH_PADDING: [1, 1]
  EMBED_DIM: 8
  NUM_HEADS: 1
  DEPTH: 2
  DIM_MUL: [[1, 2.0]]
  HEAD_MUL: [[1, 2.0]]
  POOL_Q_STRIDE: [[1, 2, 2]]
  POOL_KV_STRIDE_ADAPTIVE: [2, 2]
  DROPPATH_RATE: 0.1
MODEL:
  NUM_CLASSES: 3
DATA:
  TRAIN_CROP_SIZE: 16
  TEST_CROP_SIZE: 16
  VAL_CROP_RATIO: 1.0
TRAIN:
  BATCH_SIZE: 4
  EVAL_PERIOD: 1
  CHECKPOINT_PERIOD: 1
  TENSORBOARD: False
TEST:
  BATCH_SIZE: 4
AUG:
  AA_TYPE: rand-m9-n2-mstd0.5-inc1
  RE_PROB: 0.25
MIXUP:
  ENABLE: True
SOLVER:
  BASE_LR: 0.01
  BASE_LR_BATCH_SIZE: 0
  WARMUP_EPOCHS: 1.0
  MAX_EPOCH: 2
DATA_LOADER:
  NUM_WORKERS: 0
  PIN_MEMORY: False
LOG_PERIOD: 2
CPU_THREADS: 1
"""


def _image(label: int, rng: np.random.Generator, size: int = 20) -> Image.Image:
    """A noisy drawing of the class's shape, so a model can tell the classes apart."""
    yy, xx = np.mgrid[:size, :size] / size
    if label == 0:
        mask = (xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.1
    elif label == 1:
        mask = (abs(xx - 0.5) < 0.3) & (abs(yy - 0.5) < 0.3)
    else:
        mask = (xx * 6).astype(int) % 2 == 0
    img = mask[..., None] * np.array([200, 80, 40]) + rng.integers(0, 50, (size, size, 3))
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def make_image_tree(root: Path, train_per_class: int = 8, val_per_class: int = 5, seed: int = 0) -> Path:
    """``root/{train,val}/<class>/*.png`` (formats mixed: png and jpg) and return ``root``."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                ext = "jpg" if i % 3 == 2 else "png"
                _image(label, rng).save(folder / f"{i:03d}.{ext}")
    return root


@pytest.fixture
def image_tree(tmp_path) -> Path:
    """A fresh tree per test (tests may damage it): 3 classes, 24 train and 15 val images."""
    return make_image_tree(tmp_path / "data")


@pytest.fixture
def tiny_cfg(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_YAML)
    return path


class RunNet:
    """``tools/run_net.py`` in subprocesses of this interpreter (one CPU thread each)."""

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    @staticmethod
    def cmd(cfg: Path, *opts: object) -> list[str]:
        return [sys.executable, str(ROOT / "tools" / "run_net.py"), "--cfg", str(cfg), *map(str, opts)]

    def __call__(self, cfg: Path, *opts: object, timeout: float = 240) -> subprocess.CompletedProcess:
        """Run to completion; returns the completed process (stdout / stderr captured as text)."""
        return subprocess.run(
            self.cmd(cfg, *opts), cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def popen(self, cfg: Path, *opts: object, log: Path) -> subprocess.Popen:
        """Start without waiting; stdout and stderr go to ``log``."""
        with open(log, "w") as f:
            return subprocess.Popen(self.cmd(cfg, *opts), cwd=ROOT, env=self.env, stdout=f, stderr=subprocess.STDOUT)


@pytest.fixture
def run_net() -> RunNet:
    return RunNet()


def make_run_net_argv(cfg: Path, data: Path, out: Path, *opts: object) -> list[str]:
    """run_net's command line in a test: ``cfg`` on ``data`` into ``out``, then ``KEY VALUE`` overrides.
    ``--stop-signals none``: in-process runs leave pytest's signal handlers alone."""
    return [
        "--cfg", str(cfg), "--stop-signals", "none",
        "DATA.PATH_TO_DATA_DIR", str(data), "OUTPUT_DIR", str(out), *map(str, opts),
    ]  # fmt: skip


@pytest.fixture
def run_net_argv():
    return make_run_net_argv


@pytest.fixture
def run_net_main():
    """``tools/run_net.py``'s ``main`` imported by path (in-process runs)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_net", ROOT / "tools" / "run_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="session")
def helpers() -> SimpleNamespace:
    """The module's helpers for fixtures of wider scope: ``make_image_tree``, ``tiny_yaml``, ``RunNet``."""
    return SimpleNamespace(make_image_tree=make_image_tree, tiny_yaml=TINY_YAML, RunNet=RunNet)
