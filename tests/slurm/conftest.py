"""The cluster fixture of the SLURM launcher tests: a live SLURM cluster, or a skip with the reason.

The SLURM tests need a cluster that answers ``sinfo``: in CI, ``tools/slurm_local/start.sh`` starts a two-node
cluster in a folder of its own before the tests (``.ci/run`` exports ``MVIT_SLURM_DIR`` and ``SLURM_CONF``).
Without one they skip with the reason; the local-executor test runs anyway.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import pytest


def _slurm_env() -> tuple[dict[str, str], Optional[str]]:
    """The environment for SLURM commands and why no cluster can be used (``None`` when one answers)."""
    env = dict(os.environ)
    if "SLURM_CONF" not in env and "MVIT_SLURM_DIR" in env:  # the folder tools/slurm_local/start.sh printed
        local = Path(env["MVIT_SLURM_DIR"]) / "slurm.conf"
        if local.exists():
            env["SLURM_CONF"] = str(local)
    if shutil.which("sinfo", path=env.get("PATH")) is None:
        return env, "no SLURM client (sinfo) on PATH; start a test cluster with tools/slurm_local/start.sh"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return env, "sinfo did not answer in 15 s"
    states = out.stdout.split()
    if out.returncode or not any(s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states):
        detail = (out.stderr.strip() or " ".join(states) or "no nodes").splitlines()[0]
        return env, f"no usable SLURM cluster ({detail}); start one with tools/slurm_local/start.sh"
    return env, None


@pytest.fixture(scope="session")
def slurm_env() -> dict[str, str]:
    """Environment in which ``sbatch`` reaches a live cluster; skips the test when there is none."""
    env, reason = _slurm_env()
    if reason:
        pytest.skip(reason)
    return env
