"""Official MViTv2 (facebookresearch/mvit) and PySlowFast yaml files, accepted as they are: the yaml reading,
``_BASE_`` chains, overrides and the checks of the foreign keys.

Both publishers' ``defaults.py`` define keys this project does not have; the table of them and what each becomes
here (ignored, checked or translated), the value aliases and PySlowFast's defaults are in
:mod:`mvit.config.foreign_keys`. Keys that are neither ours nor in the table stay errors. YAML is read as the
publishers read it: PyYAML's ``safe_load`` (a repeated key: the last wins, logged), then yacs literal
evaluation of strings (``PATCH_KERNEL: (3, 7, 7)`` becomes a tuple, then our list); a file PyYAML cannot
parse is one error line with its file and line.

Used by :func:`mvit.config.load_config`: :func:`register_foreign_keys` before the file is merged,
:func:`merge_config_file` / :func:`merge_overrides` for the file and the overrides, and
:func:`check_foreign_keys` after; the returned config holds this project's keys only.
"""

from __future__ import annotations

import ast
import copy
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml
from fvcore.common.config import CfgNode

from ..errors import ConfigError, report
from .foreign_keys import (
    CHECKED,
    FOREIGN_KEYS,
    PYSLOWFAST_DEFAULTS,
    TRANSLATED,
    VALUE_ALIASES,
    ForeignKey,
    find_foreign_key,
)
from .hints import close_config_files, close_keys, did_you_mean
from .values import widen

__all__ = [
    "ForeignKeys",
    "check_foreign_keys",
    "merge_config_file",
    "merge_overrides",
    "register_foreign_keys",
]

logger = logging.getLogger(__name__)

_BASE_KEY = "_BASE_"
_COMMAND_LINE = "command-line override"


@dataclass
class ForeignKeys:
    """What :func:`register_foreign_keys` added to a config, and where each key was set (file:line)."""

    added: List[str] = field(default_factory=list)
    set_at: Dict[str, str] = field(default_factory=dict)

    def is_foreign(self, key: str) -> bool:
        return any(key == a or key.startswith(a + ".") for a in self.added)


def _get(cfg: CfgNode, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _has(cfg: CfgNode, key: str) -> bool:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def register_foreign_keys(cfg: CfgNode) -> ForeignKeys:
    """Add the table's keys this config lacks (publisher defaults; a ``SECTION.*`` takes any key), in place."""
    state = ForeignKeys()
    for entry in FOREIGN_KEYS:
        section = entry.key.endswith(".*")
        parts = (entry.key[:-2] if section else entry.key).split(".")
        node = cfg
        for depth, part in enumerate(parts):
            dotted, last = ".".join(parts[: depth + 1]), depth == len(parts) - 1
            if part not in node:
                node[part] = copy.deepcopy(entry.default) if last and not section else CfgNode()
                if not state.is_foreign(dotted):
                    state.added.append(dotted)
            if last:
                if section and state.is_foreign(dotted):
                    node[part].set_new_allowed(True)
                break
            node = node[part]
            if not isinstance(node, CfgNode):
                break
    return state


# --------------------------------------------------------------------------------------------- yaml reading
def _yaml_error(path: str, err: yaml.YAMLError) -> ConfigError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or report(err)
    return ConfigError(f"{where}: not valid YAML: {problem}")


def _locate(path: str, text: str, lines: Dict[str, str]) -> None:
    """Record file:line of every dotted key of one yaml file; log keys repeated in a mapping (last wins)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise _yaml_error(path, err) from None

    def walk(node: Any, prefix: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        first_line: Dict[str, int] = {}
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            line = key_node.start_mark.line + 1
            if key in first_line:
                logger.warning(
                    "%s:%d: %s repeats the key of line %d; the last value wins (as PyYAML reads it)",
                    path,
                    line,
                    key,
                    first_line[key],
                )
            first_line.setdefault(key, line)
            lines[key] = f"{path}:{line}"
            walk(value_node, key + ".")

    walk(root, "")


def _read_yaml(path: str, lines: Dict[str, str], chain: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """fvcore's ``load_yaml_with_base`` semantics (``_BASE_`` relative to the file, later files win)."""
    if path in chain:
        raise ConfigError(f"{path}: _BASE_ cycle: {' -> '.join(chain + (path,))}")
    if not os.path.isfile(path):
        where = f" (the _BASE_ of {chain[-1]})" if chain else ""
        raise ConfigError(f"config file not found: {path}{where}{did_you_mean(close_config_files(path))}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config file: {report(err)}") from None
    own: Dict[str, str] = {}
    _locate(path, text, own)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:  # a tag safe_load refuses (e.g. !!python/object)
        raise _yaml_error(path, err) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file is a mapping of KEY: value, got {type(data).__name__}")
    base = data.pop(_BASE_KEY, None)
    if base is None:
        lines.update(own)
        return data
    merged: Dict[str, Any] = {}
    for name in base if isinstance(base, list) else [base]:
        name = os.path.expanduser(str(name))
        if not os.path.isabs(name):
            name = os.path.join(os.path.dirname(path), name)
        _merge_dicts(_read_yaml(name, lines, chain + (path,)), merged, path)
    _merge_dicts(data, merged, path)
    lines.update(own)
    return merged


def _merge_dicts(a: Dict[str, Any], b: Dict[str, Any], path: str) -> None:
    for k, v in a.items():
        if isinstance(v, dict) and k in b:
            if not isinstance(b[k], dict):
                raise ConfigError(f"{path}: {k} is a section here but a value in its _BASE_")
            _merge_dicts(v, b[k], path)
        else:
            b[k] = v


def _flat(data: Dict[str, Any], prefix: str = "") -> Iterable[Tuple[str, Any]]:
    for k, v in data.items():
        if isinstance(v, dict) and v:
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _alias(cfg: CfgNode, key: str, value: Any, where: str) -> Any:
    """A foreign spelling of a shared key's value, as ours (logged)."""
    if key not in VALUE_ALIASES or not _has(cfg, key):
        return value
    table, why = VALUE_ALIASES[key]
    try:
        ours = table.get(value, value)
    except TypeError:  # an unhashable value (a list) is never an alias
        return value
    if ours is not value:
        logger.info("%s: %s %r read as %r (%s)", where, key, value, ours, why)
    return ours


def _decode(value: Any) -> Any:
    """yacs' reading of a string value: a Python literal when it parses as one."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _pyslowfast_defaults(cfg: CfgNode, set_keys: Iterable[str], where: str) -> None:
    """Give the shared keys a PySlowFast file leaves out PySlowFast's defaults (logged)."""
    set_keys = set(set_keys)
    changed = []
    for key, value in PYSLOWFAST_DEFAULTS.items():
        if key in set_keys or not _has(cfg, key) or _same(_get(cfg, key), value):
            continue
        *parents, leaf = key.split(".")
        (_get(cfg, ".".join(parents)) if parents else cfg)[leaf] = copy.deepcopy(value)
        changed.append(f"{key} {value!r}")
    if changed:
        logger.info(
            "%s: a PySlowFast config (MODEL.ARCH); keys it leaves out take PySlowFast's defaults: %s",
            where,
            ", ".join(changed),
        )


def merge_config_file(cfg: CfgNode, path: str, state: ForeignKeys) -> None:
    """Merge a yaml file (with its ``_BASE_`` chain) into ``cfg``, recording where each key was set.

    Raises:
        ConfigError: a missing file, invalid YAML (file:line), an unknown key or a mistyped value.
    """
    lines: Dict[str, str] = {}
    data = _read_yaml(path, lines)
    if isinstance(data.get("MODEL"), dict) and "ARCH" in data["MODEL"]:
        _pyslowfast_defaults(cfg, {k for k, _ in _flat(data)}, lines.get("MODEL.ARCH", path))
    for key, value in list(_flat(data)):
        decoded = _decode(value)
        aliased = _alias(cfg, key, decoded, lines.get(key, path))
        final = _widen(cfg, key, aliased, value if aliased is decoded else None, lines.get(key, path))
        if final is not decoded:
            node = data
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            # yacs decodes a string once more when it merges: a kept string goes in as its literal
            node[leaf] = repr(final) if isinstance(final, str) else final
        state.set_at[key] = lines.get(key, path)
    try:
        cfg.merge_from_other_cfg(CfgNode(data))
    except (KeyError, ValueError, AssertionError, TypeError) as err:
        text = report(err)
        key = text.rsplit(" ", 1)[-1] if text.startswith(("Non-existent config key", "Type mismatch")) else ""
        hint = did_you_mean(close_keys(cfg, key)) if text.startswith("Non-existent") else ""
        raise ConfigError(f"{lines.get(key, path)}: {text}{hint}") from None


def _widen(cfg: CfgNode, key: str, value: Any, typed: Any, where: str) -> Any:
    """``value`` for an existing key, losslessly widened to its type (:func:`mvit.config.values.widen`)."""
    if not _has(cfg, key) or isinstance(_get(cfg, key), dict):
        return value  # an unknown key or a section: yacs' merge reports it
    try:
        return widen(key, _get(cfg, key), value, typed)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def _add_to_open_section(cfg: CfgNode, key: str, value: Any) -> bool:
    """Set a new ``key`` below a section that accepts any key (``SECTION.*``); False where none does."""
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
        if part not in node:
            if not node.is_new_allowed():
                return False
            node[part] = CfgNode(new_allowed=True)
        node = node[part]
        if not isinstance(node, CfgNode):
            return False
    if not node.is_new_allowed():
        return False
    node[leaf] = value
    return True


def merge_overrides(cfg: CfgNode, opts: Sequence[str], state: ForeignKeys) -> None:
    """Merge ``KEY VALUE`` command-line overrides, with the value aliases of :data:`VALUE_ALIASES`.

    Raises:
        ConfigError: an odd list, an unknown key or a mistyped value.
    """
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs, got an odd list: {opts}")
    pairs: List[Any] = []
    for key, value in zip(opts[0::2], opts[1::2]):
        decoded = _decode(value)
        aliased = _alias(cfg, key, decoded, _COMMAND_LINE)
        state.set_at[key] = _COMMAND_LINE
        if state.is_foreign(key) and not _has(cfg, key) and _add_to_open_section(cfg, key, aliased):
            continue  # yacs' merge_from_list refuses new keys even where the section accepts them
        final = _widen(cfg, key, aliased, value if aliased is decoded else None, _COMMAND_LINE)
        pairs += [key, value if final is decoded else repr(final)]
    try:
        cfg.merge_from_list(pairs)
    except (KeyError, ValueError, AssertionError, TypeError) as err:
        text = report(err)
        hint = did_you_mean(close_keys(cfg, text.rsplit(" ", 1)[-1])) if text.startswith("Non-existent") else ""
        raise ConfigError(f"{_COMMAND_LINE}: {text}{hint}") from None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _translate(entry: ForeignKey, key: str, value: Any, cfg: CfgNode, state: ForeignKeys) -> List[str]:
    """Give our key the value of a ``TRANSLATED`` foreign key; what changed (nothing without our key)."""
    if entry.apply is not None:
        return entry.apply(value, cfg)
    if not _has(cfg, entry.to):
        return []  # our key belongs to a project not loaded in this run, where the setting has no effect
    ours = entry.convert(value)
    if entry.to in state.set_at and not _same(_get(cfg, entry.to), ours):
        raise ConfigError(
            f"{key} {value!r} means {entry.to} {ours!r}, but {state.set_at[entry.to]} sets "
            f"{entry.to} {_get(cfg, entry.to)!r}"
        )
    *parents, leaf = entry.to.split(".")
    _get(cfg, ".".join(parents))[leaf] = ours
    return [f"{entry.to} = {ours!r}"]


def check_foreign_keys(cfg: CfgNode, state: ForeignKeys, log: Optional[logging.Logger] = None) -> None:
    """Apply the table to the keys a file or override set, then remove the foreign keys from ``cfg``.

    Logs the accepted keys without effect once (one line) and the translations.

    Raises:
        ConfigError: a key set to a value whose behaviour this project does not implement.
    """
    log = log or logger
    ignored: List[str] = []
    for key, where in state.set_at.items():
        if not state.is_foreign(key):
            continue
        entry = find_foreign_key(key)
        if entry is None:
            continue
        value = _get(cfg, key)
        if entry.kind == TRANSLATED:
            try:
                changes = _translate(entry, key, value, cfg, state)
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None
            if changes:
                log.info("%s: %s %r (%s) -> %s", where, key, value, entry.reason, "; ".join(changes))
            else:
                ignored.append(key)
            continue
        if entry.kind == CHECKED:
            problem = entry.check(value, cfg) if entry.check else None
            if problem is None and not any(_same(value, ok) for ok in entry.allowed):
                supported = " or ".join(repr(v) for v in entry.allowed)
                problem = f"only {supported} is supported here ({entry.reason})"
            if problem:
                raise ConfigError(f"{where}: {key} {value!r}: {problem}")
        ignored.append(key)
    if ignored:
        sources = sorted({state.set_at[k].rsplit(":", 1)[0] for k in ignored})
        log.info(
            "%s: accepted without effect here (official MViTv2 / PySlowFast keys): %s",
            ", ".join(sources),
            ", ".join(sorted(ignored)),
        )
    for key in sorted(state.added, key=lambda k: -k.count(".")):
        *parents, leaf = key.split(".")
        parent = _get(cfg, ".".join(parents)) if parents else cfg
        del parent[leaf]
