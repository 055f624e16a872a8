"""Shipped yaml configs describe exactly the zoo architectures; _BASE_ inheritance and overrides work."""

from pathlib import Path

import pytest

from mvit.config import load_config
from mvit.models import config_from_cfg, get_model_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PAIRS = [
    ("IN1K/MVITv2_T.yaml", "mvitv2_t"),
    ("IN1K/MVITv2_S.yaml", "mvitv2_s"),
    ("IN1K/MVITv2_B.yaml", "mvitv2_b"),
    ("IN1K/MVITv2_L.yaml", "mvitv2_l"),
    ("IN1K/MVITv2_H.yaml", "mvitv2_h"),
    ("K400/MVITv2_S_16x4.yaml", "mvitv2_s_16x4"),
    ("K400/MVITv2_B_32x3.yaml", "mvitv2_b_32x3"),
    ("K400/MVITv2_L_40x3.yaml", "mvitv2_l_40x3"),
]


@pytest.mark.parametrize("path, name", PAIRS)
def test_yaml_equals_zoo_architecture(path, name):
    from_yaml = get_model_config(str(CONFIGS / path))
    zoo = get_model_config(name)
    assert from_yaml.block_specs() == zoo.block_specs()
    for field in ("input_size", "patch_kernel", "cls_embed_on", "rel_pos_temporal", "num_classes", "head_dropout"):
        assert getattr(from_yaml, field) == getattr(zoo, field), field


def test_base_inheritance_and_overrides(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"_BASE_: {CONFIGS / 'IN1K/MVITv2_T.yaml'}\nMODEL:\n  NUM_CLASSES: 10\n")
    cfg = load_config(str(child), ["SOLVER.BASE_LR", "0.5"])
    assert cfg.MODEL.NUM_CLASSES == 10 and cfg.SOLVER.BASE_LR == 0.5 and cfg.MVIT.DEPTH == 10
    assert config_from_cfg(cfg).num_classes == 10
