"""The fake-CUDA layer: CUDA code paths run on the CPU with fake tensors (shapes, dtypes and devices, no data).

How (torch 2.14, no GPU; details in :mod:`mvit.utils.fake_cuda`): models are built on the meta device and given
fake ``cuda`` parameters (``fake_cuda_module``); ``torch.autocast("cuda")`` is enabled by patching its two
availability checks (``fake_cuda_autocast``); SDPA is answered by the flash / memory-efficient kernels' ops as a GPU
would pick them (``gpu_sdpa``); ``DeviceCheckMode`` records any op that sees a tensor off the GPU. Backward cannot
run on fake CUDA tensors (the autograd engine asks the driver for a context), so it runs on the meta device.
"""

from __future__ import annotations

import pytest
from torch._subclasses.fake_tensor import FakeTensorMode


@pytest.fixture
def fake_mode() -> FakeTensorMode:
    """A fresh ``FakeTensorMode`` (real tensors are refused as inputs: every tensor must be made fake on purpose)."""
    return FakeTensorMode(allow_non_fake_inputs=False)
