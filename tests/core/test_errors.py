"""Bad input gets a clear one-line error naming what is wrong."""

import pytest
import torch

import mvit
from mvit.checkpoint import load_checkpoint
from mvit.config import load_config
from mvit.errors import CheckpointError, ConfigError


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


def test_wrong_input_rank(make_tiny):
    model = make_tiny(ndim=2)
    with pytest.raises(ValueError) as err:
        model(torch.randn(1, 3, 4, 32, 32))
    assert "(B, C, H, W)" in _one_line(err) and "(1, 3, 4, 32, 32)" in str(err.value)


def test_wrong_channels(make_tiny):
    model = make_tiny(ndim=3)
    with pytest.raises(ValueError) as err:
        model(torch.randn(1, 1, 4, 32, 32))
    assert "3 input channels" in _one_line(err)


def test_unknown_config_key_in_file(tmp_path):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("MVIT:\n  EMBED_DIMS: 96\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(cfg_file))
    assert "bad.yaml" in _one_line(err) and "MVIT.EMBED_DIMS" in str(err.value)


def test_unknown_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["SOLVER.BASE_LRR", "0.1"])
    assert "SOLVER.BASE_LRR" in _one_line(err)
    with pytest.raises(ConfigError) as err:
        load_config(str(tmp_path / "nope.yaml"))
    assert "nope.yaml" in _one_line(err)


def test_unknown_model_name_or_missing_yaml(tmp_path):
    with pytest.raises(ConfigError) as err:
        mvit.create_model("mvitv2_tt")
    assert "unknown model 'mvitv2_tt'; did you mean mvitv2_t" in _one_line(err)
    with pytest.raises(ConfigError) as err:
        mvit.resolve_config("resnet50")
    assert "unknown model 'resnet50'" in _one_line(err)
    missing = tmp_path / "nope" / "MVITv2_T.yaml"
    with pytest.raises(ConfigError) as err:
        mvit.create_model(str(missing))
    assert _one_line(err).startswith(f"config file not found: {missing} (did you mean ")
    assert _one_line(err).endswith("configs/IN1K/MVITv2_T.yaml?)")  # the shipped file of that name
    with pytest.raises(ConfigError) as err:
        mvit.resolve_config("MVITv2_X.yaml")
    assert _one_line(err).startswith("config file not found: MVITv2_X.yaml")


def test_bad_architecture_key_names_the_file_and_key(tmp_path):
    cfg_file = tmp_path / "arch.yaml"
    cfg_file.write_text("MVIT:\n  ARCH: mvitv2_bb\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(cfg_file))
    assert _one_line(err).startswith(f"{cfg_file}: MVIT.ARCH: unknown model 'mvitv2_bb'; did you mean mvitv2_b")
    with pytest.raises(ConfigError) as err:
        load_config(None, ["MVIT.DEPTH", "deep"])
    assert _one_line(err) == "MVIT.DEPTH: expected an integer, got 'deep'"


def test_unknown_model_field():
    from mvit.errors import ConfigError

    with pytest.raises(TypeError, match=r"embed_dims \(did you mean embed_dim\?\)") as info:
        mvit.create_model("mvitv2_t", embed_dims=64)
    assert isinstance(info.value, ConfigError)  # a tool reports it as one line


def test_checkpoint_of_another_architecture_names_the_keys(tmp_path, make_tiny):
    path = tmp_path / "t.pth"
    torch.save(make_tiny(ndim=2, embed_dim=16).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(make_tiny(ndim=2, embed_dim=32), str(path))
    text = _one_line(err)
    assert "t.pth" in text and "patch_embed.proj.weight" in text and "mis-shaped" in text


def test_truncated_checkpoint(tmp_path, make_tiny):
    model = make_tiny(ndim=2)
    path = tmp_path / "cut.pyth"
    torch.save({"model_state": model.state_dict()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, str(path))
    assert "cut.pyth" in _one_line(err)


def test_missing_checkpoint(tmp_path, make_tiny):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(make_tiny(), str(tmp_path / "absent.pth"))


def test_report_keeps_a_message_that_ends_in_quotes_and_unquotes_a_key_error():
    from mvit.errors import ConfigError, report

    assert report(ConfigError('no such file: "my data/train.csv"')) == 'no such file: "my data/train.csv"'
    assert report(KeyError("MODEL.NUM_CLASSES")) == "MODEL.NUM_CLASSES"
    assert report(ValueError("")) == "ValueError"
