"""The core's boundary: importing it has no side effects, it names no project, and every entry point reports bad
input as one line with exit code 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Optional dependencies of the projects and the launcher that the core must not import.
OPTIONAL = ("matplotlib", "submitit", "detectron2", "pytorchvideo", "pycocotools")


def _python(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """A fresh interpreter in the repository root (the package as installed, or on PYTHONPATH), warnings off."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-W", "ignore", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_importing_the_core_pulls_in_no_engine_and_no_optional_dependency() -> None:
    code = f"""
import json, signal, sys
handlers = {{s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)}}
import mvit, mvit.models, mvit.checkpoint, mvit.errors
mvit.create_model("mvitv2_t")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {OPTIONAL!r} or m.split(".")[:2] == ["mvit", "engine"])
changed = [s.name for s, h in handlers.items() if signal.getsignal(s) != h]
print(json.dumps({{"loaded": loaded, "signals": changed}}))
"""
    proc = _python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"loaded": [], "signals": []}


def test_importing_the_engine_changes_no_process_state() -> None:
    """No matplotlib backend switch, no exit handler, no signal handler: they come with the first use."""
    code = """
import atexit, json, signal, sys
import torch, torch.utils.data, torch.multiprocessing, timm, fvcore, tqdm, iopath.common.file_io  # dependencies first
handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)}
exit_handlers = atexit._ncallbacks()
import mvit.engine
print(json.dumps({
    "matplotlib": "matplotlib" in sys.modules,
    "exit_handlers": atexit._ncallbacks() - exit_handlers,
    "signals": [s.name for s, h in handlers.items() if signal.getsignal(s) != h],
}))
"""
    proc = _python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"matplotlib": False, "exit_handlers": 0, "signals": []}


def test_the_core_names_no_project_and_no_launcher() -> None:
    imports = re.compile(r"^\s*(?:from|import)\s+(projects|tools|detectron2|pytorchvideo|pycocotools)\b", re.M)
    names = re.compile(r"projects\.(?:classification|video|detection)|projects/(?:classification|video|detection)")
    offending = []
    for path in sorted((ROOT / "mvit").rglob("*.py")):
        text = path.read_text()
        offending += [f"{path.relative_to(ROOT)}: {m.group(0).strip()}" for m in imports.finditer(text)]
        offending += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in names.finditer(text)]
    assert not offending


def test_scripts_import_the_installed_package() -> None:
    scripts = sorted((ROOT / "tools").glob("*.py")) + sorted((ROOT / "projects").rglob("*.py"))
    offending = [str(p.relative_to(ROOT)) for p in scripts if "sys.path" in p.read_text()]
    assert not offending, "scripts must not edit sys.path (the package is installed; PYTHONPATH in a checkout)"


# (command line, a string the one error line must contain); files that do not exist and bad flag values.
BAD_INPUTS = {
    "run_net": (["tools/run_net.py", "--cfg", "missing_config.yaml"], "missing_config.yaml"),
    "run_net_flag": (["tools/run_net.py", "--cfg", "x.yaml", "--stop-signals", "NOPE"], "NOPE"),
    "predict": (
        ["tools/predict.py", "--cfg", "configs/DEMO/MVITv2_digits.yaml", "--checkpoint", "missing.pyth", "README.md"],
        "missing.pyth",
    ),
    "export": (["tools/export.py", "no_such_model", "--out", "{tmp}"], "no_such_model"),
    "export_flag": (["tools/export.py", "mvitv2_t", "--batch", "two"], "--batch"),
    "convert_checkpoint": (["tools/convert_checkpoint.py", "missing.pyth", "{tmp}/out.pyth"], "missing.pyth"),
    "submit": (["tools/submit.py", "--cfg", "missing_config.yaml", "--job-dir", "{tmp}"], "missing_config.yaml"),
    "submit_flag": (
        ["tools/submit.py", "--cfg", "configs/DEMO/MVITv2_digits.yaml", "--job-dir", "{tmp}", "--nodes", "0"],
        "--nodes",
    ),
    "model_info": (["tools/model_info.py", "no_such_model"], "no_such_model"),
    "train_net": (["projects/detection/train_net.py", "--config-file", "missing_config.py"], "missing_config.py"),
    "train_net_override": (
        [
            "projects/detection/train_net.py",
            "--config-file",
            "projects/detection/configs/mask_rcnn_mvitv2_demo_synthetic.py",
            "train.max_iter",
        ],
        "train.max_iter",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_entry_points_report_bad_input_in_one_line(case: str, tmp_path: Path) -> None:
    argv, name = BAD_INPUTS[case]
    if argv[0].startswith("projects/detection"):
        pytest.importorskip(
            "detectron2.engine", reason="detectron2 is not installed (bash tools/install_detectron2.sh)"
        )
    proc = _python(*(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], proc.stderr
