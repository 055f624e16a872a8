"""GPU launch paths checked on the CPU with mocks of ``torch.cuda`` / ``torch.distributed`` (issue 19, items 1-4, 11).

No test needs a GPU: the machine's GPUs are what the mocks say, and collectives are recorded, not run.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import mvit.runtime.launch  # noqa: F401 - the module, not the function mvit.runtime re-exports
from mvit.config import get_cfg
from mvit.errors import ConfigError
from mvit.runtime.lock import OutputDirLock
from mvit.runtime.submit import load_script
from mvit.utils import devices, distributed

ROOT = Path(__file__).resolve().parents[2]
launch_mod = sys.modules["mvit.runtime.launch"]


def _fake_gpus(monkeypatch, count: int, capability=(8, 0), arch=("sm_80", "sm_90"), visible="0,1") -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(arch))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)


def _no_spawn(*_args, **_kwargs):
    raise AssertionError("processes were spawned")


def _cfg(**overrides):
    cfg = get_cfg()
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


# -- item 1: NUM_GPUS larger than the GPUs visible -----------------------------------------------------------------


def test_more_processes_than_gpus_is_one_line_exit_2_before_spawning(monkeypatch, capsys):
    _fake_gpus(monkeypatch, 2)
    monkeypatch.setattr(launch_mod.mp, "start_processes", _no_spawn)
    run_net = load_script(str(ROOT / "tools" / "run_net.py"))
    code = run_net.main(["--cfg", str(ROOT / "configs/DEMO/MVITv2_digits.yaml"), "DEVICE", "cuda", "NUM_GPUS", "4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: NUM_GPUS 4 asks for 4 GPU(s)"), err
    assert "2 are visible (CUDA_VISIBLE_DEVICES='0,1')" in err[0]


# -- item 2: CUDA requested but unavailable; a GPU the installed torch was not built for -----------------------------


def test_cuda_unavailable_stops_unless_the_cpu_was_asked_for(monkeypatch):
    _fake_gpus(monkeypatch, 0)
    monkeypatch.setattr(launch_mod.mp, "start_processes", _no_spawn)
    ran = []
    with pytest.raises(ConfigError, match=r"NUM_GPUS 1 asks for GPUs but CUDA is not available: torch .* finds no"):
        launch_mod.launch(_cfg(NUM_GPUS=1), lambda cfg: ran.append(cfg))
    with pytest.raises(ConfigError, match="CUDA is not available"):
        distributed.get_device(_cfg(NUM_GPUS=1))  # the API path (engine.run without launch) does not fall back either
    assert ran == []
    # NUM_GPUS 0 (PySlowFast's CPU) and DEVICE cpu are the user asking for the CPU.
    assert launch_mod.launch(_cfg(NUM_GPUS=0), distributed.get_device) == torch.device("cpu")
    assert launch_mod.launch(_cfg(NUM_GPUS=1, DEVICE="cpu"), distributed.get_device) == torch.device("cpu")
    with pytest.raises(ConfigError, match="DEVICE 'gpu': expected cuda or cpu"):
        launch_mod.launch(_cfg(NUM_GPUS=1, DEVICE="gpu"), distributed.get_device)


def test_gpu_architecture_missing_from_torch_build_is_named(monkeypatch):
    _fake_gpus(monkeypatch, 1, capability=(7, 0), arch=("sm_75", "sm_80", "sm_90", "compute_90"))
    with pytest.raises(
        ConfigError, match=r"GPU 0 \(Fake GPU, sm_70\) is not supported by torch .*, built for sm_75 sm_80"
    ):
        launch_mod.check_devices(_cfg(NUM_GPUS=1))


@pytest.mark.parametrize(
    "capability, arch, supported",
    [
        ((8, 6), ("sm_80",), True),  # same major, newer minor: the sm_80 machine code runs
        ((9, 0), ("sm_80",), False),  # another major: no machine code
        ((12, 0), ("sm_80", "compute_90"), True),  # PTX is compiled for newer GPUs
        ((9, 0), ("sm_90a",), True),
        ((10, 0), ("sm_90a",), False),  # arch-specific code runs on that capability only
    ],
)
def test_architecture_rule(monkeypatch, capability, arch, supported):
    _fake_gpus(monkeypatch, 1, capability=capability, arch=arch)
    assert (devices.unsupported_arch(0) is None) == supported


# -- item 3: NCCL's errors are a lost peer; bounded, configurable timeout; async error handling ----------------------


@pytest.mark.parametrize(
    "err, lost",
    [
        (dist.DistBackendError("NCCL communicator was aborted on rank 1."), True),
        (
            RuntimeError("[Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=9, OpType=ALLREDUCE)"),
            True,
        ),
        (
            dist.DistBackendError(
                "NCCL error in: ProcessGroupNCCL.cpp:1970, remote process exited or there was a network error, NCCL version 2.21.5\nncclRemoteError: A call failed possibly due to a network error or a remote process exiting prematurely."
            ),
            True,
        ),  # noqa: E501
        (RuntimeError("NCCL error: ncclSystemError: System call (e.g. socket, malloc) failed"), True),
        (
            dist.DistBackendError("NCCL error: ncclInvalidUsage: This usually reflects invalid usage of NCCL library."),
            False,
        ),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), False),
    ],
)
def test_nccl_errors_are_a_lost_peer(err, lost):
    assert distributed.is_peer_loss(err) is lost


def test_timeout_from_config_env_overrides_and_nccl_error_handling_set_before_init(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.collective_timeout_s(_cfg(DIST_TIMEOUT_S=60.0)) == 60.0
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "5")
    assert distributed.collective_timeout_s(_cfg(DIST_TIMEOUT_S=60.0)) == 5.0
    calls = []
    monkeypatch.setattr(
        dist, "init_process_group", lambda **kw: calls.append((os.environ.get("TORCH_NCCL_ASYNC_ERROR_HANDLING"), kw))
    )
    monkeypatch.delenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", raising=False)
    distributed.init_process_group("nccl", "env://", 2, 0, timeout_s=60.0)
    assert calls[-1][0] == "2" and calls[-1][1]["timeout"].total_seconds() == 60.0
    monkeypatch.setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # the user's own choice stays
    distributed.init_process_group("nccl", "env://", 2, 0)
    assert calls[-1][0] == "1"


# -- item 4: the device is current before the process group exists; device_id / device_ids ---------------------------


def test_spawned_rank_sets_its_device_before_the_group_and_binds_it(monkeypatch):
    _fake_gpus(monkeypatch, 2)
    events = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: events.append(("set_device", torch.device(device))))
    monkeypatch.setattr(
        dist, "init_process_group", lambda **kw: events.append(("init", kw["backend"], kw.get("device_id")))
    )
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    for key in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.setenv(key, "")
    cfg = _cfg(NUM_GPUS=2, CPU_THREADS=1)
    launch_mod._spawned(1, cfg, lambda cfg: events.append(("run",)), (), (), ())
    cuda1 = torch.device("cuda", 1)
    assert events[:2] == [("set_device", cuda1), ("init", "nccl", cuda1)], events
    assert events[-1] == ("run",)


def test_nccl_barrier_names_this_process_gpu(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda: dist.Backend.NCCL)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(dist, "barrier", lambda **kw: calls.append(kw))
    distributed.synchronize()
    assert calls == [{"device_ids": [3]}]


# -- item 11: CPUs this process may use; a file system without flock --------------------------------------------------


def test_threads_come_from_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(devices, "_cgroup_cpu_limit", lambda: None)
    assert devices.available_cpus() == 4
    monkeypatch.setattr(devices, "_cgroup_cpu_limit", lambda: 1.5)  # docker --cpus 1.5
    assert devices.available_cpus() == 2
    monkeypatch.setattr(devices, "_cgroup_cpu_limit", lambda: None)
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    launch_mod._run(_cfg(NUM_GPUS=0, CPU_THREADS=0), lambda cfg: None, (), ())
    assert threads == [2]  # 4 CPUs of the affinity mask / 2 processes, not 64 / 2


def test_lock_without_flock_warns_and_goes_on(tmp_path, monkeypatch, caplog):
    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with caplog.at_level(logging.WARNING, logger="mvit.runtime.lock"):
        with OutputDirLock(str(tmp_path / "out")) as lock:
            assert lock.held and lock.owner()["pid"] == os.getpid()
    assert "cannot lock files" in caplog.text
    assert not (tmp_path / "out" / ".lock").exists()
