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

__all__ = [
    "capture_rng_state",
    "derive_seed",
    "forked_rng",
    "generator_state",
    "load_generator_state",
    "restore_rng_state",
    "seed_all",
]


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


def _seed_host(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    # Not torch.manual_seed: it also reseeds every CUDA generator, which fork_rng(devices=[]) does not restore.
    torch.default_generator.manual_seed(seed)


@contextlib.contextmanager
def forked_rng(seed: int) -> Iterator[None]:
    """Run a block with python / numpy / torch-CPU generators seeded by ``seed``, then restore them.

    The CUDA generators (dropout, drop path, mixup of a GPU run) are neither seeded nor consumed here: with
    ``DATA_LOADER.NUM_WORKERS 0`` items load in the training process, and reseeding them per item would restart
    the model's random streams at every batch.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        _seed_host(seed)
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
        # The current device's generator only (the one this process trains on): a list over every visible
        # device could not be restored where another number of devices is visible (SLURM binds one per task).
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`, on any device kind.

    The CUDA state (the current device's) is restored when this process has a GPU; a state saved on the CPU
    leaves the CUDA generator as seeded, and a GPU state resumed on the CPU has no generator to go to (the CPU
    streams are restored in both cases). Files of older versions hold a list over every visible device: it is
    restored only where as many devices are visible, as then.
    """
    py_version, py_words, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_words), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is None or not torch.cuda.is_available():
        return
    if isinstance(cuda, torch.Tensor):
        torch.cuda.set_rng_state(cuda)
    elif len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def generator_state(generator: torch.Generator) -> dict[str, Any]:
    """A generator's state with the kind of device it belongs to (a CPU Mersenne-Twister state and a CUDA
    Philox state differ in size and meaning), for :func:`load_generator_state` on any device."""
    return {"state": generator.get_state(), "device": generator.device.type}


def load_generator_state(generator: torch.Generator, saved: Any) -> None:
    """Set ``generator`` from :func:`generator_state` (or a bare state tensor of older files) of any device.

    A state of the same device kind is set as is. A state of another kind cannot be (a Philox (seed, offset)
    is no Mersenne-Twister state and the reverse): the generator is then reseeded with a seed derived from
    the saved bytes, so a resume on another device is deterministic, though not the stream it would have been.
    """
    state = saved["state"] if isinstance(saved, dict) else saved
    kind = saved.get("device") if isinstance(saved, dict) else None
    if kind is None:  # older files: the kind shows in the state's size
        kind = generator.device.type if state.numel() == generator.get_state().numel() else "other"
    if kind == generator.device.type:
        generator.set_state(state)
        return
    digest = hashlib.blake2b(state.cpu().numpy().tobytes(), digest_size=8).digest()
    generator.manual_seed(int.from_bytes(digest, "little") >> 1)
