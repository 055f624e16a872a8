"""One architecture schema: ``MVIT.*`` is derived from MViTConfig, ``MVIT.ARCH`` names a zoo model whose
fields the keys beside it override, and ``create_model`` / ``resolve_config`` take every kind of spec."""

import dataclasses

import pytest
import torch

import mvit
from mvit import resolve_config
from mvit.config import get_cfg, load_config
from mvit.config.arch import MVIT_KEY_ALIASES, SECTION_KEYS, mvit_keys
from mvit.errors import ConfigError
from mvit.models import MViTConfig

# The official MViTv2-T yaml of facebookresearch/mvit (configs/MVITv2_T.yaml, architecture part): no ARCH.
OFFICIAL_T = """\
MVIT:
  DEPTH: 10
  NUM_HEADS: 1
  EMBED_DIM: 96
  PATCH_KERNEL: (7, 7)
  PATCH_STRIDE: (4, 4)
  PATCH_PADDING: (3, 3)
  MLP_RATIO: 4.0
  QKV_BIAS: True
  DROPPATH_RATE: 0.1
  POOL_Q_STRIDE: [[0, 1, 1], [1, 2, 2], [2, 1, 1], [3, 2, 2], [4, 1, 1], [5, 1, 1], [6, 1, 1], [7, 1, 1], [8, 2, 2], [9, 1, 1]]
  POOL_KVQ_KERNEL: (3, 3)
  POOL_KV_STRIDE_ADAPTIVE: (4, 4)
  DIM_MUL: [[1, 2.0], [3, 2.0], [8, 2.0]]
  HEAD_MUL: [[1, 2.0], [3, 2.0], [8, 2.0]]
"""


def _yaml(tmp_path, text: str, name: str = "exp.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_mvit_section_is_derived_from_the_config_fields():
    fields = {f.name for f in dataclasses.fields(MViTConfig)}
    assert set(mvit_keys()) | set(SECTION_KEYS) == fields and not set(mvit_keys()) & set(SECTION_KEYS)
    assert mvit_keys()["drop_path_rate"] == "DROPPATH_RATE" == MVIT_KEY_ALIASES["drop_path_rate"]
    assert set(get_cfg().MVIT) == set(mvit_keys().values()) | {"ARCH", "ZERO_DECAY_POS_CLS"}
    assert all(get_cfg().MVIT[key] is None for key in mvit_keys().values())  # unset until resolved


def _plain(value):
    """A field value as a yaml writes it: lists, and [] for None."""
    if value is None:
        return []
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def test_every_field_goes_through_the_cfg(tmp_path):
    # A config unlike every default, written as a cfg and read back: no field is lost or renamed on the way.
    config = MViTConfig.from_stages(
        (1, 2), input_size=(4, 32, 32), q_stride=(1, 2, 2), kv_stride_adaptive=(1, 2, 2), embed_dim=24,
        num_heads=2, patch_kernel=(3, 5, 5), patch_stride=(2, 2, 2), patch_padding=(1, 2, 2), in_chans=1,
        num_classes=7, mlp_ratio=2.0, qkv_bias=False, pool_kvq_kernel=(1, 3, 3), mode="avg", pool_first=True,
        cls_embed_on=True, use_abs_pos=True, sep_pos_embed=True, rel_pos_spatial=False, rel_pos_temporal=True,
        rel_pos_zero_init=True, residual_pooling=False, residual_pooling_cls=True, dim_mul_in_att=False,
        drop_path_rate=0.25, head_dropout=0.3, norm_eps=1e-5, out_norm=True, final_norm=False,
        attn_impl="explicit", act_checkpoint=True,
    )  # fmt: skip
    cfg = get_cfg()
    for name, key in mvit_keys().items():
        cfg.MVIT[key] = _plain(getattr(config, name))
    cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE = 4, 32
    cfg.DATA.IN_CHANS, cfg.MODEL.NUM_CLASSES, cfg.MODEL.DROPOUT_RATE, cfg.MODEL.ACT_CHECKPOINT = 1, 7, 0.3, True
    assert resolve_config(cfg) == config
    assert resolve_config(_yaml(tmp_path, cfg.dump())) == config  # and through a yaml file
    windows = load_config(None, ["MVIT.DEPTH", "2", "MVIT.WINDOW_SIZES", "[0, 7]"])
    assert resolve_config(windows).window_sizes == (0, 7)


def test_official_yaml_without_arch_builds_what_it_always_built(tmp_path):
    config = resolve_config(_yaml(tmp_path, OFFICIAL_T))
    assert config.block_specs() == resolve_config("mvitv2_t").block_specs()
    # Keys left out take the official defaults (facebookresearch/mvit mvit/config/defaults.py).
    defaults = resolve_config(get_cfg())
    assert (defaults.depth, defaults.drop_path_rate, defaults.pool_kvq_kernel) == (16, 0.1, (3, 3))
    assert (defaults.rel_pos_spatial, defaults.residual_pooling, defaults.dim_mul_in_att) == (True, True, True)
    assert (defaults.cls_embed_on, defaults.use_abs_pos, defaults.pool_kv_stride_adaptive) == (False, False, None)
    assert defaults.patch_kernel == (7, 7) and defaults.embed_dim == 96 and defaults.mode == "conv"


def test_arch_names_a_zoo_model_and_keys_beside_it_override(tmp_path):
    path = _yaml(tmp_path, "MVIT:\n  ARCH: mvitv2_l\n  EMBED_DIM: 96\n")
    config = resolve_config(path)
    zoo = resolve_config("mvitv2_l")
    assert config == zoo.replace(embed_dim=96, input_size=(224, 224), num_classes=1000, head_dropout=0.0)
    assert config.depth == 48 and config.dim_mul_in_att is False  # the rest is mvitv2_l's


def test_a_key_set_to_the_official_default_still_overrides_arch(tmp_path):
    # mvitv2_l expands channels in the MLP and mvitv2_b has drop path 0.3; True and 0.1 are the official
    # defaults: set explicitly, they must win over ARCH all the same.
    path = _yaml(tmp_path, "MVIT:\n  ARCH: mvitv2_l\n  DIM_MUL_IN_ATT: True\n  DROPPATH_RATE: 0.1\n")
    config = resolve_config(path)
    assert config.dim_mul_in_att is True and config.drop_path_rate == 0.1
    cfg = load_config(
        None, ["MVIT.ARCH", "mvitv2_b", "MVIT.DROPPATH_RATE", "0.1", "MVIT.POOL_KV_STRIDE_ADAPTIVE", "[]"]
    )
    assert resolve_config(cfg).drop_path_rate == 0.1 and resolve_config(cfg).pool_kv_stride_adaptive is None
    assert resolve_config(cfg).depth == 24


def test_a_loaded_cfg_spells_out_the_whole_architecture(tmp_path):
    cfg = load_config(str(_yaml(tmp_path, "MVIT:\n  ARCH: mvitv2_s\n  DROPPATH_RATE: 0.2\n")))
    assert cfg.MVIT.DEPTH == 16 and cfg.MVIT.POOL_KV_STRIDE_ADAPTIVE == [4, 4] and cfg.MVIT.WINDOW_SIZES == []
    # The dump (as a checkpoint stores it) rebuilds the same model without the zoo.
    dumped = cfg.dump().replace("ARCH: mvitv2_s", "ARCH: ''")
    assert resolve_config(_yaml(tmp_path, dumped, "dump.yaml")) == resolve_config(cfg)


def test_arch_of_a_video_model_with_the_frames_of_the_recipe(tmp_path):
    path = _yaml(tmp_path, "MVIT:\n  ARCH: mvitv2_s_16x4\nDATA:\n  NUM_FRAMES: 16\nMODEL:\n  NUM_CLASSES: 400\n")
    config = resolve_config(path)
    zoo = resolve_config("mvitv2_s_16x4")
    assert config.block_specs() == zoo.block_specs() and config.input_size == (16, 224, 224)


def test_bad_values_name_the_key():
    with pytest.raises(ConfigError, match=r"MVIT\.DIM_MUL: expected \[\[number, \.\.\.\], \.\.\.\], got \[1, 2\.0\]"):
        load_config(None, ["MVIT.DIM_MUL", "[1, 2.0]"])
    with pytest.raises(ConfigError, match=r"MVIT\.POOL_KVQ_KERNEL=\(3, 3\) must have 3 entries"):
        resolve_config(load_config(None, ["MVIT.PATCH_KERNEL", "[3, 7, 7]", "MVIT.PATCH_STRIDE", "[2, 4, 4]",
                                          "MVIT.PATCH_PADDING", "[1, 3, 3]", "DATA.NUM_FRAMES", "4"]))  # fmt: skip
    with pytest.raises(ConfigError, match=r"DATA\.NUM_FRAMES=8 needs a 3-D model"):
        resolve_config(load_config(None, ["DATA.NUM_FRAMES", "8"]))


def test_an_invalid_architecture_in_a_yaml_names_the_file(tmp_path):
    path = _yaml(tmp_path, "MVIT:\n  PATCH_KERNEL: [3, 7, 7]\n", "video.yaml")
    with pytest.raises(ConfigError, match=r"video\.yaml: MVIT\.PATCH_STRIDE=\(4, 4\) has 2 entries"):
        mvit.create_model(path)


def test_a_typo_under_mvit_is_an_error_even_where_project_keys_are_allowed(tmp_path):
    path = _yaml(tmp_path, "MVIT:\n  EMBED_DIMS: 64\nDATA:\n  SAMPLING_RATE: 4\n", "typo.yaml")
    with pytest.raises(ConfigError, match=r"typo\.yaml.*MVIT\.EMBED_DIMS"):
        mvit.create_model(path)


def test_every_kind_of_spec(tmp_path):
    zoo = resolve_config("mvitv2_t", num_classes=10)
    assert zoo.num_classes == 10 and zoo.depth == 10
    assert resolve_config(zoo) == zoo and resolve_config(zoo) is not zoo
    assert resolve_config(zoo, num_classes=3).num_classes == 3 and zoo.num_classes == 10
    path = tmp_path / "t.yaml"
    path.write_text("MVIT:\n  ARCH: mvitv2_t\n  DROPPATH_RATE: 0.1\n")
    assert resolve_config(path) == resolve_config(str(path)) == resolve_config(load_config(str(path)))
    assert resolve_config(path).block_specs() == zoo.block_specs()
    with torch.device("meta"):
        model = mvit.create_model(load_config(str(path)), num_classes=5)
    assert model.head.projection.out_features == 5
    with pytest.raises(TypeError, match="MViTConfig"):
        resolve_config(42)
