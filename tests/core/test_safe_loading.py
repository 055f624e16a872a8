"""Loading never runs code from a file: crafted pickles are refused, released layouts load, safetensors round-trip."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mvit.checkpoint import load_checkpoint, read_checkpoint, save_weights
from mvit.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[2]


class _CreatesFile:
    """Unpickling this object calls ``open(path, "w")``: a stand-in for any code a crafted file could run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _write_torch(path: Path, payload: object) -> None:
    torch.save(payload, path)


def _write_pickle(path: Path, payload: dict) -> None:
    """detectron2's layout: numpy arrays in a plain pickle."""
    arrays = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in payload.pop("model_state", {}).items()}
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, **payload}, f)


@pytest.mark.parametrize(
    "name, write",
    [("evil.pyth", _write_torch), ("evil.pth", _write_torch), ("model_final_evil.pkl", _write_pickle)],
)
def test_code_carrying_pickles_are_refused(tmp_path, make_tiny, name, write):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    write(path, {"model_state": make_tiny().state_dict(), "note": _CreatesFile(str(marker))})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(make_tiny(), str(path))
    message = str(err.value)
    assert "io.open" in message and str(path) in message
    assert "trust_pickle=True" in message and "--trust-pickle" in message
    assert not marker.exists()


def test_trust_pickle_is_the_explicit_opt_in(tmp_path, make_tiny):
    marker = tmp_path / "ran"
    path = tmp_path / "trusted.pyth"
    _write_torch(path, {"model_state": make_tiny().state_dict(), "note": _CreatesFile(str(marker))})
    assert load_checkpoint(make_tiny(), str(path), trust_pickle=True).ok
    assert marker.exists()  # the unrestricted path really is unrestricted: it ran the file's code


def test_numpy_metadata_of_released_files_loads_without_trust(tmp_path, make_tiny, perturb):
    source = perturb(make_tiny())
    path = tmp_path / "official.pyth"
    extra = {
        "best_acc": np.float64(82.3),
        "epoch": np.int64(300),
        "hist": np.zeros(3, np.float32),
        "dt": np.dtype("f4"),
    }
    torch.save({"model_state": source.state_dict(), **extra}, path)
    obj = read_checkpoint(str(path))
    assert obj["best_acc"] == 82.3 and obj["dt"] == np.float32
    target = make_tiny()
    assert load_checkpoint(target, str(path)).ok
    assert torch.equal(target.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def test_detectron2_pickle_with_only_arrays_loads_restricted(tmp_path, make_tiny):
    state = {f"backbone.bottom_up.{k}": v.numpy() for k, v in make_tiny(num_classes=0).state_dict().items()}
    _write_pickle(tmp_path / "model_final.pkl", {"model": state, "__author__": "Detectron2 Model Zoo"})
    obj = read_checkpoint(str(tmp_path / "model_final.pkl"))
    assert all(isinstance(v, torch.Tensor) for v in obj["model"].values())


def test_safetensors_round_trip(tmp_path, make_tiny, perturb):
    source = perturb(make_tiny())
    path = tmp_path / "w.safetensors"
    save_weights(source, str(path))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]  # the temporary file was renamed
    obj = read_checkpoint(str(path))
    assert obj["format"] == "mvit-weights" and obj["model_config"]["embed_dim"] == 16
    target = make_tiny()
    assert load_checkpoint(target, str(path)).format == "mvit"
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(source.eval()(x), target.eval()(x))


def test_corrupt_safetensors_is_one_line(tmp_path, make_tiny):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_checkpoint(make_tiny(), str(path))


def test_convert_checkpoint_writes_safetensors_from_a_trusted_pickle(tmp_path, make_tiny, perturb):
    source = perturb(make_tiny())
    marker = tmp_path / "ran"
    src = tmp_path / "legacy.pyth"
    _write_torch(src, {"model_state": source.state_dict(), "note": _CreatesFile(str(marker))})
    dst = tmp_path / "clean.safetensors"
    cmd = [sys.executable, str(ROOT / "tools/convert_checkpoint.py"), str(src), str(dst)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "--trust-pickle" in refused.stderr and "Traceback" not in refused.stderr
    assert not marker.exists() and not dst.exists()
    subprocess.run([*cmd, "--trust-pickle"], check=True, capture_output=True, text=True, env=env)
    marker.unlink()
    target = make_tiny()
    assert load_checkpoint(target, str(dst)).ok and not marker.exists()
    assert torch.equal(target.blocks[1].attn.qkv.weight, source.blocks[1].attn.qkv.weight)
