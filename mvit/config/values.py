"""Values of config keys as a user writes them: the lossless widenings yacs refuses, and a mismatch in words.

yacs (under fvcore's ``CfgNode``) requires a value of the default's exact type, so ``SOLVER.WARMUP_EPOCHS 5``
fails where the default is ``70.0``. Here an int is accepted where the key holds a float, ints in a list of
floats become floats, and a string the user typed stays that string where the key holds one (yacs would read
``OUTPUT_DIR 2024`` as an int). Nothing is narrowed: a float for an int key, a string for a number, a number for a
bool stay errors, named with the key and the expected type in words.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

__all__ = ["describe_type", "widen"]

_EXPECTED = {bool: "True or False", int: "an integer", float: "a number (float)", str: "a string"}
_GOT = {bool: "a bool", int: "an integer", float: "a float", str: "a string", list: "a list", tuple: "a list"}


def describe_type(value: Any) -> str:
    """What a key holding ``value`` expects, in words ("a number (float)")."""
    return "a list" if isinstance(value, (list, tuple)) else _EXPECTED.get(type(value), type(value).__name__)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _widen_list(default: Any, value: Any) -> Any:
    """Ints of a list where the default is a non-empty list of floats, as floats (else ``value`` itself)."""
    if not default or not all(type(v) is float for v in default) or not any(_is_int(v) for v in value):
        return value
    return type(value)(float(v) if _is_int(v) else v for v in value)


def widen(key: str, default: Any, value: Any, typed: Any = None) -> Any:
    """``value`` for a key whose current value is ``default``: as yacs accepts it, or losslessly widened.

    Args:
        key: the dotted key, for the message.
        default: the key's current value (it sets the type, as in yacs).
        value: the decoded value (a yacs literal: ``"5"`` is already ``5``).
        typed: the value as written before decoding (a string typed on the command line or quoted in yaml);
            kept as it is where the key holds a string.

    Returns:
        ``value``, or its widened form (a new object, so ``is`` tells whether it changed).

    Raises:
        ConfigError: a value yacs would refuse that no widening fits: "KEY expects a number (float), got 'five'
            (a string)".
    """
    if default is None or value is None or type(value) is type(default):
        return _widen_list(default, value) if isinstance(value, (list, tuple)) else value
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return _widen_list(default, value)  # yacs turns a tuple into the default's list (and back)
    if type(default) is float and _is_int(value):
        return float(value)
    if type(default) is str and isinstance(typed, str):
        return typed  # '2024' stays the text written, not the int yacs reads it as
    got = _GOT.get(type(value), type(value).__name__)
    raise ConfigError(f"{key} expects {describe_type(default)}, got {value!r} ({got})")
