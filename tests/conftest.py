"""Shared test setup: the repo root on sys.path (for ``projects``), deterministic and small CPU runs."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("MVIT_TEST_THREADS", "2")))
    yield
