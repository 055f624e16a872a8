"""Weight-decay groups by parameter name on real MViTv2 models, layer decay, lr scaling and schedule."""

from __future__ import annotations

import math

import pytest

from mvit import create_model
from mvit.config import get_cfg
from mvit.engine.lr_schedule import LRSchedule, build_lr_schedule
from mvit.engine.optimizer import build_optimizer, layer_id, lr_scale_factor
from mvit.errors import ConfigError


def _tiny_cfg(video: bool):
    cfg = get_cfg()
    m = cfg.MVIT
    m.EMBED_DIM, m.NUM_HEADS, m.DEPTH = 8, 1, 3
    m.DIM_MUL, m.HEAD_MUL = [[1, 2.0]], [[1, 2.0]]
    m.CLS_EMBED_ON, m.USE_ABS_POS = True, True
    cfg.MODEL.NUM_CLASSES = 4
    if video:
        m.PATCH_KERNEL, m.PATCH_STRIDE, m.PATCH_PADDING = [3, 7, 7], [2, 4, 4], [1, 3, 3]
        m.POOL_KVQ_KERNEL = [3, 3, 3]
        m.POOL_Q_STRIDE = [[1, 1, 2, 2]]
        m.POOL_KV_STRIDE_ADAPTIVE = [1, 2, 2]
        m.REL_POS_TEMPORAL, m.SEP_POS_EMBED = True, True
        cfg.DATA.NUM_FRAMES = 4
    else:
        m.POOL_Q_STRIDE = [[1, 2, 2]]
        m.POOL_KV_STRIDE_ADAPTIVE = [2, 2]
    cfg.DATA.TRAIN_CROP_SIZE = cfg.DATA.TEST_CROP_SIZE = 32
    return cfg


def _decay_by_name(optimizer) -> dict[str, float]:
    return {n: g["weight_decay"] for g in optimizer.param_groups for n in g["param_names"]}


@pytest.mark.parametrize("video", [False, True], ids=["image", "video"])
def test_no_weight_decay_on_biases_norms_rel_pos_pos_embed_and_cls_token(video):
    cfg = _tiny_cfg(video)
    cfg.MVIT.ZERO_DECAY_POS_CLS = True  # the switch on (off by default, as in the released recipes)
    model = create_model(cfg)
    decay = _decay_by_name(build_optimizer(cfg, model))
    names = [n for n, _ in model.named_parameters()]
    assert set(decay) == set(names)

    def leaf(n: str) -> str:
        return n.rsplit(".", 1)[-1]

    zero = [n for n in names if n.endswith(".bias") or ".norm" in n or n.startswith("norm")]
    zero += [n for n in names if leaf(n) in ("rel_pos_h", "rel_pos_w", "rel_pos_t", "cls_token")]
    zero += [n for n in names if leaf(n).startswith("pos_embed")]
    expected_kinds = {"rel_pos_h", "rel_pos_w", "cls_token"} | ({"rel_pos_t"} if video else set())
    assert expected_kinds <= {leaf(n) for n in zero}
    assert any(leaf(n).startswith("pos_embed") for n in zero)
    for n in zero:
        assert decay[n] == 0.0, n
    weights = [n for n in names if n.endswith(("qkv.weight", "fc1.weight", "fc2.weight", "proj.weight"))]
    assert weights
    for n in weights:
        assert decay[n] == pytest.approx(cfg.SOLVER.WEIGHT_DECAY), n


def test_position_and_token_decay_follows_the_config_switch():
    cfg = _tiny_cfg(False)
    cfg.MVIT.ZERO_DECAY_POS_CLS = False
    decay = _decay_by_name(build_optimizer(cfg, create_model(cfg)))
    assert decay["cls_token"] == cfg.SOLVER.WEIGHT_DECAY
    assert decay["blocks.0.attn.rel_pos_h"] == cfg.SOLVER.WEIGHT_DECAY
    assert decay["blocks.0.attn.qkv.bias"] == 0.0


def test_layer_decay_scales_lr_by_depth():
    cfg = _tiny_cfg(False)
    cfg.SOLVER.LAYER_DECAY = 0.5
    opt = build_optimizer(cfg, create_model(cfg))
    scale = {n: g["lr_scale"] for g in opt.param_groups for n in g["param_names"]}
    depth = cfg.MVIT.DEPTH
    assert scale["head.projection.weight"] == 1.0
    assert scale[f"blocks.{depth - 1}.attn.qkv.weight"] == 0.5
    assert scale["blocks.0.attn.qkv.weight"] == 0.5**depth
    assert scale["patch_embed.proj.weight"] == scale["cls_token"] == 0.5 ** (depth + 1)
    assert [layer_id(n, 3) for n in ("pos_embed", "blocks.2.mlp.fc1.weight", "norm.weight")] == [0, 3, 4]


def test_lr_is_scaled_by_global_batch_and_shards():
    cfg = get_cfg()
    assert lr_scale_factor(cfg) == 1.0  # BASE_LR is the lr, as in the publishers' defaults
    # Linear scaling by the global batch: TRAIN.BATCH_SIZE of one machine x NUM_SHARDS machines.
    cfg.TRAIN.BATCH_SIZE, cfg.NUM_SHARDS, cfg.SOLVER.BASE_LR_BATCH_SIZE = 512, 4, 256
    assert lr_scale_factor(cfg) == 8.0
    cfg.SOLVER.BASE_LR_BATCH_SIZE = 0
    cfg.SOLVER.BASE_LR_SCALE_NUM_SHARDS = True
    assert lr_scale_factor(cfg) == 4.0
    schedule = build_lr_schedule(cfg)
    assert schedule.base_lr == pytest.approx(4 * cfg.SOLVER.BASE_LR)
    assert schedule.warmup_start_lr == pytest.approx(4 * cfg.SOLVER.WARMUP_START_LR)
    assert schedule.end_lr == pytest.approx(4 * cfg.SOLVER.COSINE_END_LR)


def test_both_lr_scaling_rules_at_once_are_refused():
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR_BATCH_SIZE, cfg.SOLVER.BASE_LR_SCALE_NUM_SHARDS = 256, True
    with pytest.raises(ConfigError, match="BASE_LR_BATCH_SIZE 256 and SOLVER.BASE_LR_SCALE_NUM_SHARDS True") as err:
        lr_scale_factor(cfg)
    assert "\n" not in str(err.value)


def test_cosine_schedule_with_linear_warmup():
    s = LRSchedule(base_lr=1.0, max_epoch=10, end_lr=0.1, warmup_epochs=2, warmup_start_lr=0.0)
    assert s(0) == 0.0
    assert s(1) == pytest.approx(0.5)
    assert s(2) == pytest.approx(1.0)
    assert s(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert s(10) == pytest.approx(0.1)
    values = [s(e / 4) for e in range(8, 41)]
    assert all(a >= b for a, b in zip(values, values[1:]))
