"""The old import paths of modules and names that moved (issue 18: mvit.data, mvit.runtime, mvit.api), kept for one
release. A shim module is one line, ``__import__("mvit._moved", fromlist=["alias"]).alias(__name__, "new.path")``:
it warns and puts the new module in its place, so every name of the new module, private ones too, resolves."""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from typing import Any, Callable

__all__ = ["alias", "moved_attributes"]


def _warn(old: str, new: str) -> None:
    # stacklevel 4: past this helper, its caller and the shim, to the line that imported the old path.
    warnings.warn(f"{old} has moved to {new}; the old path goes in the next release", DeprecationWarning, stacklevel=4)


class _Merged(types.ModuleType):
    """An old module whose names moved to several new ones: each name is looked up in them in turn."""

    def __init__(self, name: str, targets: list[types.ModuleType]) -> None:
        super().__init__(name)
        self._targets = targets

    def __getattr__(self, attr: str) -> Any:
        for module in self._targets:
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")


def alias(old: str, new: str, *more: str) -> None:
    """Replace the module ``old`` being imported by ``new`` (by the names of ``new`` then ``more``, when given)."""
    _warn(old, " / ".join((new, *more)))
    targets = [importlib.import_module(name) for name in (new, *more)]
    sys.modules[old] = targets[0] if not more else _Merged(old, targets)


def moved_attributes(package: str, moved: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for names ``package`` no longer exports: ``{name: new module}``; warns once, then
    returns the name from its new module."""

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        warnings.warn(
            f"{package}.{name} has moved to {moved[name]}.{name}; the old path goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        value = getattr(importlib.import_module(moved[name]), name)
        setattr(sys.modules[package], name, value)  # warned once: `from package import name` looks twice
        return value

    return __getattr__
