"""Random number generator state: seeding, capture / restore for checkpoints, and per-sample forks.

Data augmentation is made a pure function of ``(seed, epoch, sample index)`` with :func:`forked_rng`, so the
augmented batch at any iteration does not depend on the history of the process (resume, worker count,
persistent workers) and the global generators used by the model (dropout, drop path, mixup) are untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from typing import Any, Iterator

import numpy as np
import torch

__all__ = ["capture_rng_state", "derive_seed", "forked_rng", "restore_rng_state", "seed_all"]


def seed_all(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (stable across processes and Python runs)."""
    # hash() of ints/tuples is not salted, but blake2b keeps nearby inputs far apart in seed space.
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@contextlib.contextmanager
def forked_rng(seed: int) -> Iterator[None]:
    """Run a block with python / numpy / torch-CPU generators seeded by ``seed``, then restore them."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        seed_all(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def capture_rng_state() -> dict[str, Any]:
    """Every global generator's state, for a checkpoint (tensors, lists and numbers only, so that the file
    loads with ``torch.load(weights_only=True)``)."""
    py_version, py_words, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_words), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only when this process has as many devices)."""
    py_version, py_words, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_words), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
