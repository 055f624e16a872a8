"""A newcomer's first hour (issue 20, section 4): documented commands run as written, lossless config values are
accepted, a typo gets a "did you mean", and the tools' defaults fit the machine and the output."""

from __future__ import annotations

import importlib.util
import io
import logging
import re
import shlex
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import mvit
from mvit.config import load_config
from mvit.errors import ConfigError, UserError, report

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str):
    """A script of tools/ as a module (they are importable by path, not installed)."""
    spec = importlib.util.spec_from_file_location(f"_first_hour_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses of the script look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def extensions():
    from mvit.runtime.projects import load_projects

    return load_projects(("projects.classification", "projects.video"))[1]


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return report(info.value)


# ------------------------------------------------------------------------------ 1. lossless values are accepted
def test_documented_fine_tune_line_loads_as_written(extensions):
    readme = (ROOT / "projects/classification/README.md").read_text()
    section = readme.split("## Fine-tune", 1)[1]
    command = re.search(r"```bash\n(python tools/run_net\.py.*?)\n```", section, re.S).group(1).replace("\\\n", " ")
    argv = shlex.split(command)[2:]
    assert "SOLVER.WARMUP_EPOCHS" in argv  # the int the float key used to refuse
    args = _tool("run_net").parse_args(argv)
    cfg = load_config(str(ROOT / args.cfg_files[0]), args.opts, extensions=extensions)
    assert cfg.SOLVER.WARMUP_EPOCHS == 5.0 and type(cfg.SOLVER.WARMUP_EPOCHS) is float
    assert cfg.MODEL.NUM_CLASSES == 102 and cfg.SOLVER.LAYER_DECAY == 0.75


def test_int_for_a_float_key_and_other_lossless_widenings(tmp_path, extensions):
    cfg = load_config(None, ["DATA.MAX_FAILED_FRACTION", "0", "DATA.MEAN", "(0, 1, 1)", "OUTPUT_DIR", "2024"],
                      extensions=extensions)  # fmt: skip
    assert cfg.DATA.MAX_FAILED_FRACTION == 0.0 and type(cfg.DATA.MAX_FAILED_FRACTION) is float
    assert cfg.DATA.MEAN == [0.0, 1.0, 1.0] and all(type(v) is float for v in cfg.DATA.MEAN)
    assert cfg.OUTPUT_DIR == "2024"  # the text typed, not yacs' int
    path = tmp_path / "ints.yaml"
    path.write_text("SOLVER:\n  WARMUP_EPOCHS: 5\nDATA:\n  STD: [1, 1, 1]\nOUTPUT_DIR: '2024'\n")
    cfg = load_config(str(path))
    assert type(cfg.SOLVER.WARMUP_EPOCHS) is float and cfg.DATA.STD == [1.0, 1.0, 1.0] and cfg.OUTPUT_DIR == "2024"


def test_a_real_mismatch_names_the_key_and_the_type_in_words(tmp_path):
    assert _error(load_config, None, ["SOLVER.WARMUP_EPOCHS", "five"]) == (
        "command-line override: SOLVER.WARMUP_EPOCHS expects a number (float), got 'five' (a string)"
    )
    # Never narrowed: a float for an int, a number for a bool.
    assert "SOLVER.MAX_EPOCH expects an integer, got 5.5 (a float)" in _error(
        load_config, None, ["SOLVER.MAX_EPOCH", "5.5"]
    )
    assert "TRAIN.ENABLE expects True or False, got 1 (an integer)" in _error(load_config, None, ["TRAIN.ENABLE", "1"])
    path = tmp_path / "bad.yaml"
    path.write_text("SOLVER:\n  BASE_LR: 0.1\n  WARMUP_EPOCHS: [5]\n")
    assert (
        _error(load_config, str(path)) == f"{path}:3: SOLVER.WARMUP_EPOCHS expects a number (float), got [5] (a list)"
    )


# ------------------------------------------------------------------------------------------- 2. did you mean
def test_unknown_key_gets_the_close_keys(tmp_path):
    assert _error(load_config, None, ["SOLVER.WARMUP_EPOCH", "5"]).startswith(
        "command-line override: Non-existent key: SOLVER.WARMUP_EPOCH (did you mean SOLVER.WARMUP_EPOCHS"
    )
    assert _error(load_config, None, ["SOLVR.BASE_LR", "1"]).endswith("(did you mean SOLVER.BASE_LR?)")
    assert _error(load_config, None, ["SOLVER.MEAN", "1"]).endswith("(did you mean DATA.MEAN?)")  # wrong section
    path = tmp_path / "typo.yaml"
    path.write_text("SOLVER:\n  BASE_LR: 0.1\n  WARMUP_EPOCH: 5\n")
    assert _error(load_config, str(path)).startswith(
        f"{path}:3: Non-existent config key: SOLVER.WARMUP_EPOCH (did you mean SOLVER.WARMUP_EPOCHS"
    )


def test_missing_config_file_and_base_get_the_close_files(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert _error(load_config, "configs/IN1K/MVITv2_b.yaml") == (
        "config file not found: configs/IN1K/MVITv2_b.yaml (did you mean configs/IN1K/MVITv2_B.yaml?)"
    )
    (tmp_path / "base_model.yaml").write_text("SOLVER:\n  BASE_LR: 0.1\n")
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: base_modle.yaml\n")
    assert _error(load_config, str(child)).endswith(
        f"(the _BASE_ of {child}) (did you mean {tmp_path / 'base_model.yaml'}?)"
    )
    assert _error(load_config, str(tmp_path / "zzz.yaml")) == f"config file not found: {tmp_path / 'zzz.yaml'}"


def test_unknown_zoo_name_and_tag_get_the_close_names():
    assert "unknown model 'mvitv2_tt'; did you mean mvitv2_t" in _error(mvit.create_model, "mvitv2_tt")
    assert "MVIT.ARCH: unknown model 'mvitv2_tt'; did you mean mvitv2_t" in _error(
        load_config, None, ["MVIT.ARCH", "mvitv2_tt"]
    )
    assert "unknown weights 'mvitv2_t.fb_in1kk'; did you mean mvitv2_t.fb_in1k" in _error(
        mvit.create_model, "mvitv2_t.fb_in1kk"
    )


# ------------------------------------------------------------------------------ 4. export names its weights
DIGITS = ROOT / "configs/DEMO/MVITv2_digits.yaml"


def test_export_without_weights_names_the_three_options_before_anything(tmp_path):
    export = _tool("export")
    with pytest.raises(UserError) as info:
        export.main(["mvitv2_t", "--out", str(tmp_path / "out")])
    assert report(info.value) == "which weights? give --checkpoint FILE, --pretrained [TAG] or --random-weights"
    assert not (tmp_path / "out").exists()  # refused before the output folder or the model
    with pytest.raises(UserError, match="one source of weights, not --checkpoint and --random-weights"):
        export.main(["mvitv2_t", "--checkpoint", "x.pyth", "--random-weights", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="--name 'a/b': a file name without folders"):
        export.main(["mvitv2_t", "--random-weights", "--name", "a/b", "--out", str(tmp_path)])


def test_export_names_outputs_after_the_run_or_the_model(tmp_path, monkeypatch):
    export, written = _tool("export"), []
    monkeypatch.setattr(
        export, "export_onnx", lambda model, path, *a, **k: written.append(path.name) or path.touch() or path
    )
    torch.save(mvit.create_model(str(DIGITS)).state_dict(), tmp_path / "fitted.pth")
    common = ["--formats", "onnx", "--no-check", "--out", str(tmp_path)]
    export.main([str(DIGITS), "--random-weights", *common])
    export.main([str(DIGITS), "--random-weights", "--name", "trial", *common])
    export.main([str(DIGITS), "--checkpoint", str(tmp_path / "fitted.pth"), *common])
    assert written == ["MVITv2_digits.onnx", "trial.onnx", "fitted.onnx"]


# ------------------------------------------------------------------ 6. checkpoints: the CLI's way, stored configs
def test_strict_load_hint_says_the_command_line_way(tmp_path, make_tiny):
    from mvit.checkpoint import CheckpointError, load_checkpoint

    path = tmp_path / "five.pth"
    torch.save(make_tiny(num_classes=5).state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(make_tiny(num_classes=10), str(path))
    text = report(info.value)
    assert (
        "Its head has 5 classes, the model's 10: build the model with 5 (MODEL.NUM_CLASSES 5 on the command line"
        in text
    )
    assert "--set num_classes=5 where a tool has --set, num_classes=5 in Python" in text
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(make_tiny(embed_dim=32), str(path))
    assert "Is it another architecture? Name the one it was trained with (the run's config.yaml as --cfg" in report(
        info.value
    )


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_create_model_from_a_weights_file_of_this_project(tmp_path, make_tiny, suffix):
    from mvit.checkpoint import save_weights

    model = make_tiny(num_classes=7)
    path = str(tmp_path / f"w{suffix}")
    save_weights(model, path)
    loaded = mvit.create_model(path)
    assert loaded.config == model.config
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    # Overrides make it a fine-tuning load: the head of another size is left new.
    assert mvit.create_model(path, num_classes=3).config.num_classes == 3


def test_create_model_from_a_training_checkpoint_and_a_foreign_file(tmp_path, make_tiny):
    cfg = load_config(str(DIGITS))
    model = mvit.create_model(cfg)
    state = {"format": "mvit-train-state", "version": 1, "epoch": 1, "iter": 0, "step": 3}
    torch.save({**state, "model": model.state_dict(), "cfg": cfg.dump()}, tmp_path / "last.pyth")
    loaded = mvit.create_model(str(tmp_path / "last.pyth"))
    assert loaded.config == model.config
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    torch.save(make_tiny().state_dict(), tmp_path / "foreign.pth")
    assert _error(mvit.create_model, str(tmp_path / "foreign.pth")) == (
        f"{tmp_path / 'foreign.pth'}: holds weights without a model config (not written by this project); name the "
        f"architecture: create_model(<zoo name or yaml>, checkpoint={str(tmp_path / 'foreign.pth')!r})"
    )


# ------------------------------------------------------------------------- 7. convert makes its output folder
def test_convert_checkpoint_creates_the_output_folder(tmp_path, make_tiny):
    torch.save(make_tiny().state_dict(), tmp_path / "src.pth")
    dst = tmp_path / "new" / "folder" / "dst.safetensors"
    assert _tool("convert_checkpoint").main([str(tmp_path / "src.pth"), str(dst)]) == 0
    assert set(mvit.checkpoint.read_checkpoint(str(dst))["model"]) == set(make_tiny().state_dict())


# ------------------------------------------------------------------ 8. workers and output fit the machine
def test_loader_workers_are_capped_at_the_cpus_this_process_may_use(caplog):
    from mvit.data.loader import build_loader
    from mvit.utils.devices import available_cpus

    cpus = available_cpus()
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="mvit.data.loader"):
        warnings.simplefilter("error")  # torch's "Our suggested max number of worker ..." UserWarning
        loader = build_loader(list(range(8)), batch_size=2, train=False, seed=0, num_workers=cpus + 2)
        assert loader.num_workers == cpus
        assert build_loader(list(range(8)), batch_size=2, train=False, seed=0, num_workers=1).num_workers == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"DATA_LOADER.NUM_WORKERS {cpus + 2} lowered to {cpus}: the CPUs this process may use"
    ]


# -------------------------------------------------------------------------- 9. benchmark and model_info
def test_benchmark_models_take_zoo_names_and_short_keys():
    benchmark = _tool("benchmark")
    assert benchmark.parse_args(["--models", "mvitv2_t", "s", "mvitv2_s_16x4"]).models == ["t", "s", "video_s"]
    with pytest.raises(UserError) as info:
        benchmark.parse_args(["--models", "mvitv2_tt"])
    assert "argument --models: unknown model 'mvitv2_tt'; did you mean mvitv2_t" in report(info.value)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_zoo_table_says_it_takes_minutes_and_shows_progress(monkeypatch):
    model_info = _tool("model_info")
    # Building and FLOP counting are tested on their own: here the table's progress.
    monkeypatch.setattr(model_info, "MViT", lambda config: SimpleNamespace(config=config))
    monkeypatch.setattr(model_info, "count", lambda model: (1, 2.0, {}))
    stream = _Terminal()
    table = model_info.zoo_table(["mvitv2_t"], stream=stream)
    assert table.splitlines()[-1].startswith("| `mvitv2_t` | 224x224 | 1 | 2.000 |")
    text = stream.getvalue()
    assert text.startswith("building and counting the FLOPs of 1 zoo models: this takes minutes\n")
    assert "zoo table: 100%" in text and "1/1" in text  # tqdm's bar, on a terminal
    quiet = io.StringIO()  # not a terminal: the rows, no bar
    model_info.zoo_table(["mvitv2_t"], stream=quiet)
    assert "zoo table:" not in quiet.getvalue() and "| `mvitv2_t` |" in quiet.getvalue()
    assert "takes minutes" in model_info.__doc__
