"""Shared test setup: the repo root on sys.path (for ``projects``), deterministic and small CPU runs."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _perturb(model, scale: float = 0.02):
    """Add noise to every parameter in place, so that zero-initialised tables and biases take part."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


@pytest.fixture(scope="session")
def perturb():
    """``perturb(model, scale=0.02) -> model``, the parameters moved by Gaussian noise in place."""
    return _perturb


@pytest.fixture(autouse=True)
def _seed_and_threads():
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("MVIT_TEST_THREADS", "2")))
    yield
