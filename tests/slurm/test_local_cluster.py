"""tools/slurm_local: each start gets a folder and ports of its own, so two clusters on one host never meet."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
START, STOP = ROOT / "tools" / "slurm_local" / "start.sh", ROOT / "tools" / "slurm_local" / "stop.sh"
PATH = f"{os.environ.get('PATH', '')}:/usr/sbin"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(c, path=PATH) for c in ("slurmctld", "slurmd", "munged", "sinfo")),
    reason="needs root and Debian's slurmctld, slurmd, munge and slurm-client (tools/slurm_local/start.sh)",
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MVIT_SLURM_"))}
    return {**env, "PATH": PATH, **extra}


def _idle(folder: str) -> bool:
    out = subprocess.run(
        ["sinfo", "-h", "-o", "%T"],
        env=_env(SLURM_CONF=f"{folder}/slurm.conf"),
        capture_output=True,
        text=True,
        timeout=15,
    )
    return out.returncode == 0 and out.stdout.split() == ["idle"]


def _port(folder: str) -> str:
    return re.search(r"^SlurmctldPort=(\d+)", Path(folder, "slurm.conf").read_text(), re.MULTILINE)[1]


def test_two_local_clusters_run_side_by_side(tmp_path):
    folders: list[str] = []
    try:
        # No folder given: start.sh makes one and prints where it is as an eval-able export line.
        first = subprocess.run(["bash", str(START)], env=_env(), capture_output=True, text=True, timeout=120)
        found = re.search(r"^export MVIT_SLURM_DIR=(\S+) SLURM_CONF=(\S+)$", first.stdout, re.MULTILINE)
        assert first.returncode == 0 and found, first.stdout + first.stderr
        folders.append(found[1])
        assert found[2] == f"{found[1]}/slurm.conf"

        second = str(tmp_path / "second")
        done = subprocess.run(
            ["bash", str(START)], env=_env(MVIT_SLURM_DIR=second), capture_output=True, text=True, timeout=120
        )
        folders.append(second)
        assert done.returncode == 0, done.stdout + done.stderr
        assert found[1] != second and _port(found[1]) != _port(second)
        assert _idle(found[1]) and _idle(second)

        # Stopping one leaves the other running.
        subprocess.run(["bash", str(STOP), found[1]], env=_env(), capture_output=True, timeout=120, check=True)
        assert not _idle(found[1]) and _idle(second)
    finally:
        for folder in folders:
            subprocess.run(["bash", str(STOP), folder], env=_env(), capture_output=True, timeout=120)
        if folders:
            shutil.rmtree(folders[0], ignore_errors=True)
