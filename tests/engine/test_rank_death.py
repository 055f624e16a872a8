"""A process of a 2-process run_net job dies mid-epoch: the job stops at once naming it, and resumes exactly.

Rank 1 kills itself (SIGKILL) from a test-only dataset wrapper while it loads a given training item; a marker
file makes that happen on the first run only. The wrapper is a project module the test adds to run_net's
``PROJECTS``, so every spawned process imports it as it imports the real projects.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mvit.checkpoint.state import load_training_state
from mvit.runtime.launch import RANK_LOST_EXIT_CODE

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("classification_fixtures", ROOT / "tests/classification/conftest.py")
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)

# 24 training images, a global batch of 4 over 2 ranks: 6 iterations (12 items per rank) per epoch.
OPTS = (
    "TRAIN.DATASET", "rank_killer", "SOLVER.MAX_EPOCH", 2, "TRAIN.CHECKPOINT_ITER_PERIOD", 1,
    "TRAIN.EVAL_PERIOD", 10, "TEST.ENABLE", False, "MIXUP.ENABLE", False, "AUG.AA_TYPE", "",
)  # fmt: skip
# Rank 1's 17th item: the first of epoch 1's third iteration.
KILL_AT_ITEM = 17
# Generous: the job must end by itself, long before this (a hang in a collective would hit it).
TIMEOUT_S = 180

KILLER = '''
"""Test-only project: rank 1 kills itself (or its machine's process group) while loading item MVIT_TEST_KILL_AT."""
import os
import signal

from torch.utils.data import Dataset

from mvit.data import register_dataset
from projects.classification import build_imagenet


class _Killer(Dataset):
    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):  # classes, train_hooks ... of the real dataset
        return getattr(self.__dict__["inner"], name)

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        self.calls += 1
        marker = os.environ.get("MVIT_TEST_KILL_MARKER", "")
        if os.environ.get("RANK") == "1" and self.calls == int(os.environ.get("MVIT_TEST_KILL_AT", 0)):
            if marker and not os.path.exists(marker):
                open(marker, "w").close()
                how = os.environ.get("MVIT_TEST_KILL_HOW", "rank")
                if how == "rank":
                    os.kill(os.getpid(), signal.SIGKILL)
                else:  # the whole machine: this process, its siblings and the launching process
                    os.killpg(os.getpgid(0), signal.SIGSTOP if how == "freeze" else signal.SIGKILL)
        return self.inner[index]


def build(cfg, split):
    dataset = build_imagenet(cfg, split)
    return _Killer(dataset) if split == "train" else dataset


register_dataset("rank_killer", build)
'''

WRAPPER = """
import importlib.util
import sys

from mvit.errors import run_cli

spec = importlib.util.spec_from_file_location("run_net", {run_net!r})
run_net = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_net)
run_net.PROJECTS = (*run_net.PROJECTS, "rank_killer")

if __name__ == "__main__":
    run_cli(lambda: run_net.main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """``start(out, *opts, kill=..., env=...) -> Popen``: run_net plus the killer project, in its own session."""
    root = tmp_path_factory.mktemp("rank_death")
    (root / "rank_killer.py").write_text(KILLER)
    (root / "run_net_killer.py").write_text(WRAPPER.format(run_net=str(ROOT / "tools" / "run_net.py")))
    data = fixtures.make_image_tree(root / "data")
    cfg = root / "tiny.yaml"
    cfg.write_text(fixtures.TINY_YAML)

    def start(out: Path, *opts: object, kill: str = "", at: int = KILL_AT_ITEM, marker: Path | None = None, **env: str):
        cmd = [sys.executable, str(root / "run_net_killer.py"), "--cfg", str(cfg)]
        cmd += ["DATA.PATH_TO_DATA_DIR", str(data), "OUTPUT_DIR", str(out), *map(str, OPTS), *map(str, opts)]
        environ = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{root}", "OMP_NUM_THREADS": "1", **env}
        if kill:
            environ.update(MVIT_TEST_KILL_AT=str(at), MVIT_TEST_KILL_HOW=kill, MVIT_TEST_KILL_MARKER=str(marker))
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    return start


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    """Wait (bounded) for ``proc``; returns its exit code and stderr. A hang fails the test."""
    try:
        _, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"the job did not stop within {TIMEOUT_S}s") from None
    return proc.returncode, err


def _init(port: int) -> tuple[str, str]:
    return ("INIT_METHOD", f"tcp://127.0.0.1:{port}")


def test_a_killed_rank_stops_the_job_with_its_name_and_the_rerun_ends_with_the_same_weights(job, tmp_path):
    code, err = _finish(job(tmp_path / "ref", "NUM_GPUS", 2, *_init(_free_port())))
    assert code == 0, err[-3000:]
    reference = load_training_state(str(tmp_path / "ref" / "checkpoints" / "last.pyth"))

    out, marker = tmp_path / "out", tmp_path / "killed"
    first = job(out, "NUM_GPUS", 2, *_init(_free_port()), kill="rank", marker=marker)
    code, err = _finish(first)
    assert marker.exists()
    assert code == RANK_LOST_EXIT_CODE, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    assert "rank 1 (pid " in lines[0] and "killed by signal 9 (SIGKILL)" in lines[0], lines[0]
    stopped = load_training_state(str(out / "checkpoints" / "last.pyth"))
    assert (stopped["epoch"], stopped["iter"]) in ((1, 1), (1, 2)), (stopped["epoch"], stopped["iter"])
    assert f"{out / 'checkpoints' / 'last.pyth'} (epoch 1, iteration {stopped['iter']})" in lines[0], lines[0]
    assert "Traceback" not in err, err[-3000:]

    # The same command again (a new port: the old one may linger in TIME_WAIT).
    code, err = _finish(job(out, "NUM_GPUS", 2, *_init(_free_port()), kill="rank", marker=marker))
    assert code == 0, err[-3000:]
    assert "resumed from" in (out / "log.txt").read_text()
    final = load_training_state(str(out / "checkpoints" / "last.pyth"))
    assert (final["epoch"], final["iter"], final["step"]) == (reference["epoch"], reference["iter"], reference["step"])
    for name, value in reference["model"].items():
        assert torch.equal(value, final["model"][name]), name
    for key, value in reference["optimizer"]["state"].items():
        assert torch.equal(value["exp_avg"], final["optimizer"]["state"][key]["exp_avg"]), key


@pytest.mark.parametrize("how", ["machine", "freeze"])
def test_the_other_machine_stops_naming_the_lost_one(job, tmp_path, how):
    """Two machines on one host (NUM_SHARDS 2, one process each); machine 1's processes are all killed
    ("machine": sockets close) or all frozen ("freeze": no socket closes, the collective timeout ends the wait)."""
    port, env = _free_port(), {"MVIT_DIST_TIMEOUT": "15"}
    shard = ("NUM_GPUS", 1, "NUM_SHARDS", 2, *_init(port))
    machine0 = job(tmp_path / "m0", *shard, "SHARD_ID", 0, **env)
    # Early in epoch 0 (the third iteration): the resume itself is the first test's.
    machine1 = job(tmp_path / "m1", *shard, "SHARD_ID", 1, kill=how, at=5, marker=tmp_path / "killed", **env)
    try:
        code, err = _finish(machine0)
    finally:
        os.killpg(machine1.pid, signal.SIGKILL)
        machine1.communicate()
    assert (tmp_path / "killed").exists()
    assert code == RANK_LOST_EXIT_CODE, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    assert "machine 0 (rank 0 of 2) lost contact with rank 1 on machine 1" in lines[0], lines[0]
    assert "rerun the same command to resume from the last complete checkpoint" in lines[0], lines[0]


def test_collective_timeout_comes_from_the_environment(monkeypatch):
    from mvit.errors import ConfigError
    from mvit.utils.distributed import DEFAULT_TIMEOUT_S, TIMEOUT_ENV, collective_timeout_s

    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert collective_timeout_s() == DEFAULT_TIMEOUT_S
    monkeypatch.setenv(TIMEOUT_ENV, "7.5")
    assert collective_timeout_s() == 7.5
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(ConfigError, match=TIMEOUT_ENV):
            collective_timeout_s()


def test_peer_loss_is_told_from_other_runtime_errors():
    from mvit.utils.distributed import is_peer_loss

    # gloo's message when a peer process died (its socket closed), and when one stopped answering.
    assert is_peer_loss(RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:44268"))
    assert is_peer_loss(RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 15000ms for recv"))
    assert not is_peer_loss(RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"))
    assert not is_peer_loss(ValueError("Connection closed by peer"))


def test_a_crashed_process_is_re_raised_with_its_traceback_and_a_code_carrying_file_is_refused(tmp_path):
    """The child's error file is read with the restricted unpickler: its traceback text comes back, a pickle that
    would run code is refused."""
    import pickle
    from types import SimpleNamespace

    import torch.multiprocessing as mp

    from mvit.errors import CheckpointError

    launch_module = importlib.import_module("mvit.runtime.launch")  # the package re-exports the function `launch`
    error_file = tmp_path / "error.pickle"
    error_file.write_bytes(pickle.dumps("Traceback (most recent call last):\nRuntimeError: boom"))
    context = SimpleNamespace(
        processes=[SimpleNamespace(pid=11), SimpleNamespace(pid=12)], error_files=["", str(error_file)]
    )
    with pytest.raises(mp.ProcessRaisedException, match="RuntimeError: boom") as info:
        launch_module._raise_crash(context, {1: 1})
    assert info.value.error_index == 1 and info.value.error_pid == 12

    marker = tmp_path / "ran"
    error_file.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(CheckpointError, match="refused"):
        launch_module._raise_crash(context, {1: 1})
    assert not marker.exists()


class _Payload:
    """Unpickling it would create a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))
