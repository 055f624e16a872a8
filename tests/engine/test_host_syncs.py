"""Host reads of tensor values in training steps (issue 19, item 9): counted on the CPU with a TorchFunctionMode.

On a GPU each read (``.item()``, ``float()``, ``int()``, ``bool()``, ``.tolist()``, ``.cpu()``, ``.numpy()``) makes
the CPU wait until the GPU has run everything queued. Left out of the count: reads inside ``torch.optim`` (its step
counters are CPU tensors on a GPU run unless ``capturable``) and inside the data pipeline (CPU tensors by design).
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

from mvit.data import build_loader
from mvit.engine import hooks as H
from mvit.engine.trainer import ClassificationTrainer
from mvit.utils.rng import seed_all

from .conftest import NoisyImages, TinyNet, small_cfg

READS = {"item", "__float__", "__int__", "__bool__", "__index__", "tolist", "cpu", "numpy"}
HOST_SIDE = ("/torch/optim/", "/torch/utils/data/", "/mvit/engine/data.py", "/mvit/data/")


class HostReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in READS:
            frame, host_side = sys._getframe(1), False
            while frame is not None and not host_side:
                host_side = any(part in frame.f_code.co_filename for part in HOST_SIDE)
                frame = frame.f_back
            self.count += not host_side
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("accum", [1, 2])
def test_a_training_step_reads_the_device_once_plus_once_per_log_window(tmp_path, monkeypatch, accum):
    monkeypatch.setattr(H, "plot_curves", lambda *_: None)
    steps, period = 8, 4
    cfg = small_cfg(**{"SOLVER.MAX_EPOCH": 1})
    seed_all(0)
    model = TinyNet()
    loader = build_loader(NoisyImages(4 * steps), batch_size=4 // accum, train=True, seed=0)
    trainer = ClassificationTrainer(
        cfg, model, loader, device=torch.device("cpu"), items_per_batch=4 // accum, accum_steps=accum
    )
    writer = H.MetricsWriter(str(tmp_path), period=period, tensorboard=False)
    trainer.register_hooks([H.LRScheduler(), H.EMA(model, decay=0.9), writer])
    reads = HostReads()
    with reads:
        trainer.train()
    assert trainer.step == steps
    windows, epochs = steps // period, 1
    # One read per step (the loss-finiteness decision, carrying the losses and top-1 counts), one per log window
    # and one per epoch end (the meters' sums); it was 4 per step plus 2 per micro-batch of accumulation before.
    assert reads.count <= steps + 2 * (windows + epochs), reads.count
