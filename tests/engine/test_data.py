"""Sharded, resumable sampling and per-item seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

from mvit.data.loader import EpochShardSampler, SeededDataset, build_loader, collate_items


def _indices(sampler):
    return [i for _, i in sampler]


def test_order_is_a_pure_function_of_seed_and_epoch():
    a = EpochShardSampler(50, shuffle=True, seed=3)
    b = EpochShardSampler(50, shuffle=True, seed=3)
    a.set_epoch(2)
    torch.rand(10)  # the global RNG plays no part
    b.set_epoch(2)
    assert _indices(a) == _indices(b)
    b.set_epoch(3)
    assert _indices(a) != _indices(b)
    assert sorted(_indices(a)) == list(range(50))


def test_resume_start_skips_exactly_the_consumed_items():
    s = EpochShardSampler(30, shuffle=True, seed=0, rank=1, world_size=2)
    s.set_epoch(4)
    full = _indices(s)
    s.set_epoch(4, start=6)
    assert _indices(s) == full[6:] and len(s) == len(full) - 6
    assert all(epoch == 4 for epoch, _ in s)


def test_training_shards_are_padded_to_equal_length():
    shards = []
    for rank in range(4):
        s = EpochShardSampler(10, shuffle=True, seed=0, rank=rank, world_size=4, pad=True)
        shards.append(_indices(s))
        assert len(s) == len(shards[-1]) == 3
    assert set().union(*map(set, shards)) == set(range(10))


def test_evaluation_shards_cover_every_item_exactly_once():
    shards = [_indices(EpochShardSampler(11, shuffle=False, seed=0, rank=r, world_size=3, pad=False)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))
    assert [len(s) for s in shards] == [4, 4, 3]


class _RandomItems(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        return torch.rand(2) + random.random() + float(np.random.rand()), index % 2, index


def test_seeded_items_are_reproducible_and_leave_the_global_rng_alone():
    ds = SeededDataset(_RandomItems(), seed=5)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = ds[(1, 3)][0]
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(5)
    assert torch.equal(ds[(1, 3)][0], a)
    assert not torch.equal(ds[(2, 3)][0], a)  # another epoch, another augmentation
    assert not torch.equal(ds[(1, 4)][0], a)


def test_loader_batches_do_not_depend_on_workers():
    def batches(workers):
        loader = build_loader(_RandomItems(), batch_size=3, train=True, seed=1, num_workers=workers)
        loader.sampler.set_epoch(1)
        return [b[0] for b in loader]

    for a, b in zip(batches(0), batches(2)):
        assert torch.equal(a, b)


def test_collate_flattens_repeated_augmentation_views():
    items = [([torch.zeros(3, 2, 2), torch.ones(3, 2, 2)], 1, 7), (torch.full((3, 2, 2), 2.0), 0, 8)]
    x, y, idx = collate_items(items)
    assert x.shape == (3, 3, 2, 2)
    assert y.tolist() == [1, 1, 0] and idx.tolist() == [7, 7, 8]


def test_process_exits_while_loader_workers_are_alive():
    # Workers ignore SIGTERM (SLURM preemption); the interpreter must still exit with an iterator left open.
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import torch\n"
        "from mvit.data.loader import build_loader\n"
        "class D(torch.utils.data.Dataset):\n"
        "    def __len__(self): return 64\n"
        "    def __getitem__(self, i): return torch.zeros(2), 0, i\n"
        "loader = build_loader(D(), batch_size=4, train=True, seed=0, num_workers=1)\n"
        "loader.sampler.set_epoch(0)\n"
        "it = iter(loader)\n"
        "next(it)\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, timeout=120, check=True)
