"""Official MViTv2 / PySlowFast yaml files load unmodified through load_config (mvit.config.compat).

The files under official/ are small copies written from the publishers' key lists (see official/README.md).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from mvit import resolve_config
from mvit.config import get_cfg, load_config
from mvit.config.compat import register_foreign_keys
from mvit.config.foreign_keys import FOREIGN_KEYS, IGNORED, TRANSLATED
from mvit.errors import ConfigError
from mvit.runtime.projects import load_projects

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL = Path(__file__).resolve().parent / "official"
K400_S = OFFICIAL / "pysf_Kinetics_MVITv2_S_16x4.yaml"
SSV2_S = OFFICIAL / "pysf_SSv2_MVITv2_S_16x4.yaml"
SSV2_L = OFFICIAL / "pysf_SSv2_MVITv2_L_40x3.yaml"
BROKEN_B = OFFICIAL / "pysf_ImageNet_MVITv2_B.yaml"


@pytest.fixture(scope="module")
def extensions():
    return load_projects(("projects.classification", "projects.video"))[1]


def _load(path, extensions, *opts, extra=()):
    return load_config(str(path), list(opts), extensions=list(extensions) + list(extra))


def _flat(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def _compat_lines(caplog, text):
    return [r.getMessage() for r in caplog.records if r.name == "mvit.config.compat" and text in r.getMessage()]


# ------------------------------------------------------------------------------------------- loading


@pytest.mark.parametrize(
    "name, zoo",
    [
        ("mvit_MVITv2_T.yaml", "mvitv2_t"),
        ("mvit_MVITv2_L_test.yaml", "mvitv2_l"),
        ("pysf_ImageNet_MVITv2_T.yaml", "mvitv2_t"),
        ("pysf_Kinetics_MVITv2_S_16x4.yaml", "mvitv2_s_16x4"),
    ],
)
def test_official_file_loads_and_builds_the_zoo_architecture(name, zoo, extensions):
    cfg = _load(OFFICIAL / name, extensions)
    ours = set(_flat(load_config(extensions=extensions)))
    assert set(_flat(cfg)) == ours, "foreign keys must not survive in the returned config"
    got, want = resolve_config(cfg), resolve_config(zoo)
    assert got.block_specs() == want.block_specs()
    for field in ("input_size", "patch_kernel", "patch_stride", "patch_padding", "cls_embed_on", "rel_pos_temporal"):
        assert getattr(got, field) == getattr(want, field), field
    assert (got.num_classes, got.head_dropout, got.dim_mul_in_att) == (
        want.num_classes,
        want.head_dropout,
        want.dim_mul_in_att,
    )


def test_tuple_strings_become_lists_and_foreign_values_are_translated(extensions, caplog):
    with caplog.at_level(logging.INFO, logger="mvit.config.compat"):
        cfg = _load(K400_S, extensions)
    # "(3, 7, 7)" is a YAML string that yacs evaluates; our list keys take it as a list.
    assert cfg.MVIT.PATCH_KERNEL == [3, 7, 7] and cfg.MVIT.PATCH_PADDING == [1, 3, 3]
    assert cfg.DATA.IN_CHANS == 3  # DATA.INPUT_CHANNEL_NUM [3]
    assert cfg.DATA.DECODING_BACKEND == "pyav"  # torchvision has no video decoder here
    assert _compat_lines(caplog, "DATA.INPUT_CHANNEL_NUM [3]") and _compat_lines(caplog, "'torchvision' read as 'pyav'")


def test_pyslowfast_file_means_pyslowfast_defaults_for_keys_it_leaves_out(extensions, caplog):
    with caplog.at_level(logging.INFO, logger="mvit.config.compat"):
        cfg = _load(K400_S, extensions)
    # The K400 S file states no DATA.MEAN / STD: PySlowFast normalises with 0.45 / 0.225, and never scales the lr
    # by the batch; our own K400 S recipe states the same values explicitly.
    ours = _load(ROOT / "configs/K400/MVITv2_S_16x4.yaml", extensions)
    assert cfg.DATA.MEAN == ours.DATA.MEAN == [0.45, 0.45, 0.45]
    assert cfg.DATA.STD == ours.DATA.STD == [0.225, 0.225, 0.225]
    assert cfg.SOLVER.BASE_LR_BATCH_SIZE == ours.SOLVER.BASE_LR_BATCH_SIZE == 0
    assert cfg.SOLVER.BASE_LR == ours.SOLVER.BASE_LR and cfg.SOLVER.WARMUP_EPOCHS == ours.SOLVER.WARMUP_EPOCHS
    assert len(_compat_lines(caplog, "PySlowFast's defaults")) == 1
    # A file of this project (no MODEL.ARCH) keeps our defaults, and ours load without any compat message.
    assert _load(OFFICIAL / "mvit_MVITv2_T.yaml", extensions).DATA.MEAN == get_cfg().DATA.MEAN
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mvit.config.compat"):
        _load(ROOT / "configs/K400/MVITv2_S_16x4.yaml", extensions)
    assert not [r for r in caplog.records if r.name == "mvit.config.compat"]


def test_ignored_keys_are_listed_once(extensions, caplog):
    with caplog.at_level(logging.INFO, logger="mvit.config.compat"):
        _load(K400_S, extensions, "TENSORBOARD.ENABLE", "True", "MVIT.NORM", "layernorm")
    lines = _compat_lines(caplog, "accepted without effect")
    assert len(lines) == 1
    listed = lines[0].rsplit(": ", 1)[1].split(", ")
    assert sorted(listed) == [
        "AUG.RE_SPLIT",
        "MODEL.ARCH",
        "MODEL.MODEL_NAME",
        "MVIT.DROPOUT_RATE",
        "MVIT.NORM",
        "TENSORBOARD.ENABLE",
    ]


def test_repeated_keys_the_last_wins_and_is_logged(extensions, caplog):
    with caplog.at_level(logging.WARNING, logger="mvit.config.compat"):
        cfg = _load(SSV2_L, extensions)
    assert cfg.MVIT.POOL_KV_STRIDE_ADAPTIVE == [1, 8, 8]
    assert len(cfg.MVIT.POOL_Q_STRIDE) == 48 and cfg.MVIT.POOL_Q_STRIDE[44] == [44, 1, 2, 2]
    repeated = _compat_lines(caplog, "the last value wins")
    assert sorted(line.split(": ")[1].split()[0] for line in repeated) == [
        "MVIT.MODE",
        "MVIT.POOL_KV_STRIDE_ADAPTIVE",
        "MVIT.POOL_Q_STRIDE",
    ]
    assert all(line.startswith(f"{SSV2_L}:") for line in repeated)
    assert resolve_config(cfg).block_specs() == resolve_config("mvitv2_l_40x3").block_specs()


def test_ssv2_loads_once_the_video_project_owns_reverse_input_channel(extensions):
    cfg = _load(SSV2_S, extensions)
    assert cfg.DATA.REVERSE_INPUT_CHANNEL is True and cfg.MODEL.NUM_CLASSES == 174
    assert cfg.TEST.DATASET == "ssv2" and cfg.DATA.INV_UNIFORM_SAMPLE is True and cfg.DATA.RANDOM_FLIP is False
    assert "PREFETCH" not in cfg and "CHECKPOINT_TYPE" not in cfg.TRAIN


# -------------------------------------------------------------------------------------------- errors


def _one_line_error(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_invalid_yaml_is_one_line_naming_file_and_line(extensions):
    with pytest.raises(ConfigError) as excinfo:
        _load(BROKEN_B, extensions)
    text = _one_line_error(excinfo)
    lineno = next(i for i, line in enumerate(BROKEN_B.read_text().splitlines(), 1) if line.startswith("DROPPATH_RATE"))
    # PyYAML stops at the key after the unindented one.
    assert text.startswith(f"{BROKEN_B}:{lineno + 1}:") and "not valid YAML" in text


@pytest.mark.parametrize(
    "text, where, problem",
    [
        ("MVIT:\n  DEPTH: 3\n  MODE: !!python/name:os.system\n", ":3:9", "could not determine a constructor"),
        ("MVIT:\n  DEPTH: [1, 2\n", ":3:1", "expected ',' or ']'"),
    ],
)
def test_yaml_that_safe_load_refuses_is_one_line(tmp_path, text, where, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        load_config(str(path))
    message = _one_line_error(excinfo)
    assert message.startswith(f"{path}{where}: not valid YAML: ") and problem in message


def test_official_yaml_path_builds_the_zoo_model_config():
    # create_model / resolve_config accept a yaml path: an official file describes the zoo architecture.
    got = resolve_config(str(OFFICIAL / "pysf_ImageNet_MVITv2_T.yaml"))
    assert got.block_specs() == resolve_config("mvitv2_t").block_specs()


@pytest.mark.parametrize(
    "key, value",
    [
        ("MODEL.ARCH", "slowfast"),
        ("MODEL.MODEL_NAME", "ResNet"),
        ("MVIT.NORM", "batchnorm"),
        ("MVIT.DROPOUT_RATE", "0.1"),
        ("MVIT.SEPARATE_QKV", "True"),
        ("MVIT.USE_MEAN_POOLING", "True"),
        ("DETECTION.ENABLE", "True"),
        ("MULTIGRID.LONG_CYCLE", "True"),
        ("MODEL.HEAD_ACT", "sigmoid"),
        ("SOLVER.CLIP_GRAD_VAL", "1.0"),
        ("TRAIN.CHECKPOINT_TYPE", "caffe2"),
    ],
)
def test_behaviour_changing_values_are_refused(key, value, extensions):
    with pytest.raises(ConfigError) as excinfo:
        _load(K400_S, extensions, key, value)
    text = _one_line_error(excinfo)
    assert text.startswith(f"command-line override: {key} ") and "supported here" in text


def test_refusal_in_a_file_names_its_line(tmp_path, extensions):
    child = tmp_path / "child.yaml"
    child.write_text(f"_BASE_: {K400_S}\nMVIT:\n  NORM: batchnorm\n")
    with pytest.raises(ConfigError) as excinfo:
        _load(child, extensions)
    assert _one_line_error(excinfo) == (
        f"{child}:3: MVIT.NORM 'batchnorm': only 'layernorm' is supported here "
        "(the MViTv2 model here has LayerNorm, fused qkv, no attention dropout, no layer scale, a standard head)"
    )


def test_translation_conflicting_with_our_key_is_refused(extensions):
    with pytest.raises(ConfigError, match="DATA.ENSEMBLE_METHOD 'max' means TEST.ENSEMBLE_METHOD 'max'"):
        _load(K400_S, extensions, "DATA.ENSEMBLE_METHOD", "max", "TEST.ENSEMBLE_METHOD", "sum")
    assert _load(K400_S, extensions, "DATA.ENSEMBLE_METHOD", "max").TEST.ENSEMBLE_METHOD == "max"


def test_epoch_reset_false_with_an_initial_checkpoint_is_refused(extensions):
    init = ("TRAIN.CHECKPOINT_FILE_PATH", "weights.pyth")
    with pytest.raises(ConfigError, match="TRAIN.CHECKPOINT_EPOCH_RESET False: False continues"):
        _load(K400_S, extensions, *init, "TRAIN.CHECKPOINT_EPOCH_RESET", "False")
    assert _load(K400_S, extensions, *init, "TRAIN.CHECKPOINT_EPOCH_RESET", "True").TRAIN.CHECKPOINT_FILE_PATH


def test_patch_2d_with_a_temporal_pooling_stride_is_refused(extensions):
    path = OFFICIAL / "pysf_ImageNet_MVITv2_T.yaml"
    lineno = next(i for i, line in enumerate(path.read_text().splitlines(), 1) if "PATCH_2D" in line)
    with pytest.raises(ConfigError) as excinfo:
        _load(path, extensions, "MVIT.POOL_KVQ_KERNEL", "[3, 3, 3]")
    assert _one_line_error(excinfo) == (
        f"{path}:{lineno}: MVIT.PATCH_2D True needs a time component 1 in POOL_KVQ_KERNEL, got [3, 3, 3]"
    )


def test_translation_without_our_key_has_no_effect_and_is_listed(tmp_path, caplog):
    # Without the video project there is no TEST.ENSEMBLE_METHOD: PySlowFast's view aggregation has no effect.
    path = tmp_path / "image.yaml"
    path.write_text("MODEL:\n  ARCH: mvit\nDATA:\n  ENSEMBLE_METHOD: max\n")
    with caplog.at_level(logging.INFO, logger="mvit.config.compat"):
        cfg = load_config(str(path))
    assert "ENSEMBLE_METHOD" not in cfg.TEST and "ENSEMBLE_METHOD" not in cfg.DATA
    assert _compat_lines(caplog, "accepted without effect")[0].endswith("DATA.ENSEMBLE_METHOD, MODEL.ARCH")


def test_mixed_precision_bool_reads_as_a_precision_name(tmp_path, extensions):
    child = tmp_path / "amp.yaml"
    child.write_text(f"_BASE_: {K400_S}\nTRAIN:\n  MIXED_PRECISION: True\n")
    assert _load(child, extensions).TRAIN.MIXED_PRECISION == "fp16"
    assert _load(K400_S, extensions, "TRAIN.MIXED_PRECISION", "False").TRAIN.MIXED_PRECISION == "fp32"


def test_unknown_keys_stay_errors_with_their_line(tmp_path, extensions):
    child = tmp_path / "typo.yaml"
    child.write_text(f"_BASE_: {K400_S}\nMVIT:\n  DEPHT: 3\n")
    with pytest.raises(ConfigError) as excinfo:
        _load(child, extensions)
    assert _one_line_error(excinfo) == f"{child}:3: Non-existent config key: MVIT.DEPHT (did you mean MVIT.DEPTH?)"


# ------------------------------------------------------------------------------------------------ table


def test_table_entries_are_well_formed_and_never_shadow_our_keys(extensions):
    keys = [e.key for e in FOREIGN_KEYS]
    assert len(keys) == len(set(keys))
    cfg = load_config(extensions=extensions)
    ours = set(_flat(cfg))
    for entry in FOREIGN_KEYS:
        assert entry.reason
        assert entry.key.removesuffix(".*") not in ours, (
            f"{entry.key} is this project's key now: drop it from the table"
        )
        if entry.kind == TRANSLATED:
            assert entry.apply is not None or entry.to in ours, entry.key
        elif entry.kind != IGNORED:
            assert entry.allowed, entry.key
    # Registering adds only what is missing, so a key a project later defines is left to the project.
    cfg = get_cfg()
    cfg.MVIT.NORM = "rmsnorm"
    state = register_foreign_keys(cfg)
    assert cfg.MVIT.NORM == "rmsnorm" and "MVIT.NORM" not in state.added


def test_run_net_reports_the_broken_file_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools/run_net.py"), "--cfg", str(BROKEN_B), "OUTPUT_DIR", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"error: {BROKEN_B}:") and "not valid YAML" in proc.stderr


@pytest.mark.parametrize(
    "ours, theirs",
    [("configs/IN1K/MVITv2_T.yaml", "mvit_MVITv2_T.yaml"), ("configs/K400/MVITv2_S_16x4.yaml", K400_S.name)],
)
def test_our_recipes_decay_the_tables_and_tokens_as_the_released_ones(ours, theirs, extensions):
    """The official recipes decay rel-pos tables and the class token (MVIT.ZERO_DECAY_POS_CLS False: mvit's default,
    set explicitly by PySlowFast's files, whose own default is True)."""
    root = Path(__file__).resolve().parents[2]
    mine, official = _load(root / ours, extensions), _load(OFFICIAL / theirs, extensions)
    assert mine.MVIT.ZERO_DECAY_POS_CLS is official.MVIT.ZERO_DECAY_POS_CLS is False
    assert (mine.SOLVER.WEIGHT_DECAY, mine.SOLVER.ZERO_WD_1D_PARAM) == (official.SOLVER.WEIGHT_DECAY, True)


def test_a_pyslowfast_file_without_the_key_means_pyslowfasts_default(extensions, tmp_path):
    text = "\n".join(line for line in K400_S.read_text().splitlines() if "ZERO_DECAY_POS_CLS" not in line)
    (tmp_path / "k400.yaml").write_text(text)
    assert _load(tmp_path / "k400.yaml", extensions).MVIT.ZERO_DECAY_POS_CLS is True
