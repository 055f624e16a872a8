"""The "did you mean" for names a user types into a config: keys (among their section's) and config files (among the
yaml files beside the path and in this repository's ``configs/``). The closeness is :mod:`difflib`'s."""

from __future__ import annotations

import difflib
import glob
import os
from pathlib import Path
from typing import Any, List, Sequence

__all__ = ["close_config_files", "close_keys", "did_you_mean"]

_REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def did_you_mean(close: Sequence[str]) -> str:
    """`` (did you mean A or B?)`` for the close names, empty without any."""
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def _leaves(node: Any, prefix: str = "") -> List[str]:
    out = []
    for k, v in node.items():
        out += _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


def close_keys(cfg: Any, key: str, n: int = 3) -> List[str]:
    """Existing dotted keys of ``cfg`` close to the unknown ``key``: the first part that does not exist is matched
    among the names at its level; a leaf written under the wrong section is found by its name elsewhere."""
    parts = key.split(".")
    node, depth = cfg, 0
    while depth < len(parts) - 1 and isinstance(node.get(parts[depth]), dict):
        node, depth = node[parts[depth]], depth + 1
    prefix = ".".join(parts[:depth] + [""]) if depth else ""
    rest = ".".join(parts[depth + 1 :])
    leaves = _leaves(cfg)
    close = []
    for name in difflib.get_close_matches(parts[depth], [str(k) for k in node], n=n, cutoff=0.6):
        candidate = f"{prefix}{name}" + (f".{rest}" if rest else "")
        if not rest or candidate in leaves:
            close.append(candidate)
    if not close:  # SOLVER.MAX_FAILED_FRACTION -> DATA.MAX_FAILED_FRACTION
        close = [k for k in leaves if k.rsplit(".", 1)[-1] == parts[-1] and k != key][:n]
    return close


def _shown(path: str) -> str:
    """A path as short as the user can type it: relative to the working directory when inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def close_config_files(path: str, n: int = 3) -> List[str]:
    """Yaml files close to the missing ``path``: in its folder (or the nearest that exists) and in the repository's
    ``configs/``, matched by file name (case aside), then the closest whole path first."""
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    candidates = {os.path.abspath(p) for p in glob.glob(os.path.join(glob.escape(folder), "*.y*ml"))}
    for root in (_REPO_CONFIGS, Path("configs")):
        if root.is_dir():
            candidates |= {str(p.resolve()) for p in root.rglob("*.y*ml")}
    name = os.path.basename(path).lower()
    by_name = [c for c in candidates if os.path.basename(c).lower() == name]  # a capital letter amiss
    if not by_name:
        by_name = [
            c for c in candidates if difflib.SequenceMatcher(None, name, os.path.basename(c).lower()).ratio() >= 0.8
        ]
    target = os.path.abspath(path).lower()
    by_name.sort(key=lambda c: (-difflib.SequenceMatcher(None, target, c.lower()).ratio(), c))
    return [_shown(c) for c in by_name[:n]]
