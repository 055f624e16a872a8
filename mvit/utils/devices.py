"""What this process may use: CPUs (affinity, cgroup quota) and GPUs (count, CUDA, architecture), checked before
any process is spawned so that a mismatch is one line instead of a multi-process traceback; and the
``--device cpu|cuda|auto`` flag of the inference tools (``tools/predict.py``, the detection demo)."""

from __future__ import annotations

import argparse
import math
import os
from typing import Optional, Tuple

import torch

from ..errors import ConfigError, UserError

__all__ = [
    "DEVICE_CHOICES",
    "add_device_argument",
    "available_cpus",
    "check_cuda",
    "cuda_unavailable_reason",
    "resolve_device",
    "unsupported_arch",
]


def _cgroup_cpu_limit() -> Optional[float]:
    """CPUs allowed by the cgroup v2 quota of this process (``cpu.max``: "quota period"), None when unlimited."""
    try:
        with open("/proc/self/cgroup") as f:
            path = next((line.split(":", 2)[2].strip() for line in f if line.startswith("0::")), "/")
        for folder in (f"/sys/fs/cgroup{path}", "/sys/fs/cgroup"):
            try:
                with open(os.path.join(folder, "cpu.max")) as f:
                    quota, period = f.read().split()[:2]
                break
            except FileNotFoundError:
                continue
        else:
            return None
    except (OSError, ValueError, IndexError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask (``taskset``, SLURM's cgroup, ``docker --cpuset-cpus``)
    capped by a cgroup quota (``docker --cpus``), not ``os.cpu_count()``, which counts the whole machine."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def _visible_devices() -> str:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "unset" if value is None else repr(value)


def cuda_unavailable_reason() -> str:
    """Why ``torch.cuda.is_available()`` is False, in words."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a build without CUDA"
    return (
        f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU: none on this machine, a driver "
        f"older than CUDA {torch.version.cuda}, or CUDA_VISIBLE_DEVICES={_visible_devices()}"
    )


def _arch_number(arch: str) -> tuple[int, bool]:
    """``"sm_90a"`` -> (90, True): the compute capability and whether the code is for that exact one only."""
    base = arch.split("_", 1)[1]
    exact = base.endswith(("a", "f"))
    return int(base.rstrip("af")), exact


def unsupported_arch(device: int = 0) -> Optional[str]:
    """``"sm_70"`` when the installed torch has no kernels for GPU ``device`` (torch's ``get_arch_list``), else None.

    Machine code (``sm_XY``) runs on GPUs of the same major version and a minor at least Y; PTX (``compute_XY``)
    is compiled for any GPU of capability XY or newer.
    """
    arch_list = torch.cuda.get_arch_list()
    if not arch_list:  # unknown (e.g. ROCm): nothing to check
        return None
    major, minor = torch.cuda.get_device_capability(device)
    device_cc = 10 * major + minor
    for arch in arch_list:
        code_cc, exact = _arch_number(arch)
        if exact and code_cc == device_cc:
            return None
        if not exact and arch.startswith("sm_") and code_cc // 10 == major and code_cc % 10 <= minor:
            return None
        if not exact and arch.startswith("compute_") and code_cc <= device_cc:
            return None
    return f"sm_{device_cc}"


def check_cuda(processes: int, what: str, cpu_hint: str) -> None:
    """Stop with one line when ``processes`` GPUs cannot be used by this machine's torch.

    Args:
        processes: GPUs per machine the job asks for (one process each).
        what: the setting that asks for them, for the message (e.g. ``"NUM_GPUS 8"``).
        cpu_hint: how to ask for the CPU instead (e.g. ``"NUM_GPUS 0 trains on the CPU"``).

    Raises:
        ConfigError: CUDA is not available, fewer GPUs are visible than ``processes``, or a GPU's architecture is
            not in the installed torch's build (a V100, sm_70, with a wheel built for sm_75 and later).
    """
    if not torch.cuda.is_available():
        raise ConfigError(f"{what} asks for GPUs but CUDA is not available: {cuda_unavailable_reason()}; {cpu_hint}")
    visible = torch.cuda.device_count()
    if processes > visible:
        raise ConfigError(
            f"{what} asks for {processes} GPU(s) on this machine but {visible} are visible "
            f"(CUDA_VISIBLE_DEVICES={_visible_devices()}): processes would share a GPU; set it to at most {visible}"
        )
    for device in range(max(1, min(processes, visible))):
        arch = unsupported_arch(device)
        if arch is not None:
            raise ConfigError(
                f"GPU {device} ({torch.cuda.get_device_name(device)}, {arch}) is not supported by torch "
                f"{torch.__version__}, built for {' '.join(torch.cuda.get_arch_list())}: install a torch build for "
                f"{arch} (TORCH_INDEX_URL, see docs/gpu.md) or use other GPUs"
            )


DEVICE_CHOICES = ("auto", "cpu", "cuda")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` with :data:`DEVICE_CHOICES` (a bad value is argparse's usage error: one line with mvit's parser)."""
    parser.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default="auto",
        help="where the model runs; auto: cuda if a GPU is available, else cpu (default: %(default)s)",
    )


def resolve_device(choice: str, flag: str = "--device") -> Tuple[torch.device, str]:
    """The device for ``choice`` and the one log line that says which and why.

    Raises:
        UserError: an unknown choice, or ``cuda`` asked for where torch sees no GPU (one line naming the flag).
    """
    if choice not in DEVICE_CHOICES:
        raise UserError(f"{flag} {choice}: expected one of {', '.join(DEVICE_CHOICES)}")
    available = torch.cuda.is_available()
    if choice == "cuda" and not available:
        raise UserError(
            f"{flag} cuda: torch sees no GPU (torch.cuda.is_available() is False; this torch is built for CUDA "
            f"{torch.version.cuda or 'none'}); use {flag} cpu or {flag} auto"
        )
    if choice == "auto":
        device = torch.device("cuda" if available else "cpu")
        why = "auto: a GPU is available" if available else "auto: no GPU available"
    else:
        device, why = torch.device(choice), f"{flag} {choice}"
    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    return device, f"Device: {device.type}{name} ({why})"
