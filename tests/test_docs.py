"""The documentation stays true: README.md is a short front door, every relative link of README.md and docs/*.md
resolves, and every command of their fenced ``bash`` blocks still works as written.

Commands: the cheap ones (a few seconds, no data, no network, no GPU) run in full (``RUN_IN_FULL``). The others
need data sets, GPUs, a cluster, the network or minutes, so each is checked as far as it can be without running
it: its script, Makefile target, pip extra and every repository path it names exist, its flags parse with the
script's own parser (stopped right after parsing), and ``tools/run_net.py`` commands load their config with their
overrides (every key known, every value of the right type).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 12_500

# Run in full: each takes seconds on a CPU and needs nothing but the install; the expected text shows it worked.
RUN_IN_FULL = {
    "python tools/model_info.py mvitv2_t": "parameters: 24,173,320",
    "python tools/model_info.py --weights": "`mvitv2_t.fb_in1k`",
}
# Shell variables the commands use for values the reader supplies.
PLACEHOLDERS = {"RANK": "0", "MASTER_ADDR": "node0", "USER": "user"}
PYTHONS = {"python", "python3", ".venv/bin/python"}
REPO_DIRS = ("configs/", "tools/", "projects/", "mvit/", "tests/", "docs/")
INTERPRETER = sys.executable


def _env() -> Dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set:
    headings = re.findall(r"^#{1,6} (.+)$", _without_code_blocks(path.read_text()), re.M)
    return {_slug(h) for h in headings}


def test_readme_is_a_front_door() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move details into docs/ (limit {README_MAX_BYTES})"


def test_every_relative_link_points_to_an_existing_file_and_heading() -> None:
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", _without_code_blocks(doc.read_text())):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (doc.parent / path).resolve() if path else doc
            if not resolved.exists() or ROOT not in (resolved, *resolved.parents):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_every_doc_starts_with_a_title_and_a_one_line_purpose() -> None:
    for doc in DOCS[1:]:
        lines = doc.read_text().split("\n")
        assert lines[0].startswith("# ") and not lines[1] and lines[2].strip(), doc.name


# --------------------------------------------------------------------------- commands of the bash blocks
def _commands() -> Iterator[Tuple[str, str]]:
    """(doc, command line) for each command of the fenced bash blocks: continuations joined, comments dropped."""
    for doc in DOCS:
        for block in re.findall(r"^```bash\n(.*?)^```", doc.read_text(), re.S | re.M):
            for line in block.replace("\\\n", " ").split("\n"):
                words = shlex.split(line, comments=True)
                if words:
                    yield doc.relative_to(ROOT).as_posix(), shlex.join(words)


def _expand(words: List[str], variables: Dict[str, str]) -> List[List[str]]:
    """Shell variables and brace alternatives (``mvitv2_{t,s,b}``) expanded; one word list per alternative."""

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise AssertionError(f"${name}: add a placeholder to PLACEHOLDERS")
        return variables[name]

    words = [re.sub(r"\$\{(\w+)\}|\$(\w+)", value, w) for w in words]
    expanded = [[]]
    for word in words:
        brace = re.search(r"\{([^{}]*,[^{}]*)\}", word)
        options = (
            [word[: brace.start()] + o + word[brace.end() :] for o in brace.group(1).split(",")] if brace else [word]
        )
        expanded = [prefix + [o] for prefix in expanded for o in options]
    return expanded


def _setup_extras() -> Dict[str, list]:
    """setup.py's extras_require, read by running setup.py with setuptools.setup replaced."""
    import setuptools

    captured = {}
    real = setuptools.setup
    setuptools.setup = lambda **kw: captured.update(kw)
    try:
        exec(compile((ROOT / "setup.py").read_text(), "setup.py", "exec"), {"__name__": "__main__"})
    finally:
        setuptools.setup = real
    return captured["extras_require"]


def _tested_pins() -> Dict[str, str]:
    """The torch / torchvision versions tools/install.sh installs (the tested pair)."""
    return dict(re.findall(r'"(torch|torchvision)==([\w.]+)"', (ROOT / "tools" / "install.sh").read_text()))


def _check(words: List[str], problems: List[str], to_parse: List[list]) -> None:
    """Checks one expanded command without running it; python scripts are queued for the parse check."""
    program, args = words[0], words[1:]
    if program == "eval":  # eval "$(CMD)": check CMD
        inner = args[0]
        assert inner.startswith("$(") and inner.endswith(")"), words
        return _check(_strip_env(shlex.split(inner[2:-1])), problems, to_parse)
    for word in args:
        path = word.split("=", 1)[-1]
        if path.startswith(REPO_DIRS) and not (ROOT / path).exists():
            problems.append(f"{shlex.join(words)}: {path} does not exist")
    if program == "make":
        makefile = (ROOT / "Makefile").read_text()
        problems += [f"make {t}: no such target" for t in args if not re.search(rf"^{re.escape(t)}:", makefile, re.M)]
    elif program == "bash":
        if not (ROOT / args[0]).is_file():
            problems.append(f"bash {args[0]}: no such script")
    elif program == "pip":
        assert args[0] == "install", words
        extras, pins = _setup_extras(), _tested_pins()
        for spec in args[1:]:
            match = re.fullmatch(r"\.(?:\[([\w,]+)\])?", spec)
            if match:
                unknown = set((match.group(1) or "").split(",")) - set(extras) - {""}
                problems += [f"pip install {spec}: setup.py has no extra {u!r}" for u in sorted(unknown)]
            elif "==" in spec:  # a pinned torch build must be the tested pair of tools/install.sh
                name, version = spec.split("==")
                if pins.get(name) != version:
                    problems.append(f"{spec}: tools/install.sh installs {name}=={pins.get(name)}")
    elif program in PYTHONS:
        if args[:2] == ["-m", "pytest"]:
            markers = re.findall(r'"(\w+):', (ROOT / "pyproject.toml").read_text().split("markers", 1)[1])
            for i, arg in enumerate(args[2:], 2):
                if args[i - 1] == "-m":
                    problems += [
                        f"pytest marker {m!r} is not registered"
                        for m in re.findall(r"\w+", arg)
                        if m not in {"not", "and", "or", *markers}
                    ]
            return
        script = ROOT / args[0]
        if not script.is_file():
            problems.append(f"{shlex.join(words)}: {args[0]} does not exist")
        elif not re.search(r"ArgumentParser|argument_parser|args_parser", script.read_text()):
            problems.append(f"{args[0]}: parses no flags with argparse; it cannot be checked without running it")
        else:
            to_parse.append([args[0], args[1:]])
    else:
        problems.append(f"{shlex.join(words)}: a command this test does not know how to check")


def _strip_env(words: List[str]) -> List[str]:
    """``VAR=value cmd ...`` -> ``cmd ...``."""
    while words and re.match(r"\w+=", words[0]):
        words = words[1:]
    return words


# Run in a fresh interpreter: each script is executed as __main__ with argparse stopped right after the
# top-level parse_args / parse_known_args returned (a usage error is a SystemExit or the project's UserError).
# run_net and detection's train_net then load their config with the overrides, as they do before any work.
_PARSE_CHECK = r"""
import argparse, json, runpy, sys

class Parsed(BaseException):
    pass

depth = [0]
real = {name: getattr(argparse.ArgumentParser, name) for name in ("parse_args", "parse_known_args")}

def stopping(name):
    def parse(self, *args, **kwargs):
        depth[0] += 1
        try:
            result = real[name](self, *args, **kwargs)
        finally:
            depth[0] -= 1
        if depth[0] == 0:  # the tool's own call (parse_args calls parse_known_args; sub-parsers nest too)
            raise Parsed()
        return result
    return parse

def load_run_net_config(tool, argv):
    args = tool["parse_args"](argv)
    extensions = tool["load_projects"](tool["PROJECTS"])[1]
    for cfg_file in args.cfg_files:
        tool["load_config"](cfg_file, args.opts, extensions=extensions)

def load_detection_config(tool, argv):
    import os, tempfile
    args = tool["parse_args"](argv)
    # The docs' own-data example names the reader's files (data/mine/...): stand-ins with one category take their
    # place, so the rest of the command (config, overrides, flags' pairing) is still checked.
    stand_in = tempfile.mkdtemp()
    for split in ("train", "val"):
        if getattr(args, f"{split}_json", None):
            path = os.path.join(stand_in, f"{split}.json")
            with open(path, "w") as f:
                json.dump({"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}, f)
            setattr(args, f"{split}_json", path)
        if getattr(args, f"{split}_images", None):
            setattr(args, f"{split}_images", stand_in)
    tool["check_config"](args)

CONFIG_CHECKS = {"tools/run_net.py": load_run_net_config, "projects/detection/train_net.py": load_detection_config}
results = []
for script, argv in json.load(sys.stdin):
    line = " ".join([script, *argv])
    for name in real:
        setattr(argparse.ArgumentParser, name, stopping(name))
    sys.argv = [script, *argv]
    try:
        runpy.run_path(script, run_name="__main__")
        results.append(f"{line}: ran to the end without parsing its flags")
        continue
    except Parsed:
        pass
    except SystemExit as err:
        results.append(f"{line}: exit {err.code}")
        continue
    except BaseException as err:
        results.append(f"{line}: {type(err).__name__}: {err}")
        continue
    finally:
        for name, function in real.items():
            setattr(argparse.ArgumentParser, name, function)
    if script in CONFIG_CHECKS:
        try:
            CONFIG_CHECKS[script](runpy.run_path(script, run_name="docs_check"), argv)
        except BaseException as err:
            results.append(f"{line}: config does not load: {type(err).__name__}: {err}")
            continue
    results.append("")
print(json.dumps(results))
"""


def test_every_command_names_what_exists_and_parses() -> None:
    commands = list(_commands())
    assert commands
    problems: List[str] = []
    to_parse: List[list] = []
    variables = dict(PLACEHOLDERS)
    for _doc, line in commands:
        words = shlex.split(line)
        if len(words) == 1 and re.fullmatch(r"\w+=\S*", words[0]):  # CFG=projects/detection/configs
            name, value = words[0].split("=", 1)
            variables[name] = value
            continue
        for expanded in _expand(_strip_env(words), variables):
            _check(expanded, problems, to_parse)
    assert not problems, problems
    out = subprocess.run(
        [INTERPRETER, "-c", _PARSE_CHECK],
        input=json.dumps(to_parse),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(results) == len(to_parse)
    assert not [r for r in results if r], [r for r in results if r]


@pytest.mark.parametrize("command", sorted(RUN_IN_FULL))
def test_cheap_commands_run_as_written(command: str) -> None:
    assert command in {line for _, line in _commands()}, f"{command!r} is no longer in the docs: update RUN_IN_FULL"
    words = shlex.split(command)
    out = subprocess.run([INTERPRETER, *words[1:]], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert RUN_IN_FULL[command] in out.stdout, out.stdout[-2000:]


def test_readme_python_example_runs_on_its_photo(tmp_path, monkeypatch, capsys) -> None:
    """The README's Python block, run as written: the released file is stood in for in torch.hub's cache (random
    weights of the same architecture and publisher layout; nothing can be downloaded here)."""
    from mvit.checkpoint.hub import MIRROR_ENV, cache_path
    from mvit.models import MViT, model_info
    from mvit.models.weights import class_names, get_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")  # nothing listens: a download attempt fails
    weights = get_weights("mvitv2_t.fb_in1k")
    with torch.device("meta"):
        shapes = MViT(model_info(weights.arch).build_config()).state_dict()
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=generator) * 0.02 for k, v in shapes.items()}
    path = Path(cache_path(weights.url))
    path.parent.mkdir(parents=True)
    torch.save({"model_state": state}, path)

    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
    assert len(blocks) == 1
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "readme"})

    lines = capsys.readouterr().out.strip().splitlines()
    names = set(class_names(weights.class_set))
    assert len(lines) == 6 and all(line.split("  ", 1)[1] in names for line in lines[:5]), lines
    # mvit.predict's one call gives the same five classes and probabilities as the spelled-out pipeline
    one_call = ast.literal_eval(lines[5])
    assert [(f"{p:.3f}", name) for name, p in one_call] == [tuple(line.split("  ", 1)) for line in lines[:5]]
