"""tools/gpu_check.py --dry-run runs on the CPU (what it can), so the GPU check cannot rot."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu_check.md"
    done = subprocess.run(
        [sys.executable, "tools/gpu_check.py", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = out.read_text()
    assert "| numerics | explicit vs fused attention gradients | ok |" in table
    assert "| numerics | mvitv2_t CPU fp32 vs CPU float64 | ok |" in table
    assert "FAIL" not in table
    for section in ("environment", "kernels", "memory", "engine", "detection", "speed"):
        assert f"| {section} |" in table


def test_gpu_check_without_a_gpu_is_one_line():
    done = subprocess.run([sys.executable, "tools/gpu_check.py"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: no CUDA device") and done.stderr.count("\n") == 1
