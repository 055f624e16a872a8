"""The core's boundary: importing it has no side effects, it names no project, and every entry point reports bad
input as one line with exit code 2."""

from __future__ import annotations

import ast
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
    """No matplotlib (so no backend switch), launcher or project dependency, no exit or signal handler."""
    code = f"""
import atexit, json, signal, sys
import torch, torch.utils.data, torch.multiprocessing, timm, fvcore, tqdm, iopath.common.file_io  # dependencies first
handlers = {{s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)}}
exit_handlers = atexit._ncallbacks()
import mvit.engine
print(json.dumps({{
    "optional": sorted(m for m in sys.modules if m.split(".")[0] in {OPTIONAL!r}),
    "exit_handlers": atexit._ncallbacks() - exit_handlers,
    "signals": [s.name for s, h in handlers.items() if signal.getsignal(s) != h],
}}))
"""
    proc = _python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"optional": [], "exit_handlers": 0, "signals": []}


def test_the_core_names_no_project_and_no_launcher() -> None:
    imports = re.compile(r"^\s*(?:from|import)\s+(projects|tools|detectron2|pytorchvideo|pycocotools)\b", re.M)
    names = re.compile(r"projects\.(?:classification|video|detection)")  # a module name, not a pointer in a message
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
    "export": (["tools/export.py", "no_such_model", "--random-weights", "--out", "{tmp}"], "no_such_model"),
    "export_flag": (["tools/export.py", "mvitv2_t", "--batch", "two"], "--batch"),
    "export_out": (
        ["tools/export.py", "mvitv2_t", "--random-weights", "--out", "README.md/exports"],
        "README.md/exports",
    ),
    "export_weights": (["tools/export.py", "mvitv2_t", "--out", "{tmp}"], "--random-weights"),
    "convert_checkpoint": (["tools/convert_checkpoint.py", "missing.pyth", "{tmp}/out.pyth"], "missing.pyth"),
    "convert_checkpoint_out": (
        ["tools/convert_checkpoint.py", "zoo:mvitv2_t.fb_in1k", "README.md/out.pyth"],
        "README.md/out.pyth",
    ),
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


# Import name -> distribution, where they differ.
_DISTRIBUTION = {"PIL": "Pillow", "sklearn": "scikit-learn", "skimage": "scikit-image", "yaml": "pyyaml"}
# Installed by tools/install_detectron2.sh, not by setup.py (detectron2 has no wheel for every Python / torch).
_DETECTRON2 = {"detectron2", "omegaconf", "hydra"}


def _setup_requirements() -> tuple[list[str], dict[str, list[str]]]:
    """``install_requires`` and ``extras_require`` of setup.py, read without running setuptools."""
    captured: dict = {}
    code = re.sub(r"^from setuptools import .*$", "", (ROOT / "setup.py").read_text(), flags=re.M)
    stubs = {"find_packages": lambda **_: [], "Extension": lambda *_, **__: None}
    exec(code, {**stubs, "setup": lambda **kw: captured.update(kw)})  # noqa: S102
    return captured["install_requires"], captured["extras_require"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def _third_party_imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in ``path`` (lazy ones inside functions too)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"mvit", "projects", "__future__"}


def test_setup_extras_cover_every_import() -> None:
    core, extras = _setup_requirements()
    areas = {  # files -> what installs them
        "mvit/[!e]*.py": core,
        "mvit/models/*.py": core,
        "mvit/checkpoint/*.py": core,
        "mvit/config/*.py": core,
        "mvit/utils/*.py": core + extras["train"],
        "mvit/export.py": core + extras["export"],
        "mvit/engine/*.py": core + extras["train"] + extras["slurm"],
        "mvit/data/*.py": core + extras["train"],
        "mvit/runtime/*.py": core + extras["slurm"],
        "projects/classification/**/*.py": core + extras["train"],
        "projects/video/**/*.py": core + extras["video"],
        "projects/detection/**/*.py": core + extras["detection"] + extras["slurm"],
    }
    # Optional imports of the core, made inside the function that needs them (one line when missing): their extra.
    lazy = {
        "mvit/inference.py": {"PIL": "train", "av": "video"},
        "mvit/checkpoint/hf_hub.py": {"huggingface_hub": "hub"},
    }
    missing = []
    for pattern, requirements in areas.items():
        allowed = _names(requirements)
        for path in sorted(ROOT.glob(pattern)):
            optional = lazy.get(str(path.relative_to(ROOT)), {})
            for name in sorted(_third_party_imports(path)):
                dist = _DISTRIBUTION.get(name, name).lower()
                if name in optional and dist in _names(extras[optional[name]]):
                    continue
                if dist not in allowed and not (pattern.startswith("projects/detection") and name in _DETECTRON2):
                    missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, "imports no requirement of their area installs"
    assert _names(core) <= {"torch", "torchvision", "fvcore", "iopath", "numpy", "pyyaml", "safetensors", "tqdm"}
    assert _names(extras["all"]) == set().union(*(_names(r) for k, r in extras.items() if k != "all"))


def test_every_test_named_in_the_failure_behaviour_doc_exists() -> None:
    """docs/failures.md names the tests that prove each failure case; a renamed or dropped test shows here."""
    table = (ROOT / "docs" / "failures.md").read_text()
    named = set(re.findall(r"`(test_\w+)`", table))
    defined = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        defined |= set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M))
    assert named and not named - defined, sorted(named - defined)
