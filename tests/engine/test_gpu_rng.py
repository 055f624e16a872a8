"""Random state on GPU paths, checked on the CPU with mocks of ``torch.cuda`` (issue 19, item 6): data seeding
leaves the CUDA generators alone, and generator states resume across device kinds and device counts."""

from __future__ import annotations

import io
import random
from unittest import mock

import numpy as np
import pytest
import torch

from mvit.data import SeededDataset
from mvit.engine import hooks as H
from mvit.utils.rng import capture_rng_state, forked_rng, restore_rng_state

from .conftest import NoisyImages, TinyNet


def test_item_seeding_never_reseeds_cuda_generators(monkeypatch):
    cuda_seed = mock.Mock()
    monkeypatch.setattr(torch.cuda, "manual_seed_all", cuda_seed)
    monkeypatch.setattr(torch.cuda, "manual_seed", cuda_seed)
    dataset = SeededDataset(NoisyImages(4), seed=0)
    items = [dataset[(1, i)][0] for i in range(4)]
    assert cuda_seed.call_count == 0, "loading an item reseeded the CUDA generators"
    # The CPU streams an item sees are still torch.manual_seed's (the augmented data is unchanged).
    with forked_rng(5):
        inside = (torch.rand(3), random.random(), np.random.rand())
    with torch.random.fork_rng(devices=[]):
        random.seed(5)
        np.random.seed(5)
        torch.default_generator.manual_seed(5)
        expected = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(inside[0], expected[0]) and inside[1:] == expected[1:]
    assert torch.equal(items[2], SeededDataset(NoisyImages(4), seed=0)[(1, 2)][0])


class FakeCudaGenerator:
    """Stands for ``torch.Generator("cuda")``: a 16-byte Philox (seed, offset) state, refusing any other size."""

    device = torch.device("cuda", 0)

    def __init__(self, fill: int = 7) -> None:
        self.state, self.seeds = torch.full((16,), fill, dtype=torch.uint8), []

    def get_state(self) -> torch.Tensor:
        return self.state.clone()

    def set_state(self, state: torch.Tensor) -> None:
        if state.numel() != 16:
            raise RuntimeError(f"Expected a PhiloxCudaState of size 16 but found {state.numel()}")
        self.state = state.clone()

    def manual_seed(self, seed: int) -> FakeCudaGenerator:
        self.seeds.append(seed)
        return self


def _saved(state: dict) -> dict:
    """``state`` through a checkpoint file (``weights_only`` loading, as resumes read it)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _ema(generator=None) -> H.EMA:
    ema = H.EMA(TinyNet(), decay=0.9)
    if generator is not None:
        ema.ema._sr_generator = generator
    return ema


def test_ema_state_of_a_cpu_run_resumes_on_a_gpu():
    cpu = _ema()
    torch.rand(4, generator=cpu.ema._sr_generator)  # not the initial state
    state = _saved(cpu.state_dict())
    gpu = _ema(FakeCudaGenerator())
    gpu.load_state_dict(state)
    again = _ema(FakeCudaGenerator())
    again.load_state_dict(state)
    assert len(gpu.ema._sr_generator.seeds) == 1 and gpu.ema._sr_generator.seeds == again.ema._sr_generator.seeds
    assert all(torch.equal(a, b) for a, b in zip(gpu.module.state_dict().values(), cpu.module.state_dict().values()))


@pytest.mark.parametrize("legacy", [True, False])
def test_ema_state_of_a_gpu_run_resumes_on_the_cpu(legacy):
    gpu = _ema(FakeCudaGenerator(fill=3))
    state = gpu.state_dict()
    if legacy:  # files written before the device kind was stored: the bare CUDA state tensor
        state["sr_generator"] = gpu.ema._sr_generator.get_state()
    state = _saved(state)
    first, second, other = _ema(), _ema(), _ema()
    first.load_state_dict(state)
    second.load_state_dict(state)
    gpu_other = FakeCudaGenerator(fill=4)
    other.load_state_dict(
        {**state, "sr_generator": gpu_other.get_state() if legacy else {"state": gpu_other.state, "device": "cuda"}}
    )
    a, b, c = (e.ema._sr_generator.get_state() for e in (first, second, other))
    assert torch.equal(a, b) and not torch.equal(a, c)  # reseeded from the saved state, deterministically


def test_ema_state_on_the_same_device_kind_is_exact():
    src = _ema()
    torch.rand(4, generator=src.ema._sr_generator)
    dst = _ema()
    dst.load_state_dict(_saved(src.state_dict()))
    assert torch.equal(dst.ema._sr_generator.get_state(), src.ema._sr_generator.get_state())
    gpu_src, gpu_dst = _ema(FakeCudaGenerator(fill=9)), _ema(FakeCudaGenerator(fill=1))
    gpu_dst.load_state_dict(_saved(gpu_src.state_dict()))
    assert torch.equal(gpu_dst.ema._sr_generator.state, gpu_src.ema._sr_generator.state)


def _fake_cuda(monkeypatch, *, available: bool, devices: int = 1, current: int = 0):
    """torch.cuda with ``devices`` visible GPUs whose generator states are 16-byte tensors filled with the index."""
    states = {i: torch.full((16,), i, dtype=torch.uint8) for i in range(devices)}
    calls = mock.Mock()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: devices if available else 0)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": states[current].clone())
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [states[i].clone() for i in range(devices)])
    monkeypatch.setattr(torch.cuda, "set_rng_state", calls.set_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", calls.set_rng_state_all)
    return calls


def test_rng_state_of_a_gpu_process_resumes_where_another_number_of_gpus_is_visible(monkeypatch):
    # Saved by the process of GPU 3 of 8 visible; resumed under SLURM with one GPU bound to the task.
    _fake_cuda(monkeypatch, available=True, devices=8, current=3)
    state = _saved(capture_rng_state())
    calls = _fake_cuda(monkeypatch, available=True, devices=1)
    restore_rng_state(state)
    restored = [c.args[0] for c in calls.set_rng_state.call_args_list] + [
        t for c in calls.set_rng_state_all.call_args_list for t in c.args[0]
    ]
    assert len(restored) == 1 and torch.equal(restored[0], torch.full((16,), 3, dtype=torch.uint8))


def test_rng_state_resumes_from_cpu_to_gpu_and_back(monkeypatch):
    _fake_cuda(monkeypatch, available=False)
    cpu_state = _saved(capture_rng_state())
    expected = torch.rand(5)
    calls = _fake_cuda(monkeypatch, available=True)
    restore_rng_state(cpu_state)  # no CUDA state in the file: the CUDA generator stays as seeded
    assert calls.set_rng_state.call_count == calls.set_rng_state_all.call_count == 0
    assert torch.equal(torch.rand(5), expected)

    gpu_state = _saved(capture_rng_state())
    expected = torch.rand(5)
    _fake_cuda(monkeypatch, available=False)
    restore_rng_state(gpu_state)  # no GPU here: the CPU streams are restored, the CUDA state is left out
    assert torch.equal(torch.rand(5), expected)
