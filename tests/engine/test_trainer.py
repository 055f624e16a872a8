"""The trainer with a stand-in model: preemption and exact resume, accumulation, mixup targets, lr hook."""

from __future__ import annotations

import ast
import inspect
import math
import typing

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from mvit.checkpoint.state import find_resume_checkpoint
from mvit.data.loader import build_loader
from mvit.engine import hooks as H
from mvit.engine.train_loop import HookBase
from mvit.engine.trainer import ClassificationTrainer
from mvit.errors import ConfigError
from mvit.runtime import preemption
from mvit.utils.rng import seed_all


class StopAt(HookBase):
    """Requests a stop (as a signal handler would) after the given global step."""

    def __init__(self, step: int) -> None:
        self.at = step

    def after_step(self) -> None:
        if self.trainer.step == self.at:
            preemption.request_stop("test")


def build(cfg, tmp_path, dataset, net_cls, *, init_seed=0, accum=1, workers=0, extra=(), ema=True, drop=0.2):
    seed_all(init_seed)
    model = net_cls(drop=drop)
    items = cfg.TRAIN.BATCH_SIZE // accum
    loader = build_loader(dataset, batch_size=items, train=True, seed=cfg.RNG_SEED, num_workers=workers)
    trainer = ClassificationTrainer(
        cfg, model, loader, device=torch.device("cpu"), items_per_batch=items, accum_steps=accum
    )
    ema_hook = H.EMA(model, decay=0.9) if ema else None
    trainer.register_hooks(
        [H.LRScheduler(), ema_hook, *extra, H.Checkpointer(str(tmp_path), epoch_period=1, iter_period=0)]
    )
    return trainer, ema_hook


@pytest.mark.parametrize("workers", [0, 2])
def test_stop_mid_epoch_then_resume_gives_the_uninterrupted_weights(
    tmp_path, make_cfg, tiny_net, noisy_images, workers
):
    cfg = make_cfg(**{"SOLVER.MAX_EPOCH": 3})
    dataset = noisy_images(24)  # 6 steps per epoch

    ref, ref_ema = build(cfg, tmp_path / "ref", dataset, tiny_net, workers=workers)
    ref.train()

    run = tmp_path / "run"
    first, _ = build(cfg, run, dataset, tiny_net, workers=workers, extra=[StopAt(8)])
    with pytest.raises(preemption.Preempted) as info:
        first.train()
    preemption.clear_stop_request()
    assert (info.value.epoch, info.value.iteration) == (1, 2)
    path, state = find_resume_checkpoint(str(run))
    assert path.endswith("last.pyth") and (state["epoch"], state["iter"], state["step"]) == (1, 2, 8)

    # Another initialisation and another global RNG state: everything must come from the checkpoint.
    second, second_ema = build(cfg, run, dataset, tiny_net, init_seed=123, workers=workers)
    torch.rand(7)
    np.random.rand(3)
    second.load_state_dict(state)
    second.train()

    for (name, a), b in zip(ref.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    for (name, a), b in zip(ref_ema.module.state_dict().items(), second_ema.module.state_dict().values()):
        assert torch.equal(a, b), f"ema {name}"
    assert not torch.equal(ref.model.head.weight, ref_ema.module.head.weight)  # the EMA is not a copy


def test_gradient_accumulation_equals_one_large_batch(tmp_path, make_cfg, tiny_net, noisy_images):
    cfg = make_cfg(**{"SOLVER.MAX_EPOCH": 1})
    dataset = noisy_images(16)
    whole, _ = build(cfg, tmp_path / "a", dataset, tiny_net, ema=False, drop=0.0)
    whole.train()
    accum, _ = build(cfg, tmp_path / "b", dataset, tiny_net, accum=2, ema=False, drop=0.0)
    accum.train()
    assert accum.iters_per_epoch == whole.iters_per_epoch == 4
    for (name, a), b in zip(whole.model.state_dict().items(), accum.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_lr_hook_sets_each_group_lr_from_the_schedule(tmp_path, make_cfg, tiny_net, noisy_images):
    cfg = make_cfg(**{"SOLVER.LAYER_DECAY": 0.5, "SOLVER.MAX_EPOCH": 1})
    trainer, _ = build(cfg, tmp_path, noisy_images(8), tiny_net, ema=False)
    seen = []

    class Record(HookBase):
        def before_step(self) -> None:
            seen.append([(g["lr"], g["lr_scale"]) for g in self.trainer.optimizer.param_groups])

    trainer.register_hooks([Record()])
    trainer.train()
    for step, groups in enumerate(seen):
        expected = trainer.lr_schedule(step / trainer.iters_per_epoch)
        for lr, scale in groups:
            assert lr == pytest.approx(expected * scale)
    assert len({scale for _, scale in seen[0]}) > 1  # layer decay gives several scales


def test_mixup_and_label_smoothing_give_soft_targets_and_soft_target_ce(make_cfg, tiny_net, noisy_images):
    cfg = make_cfg(**{"MIXUP.ENABLE": True, "MIXUP.LABEL_SMOOTH_VALUE": 0.1})
    loader = build_loader(noisy_images(8), batch_size=4, train=True, seed=0)
    trainer = ClassificationTrainer(cfg, tiny_net(), loader, device=torch.device("cpu"), items_per_batch=4)
    assert isinstance(trainer.criterion, SoftTargetCrossEntropy)
    np.random.seed(0)
    labels = torch.tensor([0, 1, 2, 0])
    inputs = torch.randn(4, 3, 8, 8)
    mixed, targets = trainer.mixup(inputs.clone(), labels)
    assert targets.shape == (4, 3)
    torch.testing.assert_close(targets.sum(1), torch.ones(4))
    assert targets.min() >= 0.1 / 3 - 1e-6  # smoothing mass on every class
    hard = F.one_hot(labels, 3).float() * 0.9 + 0.1 / 3
    assert not torch.allclose(targets, hard)  # mixed with the flipped batch
    assert not torch.equal(mixed, inputs)
    logits = torch.randn(4, 3)
    expected = -(targets * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(trainer.criterion(logits, targets), expected)

    plain = ClassificationTrainer(
        make_cfg(**{"MIXUP.LABEL_SMOOTH_VALUE": 0.1}),
        tiny_net(),
        loader,
        device=torch.device("cpu"),
        items_per_batch=4,
    )
    assert plain.mixup is None and plain.criterion.label_smoothing == pytest.approx(0.1)


@pytest.mark.parametrize(
    "loss_func, mixup, expected",
    [
        ("soft_cross_entropy", True, SoftTargetCrossEntropy),
        ("soft_cross_entropy", False, nn.CrossEntropyLoss),
        ("cross_entropy", True, nn.CrossEntropyLoss),
        ("binary_cross_entropy", False, BinaryCrossEntropy),
    ],
)
def test_loss_func_selects_the_training_loss(make_cfg, tiny_net, noisy_images, loss_func, mixup, expected):
    cfg = make_cfg(**{"MODEL.LOSS_FUNC": loss_func, "MIXUP.ENABLE": mixup, "MIXUP.LABEL_SMOOTH_VALUE": 0.1})
    loader = build_loader(noisy_images(8), batch_size=4, train=True, seed=0)
    trainer = ClassificationTrainer(cfg, tiny_net(), loader, device=torch.device("cpu"), items_per_batch=4)
    assert type(trainer.criterion) is expected
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    if loss_func == "cross_entropy":  # mixup targets are already smoothed: no second smoothing
        soft = F.one_hot(labels, 3).float() * 0.7 + 0.1
        assert trainer.criterion.label_smoothing == 0.0
        torch.testing.assert_close(trainer.criterion(logits, soft), -(soft * logits.log_softmax(-1)).sum(-1).mean())
    if loss_func == "binary_cross_entropy":
        target = F.one_hot(labels, 3).float() * 0.9 + 0.1 / 3
        torch.testing.assert_close(
            trainer.criterion(logits, labels), F.binary_cross_entropy_with_logits(logits, target)
        )
    trainer.train()  # one epoch runs with the chosen loss
    assert math.isfinite(trainer.storage.last_values["loss"])


def test_unknown_loss_func_names_the_key(make_cfg, tiny_net, noisy_images):
    loader = build_loader(noisy_images(8), batch_size=4, train=True, seed=0)
    with pytest.raises(ConfigError, match="MODEL.LOSS_FUNC.*'focal'"):
        ClassificationTrainer(
            make_cfg(**{"MODEL.LOSS_FUNC": "focal"}), tiny_net(), loader, device=torch.device("cpu"), items_per_batch=4
        )


def _hook_trainer_attributes() -> set[str]:
    """Every ``self.trainer.X`` and ``t.X`` (``t = self.trainer``) that the hooks of mvit.engine.hooks touch."""
    tree = ast.parse(inspect.getsource(H))
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = node.value
            if isinstance(base, ast.Name) and base.id == "t":
                used.add(node.attr)
            elif isinstance(base, ast.Attribute) and base.attr == "trainer" and isinstance(base.value, ast.Name):
                used.add(node.attr)
    return used


def test_hooks_use_only_what_the_trainer_declares(make_cfg, tiny_net, noisy_images):
    declared = set(typing.get_type_hints(H.SupervisedTrainer)) | {
        name for name in vars(H.SupervisedTrainer) if not name.startswith("_")
    }
    used = _hook_trainer_attributes()
    assert used and used <= declared, f"undeclared: {sorted(used - declared)}"
    loader = build_loader(noisy_images(8), batch_size=4, train=True, seed=0)
    trainer = ClassificationTrainer(make_cfg(), tiny_net(), loader, device=torch.device("cpu"), items_per_batch=4)
    missing = [name for name in sorted(declared) if not hasattr(trainer, name)]
    assert not missing, f"ClassificationTrainer lacks {missing}"
    # Hooks exchange values through the storage only: a training run sets no attribute outside the declared ones.
    before = set(vars(trainer))
    trainer.register_hooks([H.LRScheduler(), H.ProgressBar(False)])
    trainer.train()
    assert set(vars(trainer)) == before
    assert trainer.storage.lr > 0 and math.isfinite(trainer.storage.last_values["loss"])
