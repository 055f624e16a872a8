"""Reading and writing checkpoint files without ever running code from them.

A pickle can call any importable function while it is read, so a crafted ``.pyth``, ``.pth`` or ``.pkl``
could run code on ``torch.load``. Here every pickle is read with an allow-list:

- PyTorch files: ``torch.load(weights_only=True)`` plus exactly the non-tensor globals that released MViTv2
  checkpoints contain (:data:`SAFE_GLOBALS`: numpy scalars, arrays and dtypes, e.g. a metric stored as
  ``np.float64``);
- detectron2 ``.pkl`` files (plain pickles of numpy arrays): a restricted unpickler admitting numpy arrays,
  dtypes, scalars and plain containers only;
- ``.safetensors`` files hold tensors and string metadata only, nothing to execute.

A file that needs anything else is refused with :class:`~mvit.errors.CheckpointError`, which names the
global and the opt-in: ``trust_pickle=True`` (``--trust-pickle`` on the command line) loads it unrestricted,
for a file the user trusts by name; converting it once to ``.safetensors`` makes later loads safe.
"""

from __future__ import annotations

import codecs
import collections
import json
import pickle
from typing import IO, Any, Dict, Optional

import numpy as np
import torch
from iopath.common.file_io import g_pathmgr as PathManager

from ..errors import CheckpointError

__all__ = [
    "SAFE_GLOBALS",
    "load_pickle",
    "read_safetensors",
    "refused_message",
    "torch_load",
    "write_safetensors",
]

# numpy 2 keeps it in numpy._core (numpy.core is a shim there); numpy 1.x only has numpy.core. Files name either.
_multiarray = (np._core if hasattr(np, "_core") else np.core).multiarray

# (object, name as written in the pickle): each is a constructor of plain data, nothing that runs code.
SAFE_GLOBALS = [
    (_multiarray.scalar, "numpy.core.multiarray.scalar"),
    (_multiarray.scalar, "numpy._core.multiarray.scalar"),
    (_multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    (_multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
    (np.ndarray, "numpy.ndarray"),
    (np.dtype, "numpy.dtype"),
] + [(cls, f"numpy.dtypes.{cls.__name__}") for cls in (type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDG")]

# The restricted unpickler of plain pickles: the numpy globals above plus plain containers.
_PICKLE_GLOBALS: Dict[tuple, Any] = {tuple(name.rsplit(".", 1)): obj for obj, name in SAFE_GLOBALS}
_PICKLE_GLOBALS.update(
    {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles write bytes
    }
)


def refused_message(path: str, what: str) -> str:
    """The one-line refusal, naming the file, what it would have loaded and the opt-in."""
    return (
        f"{path}: refused to unpickle {what}, which could run code when loaded; if you trust this file, load it "
        "with trust_pickle=True (command line: --trust-pickle), or convert it once: "
        f"python tools/convert_checkpoint.py --trust-pickle {path} weights.safetensors"
    )


def _refused_global(err: BaseException) -> Optional[str]:
    """The global named by torch's weights-only refusal, or None when ``err`` is another failure."""
    text = str(err)
    marker = "Unsupported global: GLOBAL "
    if marker in text:
        return text.split(marker, 1)[1].split()[0]
    if "weights_only" in text or "Weights only load failed" in text:
        return "a non-tensor object"
    return None


def torch_load(f: IO[bytes], path: str, *, trust_pickle: bool = False, map_location: Any = "cpu") -> Any:
    """``torch.load`` of an open file: allow-listed (:data:`SAFE_GLOBALS`) unless ``trust_pickle``.

    Raises:
        CheckpointError: the file needs a global outside the allow-list (names it and the opt-in).
        Exception: any other read failure, for the caller to report (truncated file, not a PyTorch file).
    """
    if trust_pickle:
        return torch.load(f, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_global(err)
        if refused is None:
            raise
        raise CheckpointError(refused_message(path, refused)) from None


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers; any other global is refused before it is imported."""

    def __init__(self, file: IO[bytes], path: str) -> None:
        super().__init__(file, encoding="latin1")  # detectron2's zoo files were written by Python 2
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(refused_message(self._path, f"{module}.{name}")) from None


def load_pickle(f: IO[bytes], path: str, *, trust_pickle: bool = False) -> Any:
    """Read a plain pickle (detectron2 ``.pkl``) with the restricted unpickler unless ``trust_pickle``."""
    if trust_pickle:
        return pickle.load(f, encoding="latin1")
    return _RestrictedUnpickler(f, path).load()


def read_safetensors(path: str) -> dict:
    """A ``.safetensors`` file as ``{"model": state_dict, **metadata}`` (metadata values JSON-decoded)."""
    from safetensors.torch import load as load_bytes

    with PathManager.open(path, "rb") as f:
        data = f.read()
    state = load_bytes(data)
    header_len = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
    out: dict = {"model": state}
    for key, value in metadata.items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def write_safetensors(state: Dict[str, torch.Tensor], path: str, metadata: Optional[dict] = None) -> None:
    """Write tensors (and JSON-encoded metadata) to ``path`` atomically (:func:`~mvit.checkpoint.state.atomic_write`)."""
    from safetensors.torch import save

    from .state import atomic_write

    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    data = save(tensors, metadata=meta)
    atomic_write(path, lambda f: f.write(data))
