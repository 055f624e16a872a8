"""Every zoo model on fake CUDA under autocast (train and eval, bf16 and fp16), backward on the meta device, and
the engine's training step (mixup, accumulation, clipping) with every tensor on the model's device."""

from __future__ import annotations

import functools
from unittest import mock

import pytest
import torch

import mvit
from mvit.data import build_loader
from mvit.engine.trainer import ClassificationTrainer
from mvit.models import MViT, MViTConfig
from mvit.models.zoo import model_info
from mvit.utils.fake_cuda import DeviceCheckMode, fake_cuda_autocast, fake_cuda_module, gpu_sdpa

from ..engine.conftest import small_cfg

ZOO = mvit.list_models()


# Each model runs in train and in eval mode, in bf16 in one and fp16 in the other, alternating over the zoo so that
# both dtypes meet both modes: the full 4-way product doubles the layer's time (~0.3 ms per faked op, 600k ops)
# without reaching code the half does not.
@pytest.mark.parametrize(
    "name, training, dtype",
    [
        (name, training, (torch.bfloat16, torch.float16)[(i + training) % 2])
        for i, name in enumerate(ZOO)
        for training in (True, False)
    ],
)
def test_zoo_forward_on_fake_cuda_under_autocast(fake_mode, name, training, dtype):
    config = model_info(name).build_config()
    model = fake_cuda_module(functools.partial(mvit.create_model, name), fake_mode).train(training)
    with fake_mode, gpu_sdpa(), fake_cuda_autocast(dtype), DeviceCheckMode("cuda") as check:
        x = torch.randn(2, 3, *config.input_size, device="cuda")
        with torch.set_grad_enabled(training):
            logits = model(x)
    assert check.strays == [], check.strays[:5]
    assert check.ops > 1000  # the model ran under the check
    assert logits.shape == (2, config.num_classes) and logits.device.type == "cuda"
    assert logits.dtype == dtype  # the head's linear layer ran under autocast
    assert logits.requires_grad == training


@pytest.mark.parametrize("name", ZOO)
def test_zoo_backward_on_meta(name):
    """Backward cannot run on fake CUDA tensors (the autograd engine asks the driver for a context): on meta."""
    config = model_info(name).build_config()
    with torch.device("meta"):
        model = mvit.create_model(name).train()
        x = torch.randn(2, 3, *config.input_size)
    model(x).float().logsumexp(1).mean().backward()  # a CPU tensor in the graph would raise here
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and p.grad.device.type == "meta", pname


def test_training_step_keeps_every_tensor_on_the_device(monkeypatch):
    """ClassificationTrainer.run_step with mixup (soft targets), 2 micro-batches and L2 clipping, model on the meta
    device standing in for a GPU: every op's tensors stay on the device except the loader's host-to-device copies.

    Mocked: ``Tensor.item`` / ``float()`` / ``tolist()`` of a meta tensor answer 1.0 (the trainer's one read per step
    and the grad-norm logging read values a meta tensor has not). Fake CUDA cannot run this step: no backward (see conftest).
    """
    cfg = small_cfg(**{"MIXUP.ENABLE": True, "SOLVER.CLIP_GRAD_L2NORM": 1.0, "MODEL.NUM_CLASSES": 3})
    with torch.device("meta"):
        model = MViT(MViTConfig.from_stages((1, 1, 1, 1), embed_dim=16, input_size=(32, 32), num_classes=3))
    dataset = [(torch.randn(3, 32, 32), i % 3, i) for i in range(8)]
    loader = build_loader(dataset, batch_size=2, train=True, seed=0)
    trainer = ClassificationTrainer(cfg, model, loader, device=torch.device("meta"), items_per_batch=2, accum_steps=2)
    real_item, real_float, real_tolist = torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.tolist

    def value(t, real):
        return 1.0 if t.device.type == "meta" else real(t)

    monkeypatch.setattr(torch.Tensor, "item", lambda t: value(t, real_item))
    monkeypatch.setattr(torch.Tensor, "__float__", lambda t: value(t, real_float))

    def ones(shape):  # nested lists as tolist() gives, built without a tensor op (the check mode sees those)
        return [ones(shape[1:]) for _ in range(shape[0])] if shape else 1.0

    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: ones(t.shape) if t.device.type == "meta" else real_tolist(t))
    trainer.start_epoch()
    trainer._data_iter = iter([next(trainer._data_iter) for _ in range(2)])  # loaded (on the CPU) before the check
    step = mock.patch.object(trainer.optimizer, "step", wraps=trainer.optimizer.step)
    with step as optimizer_step, DeviceCheckMode("meta") as check:
        trainer.run_step()
    host_to_device = [s for s in check.strays if s[0] == "aten._to_copy.default" and s[1] == ("cpu", "meta")]
    assert [s for s in check.strays if s not in host_to_device] == []
    assert len(host_to_device) == 4  # inputs and labels of 2 micro-batches
    assert optimizer_step.call_count == 1
    assert set(trainer.storage.last_values) == {"loss", "grad_norm"}


def test_device_check_reports_a_stray_cpu_tensor(fake_mode):
    """A 0-dim CPU tensor mixed into CUDA math is legal in torch (a host-to-device copy) but is reported."""
    with fake_mode, DeviceCheckMode("cuda") as check:
        x = torch.randn(4, device="cuda")
        x * torch.tensor(2.0)
    assert check.strays == [("aten.mul.Tensor", ("cpu", "cuda"))]
