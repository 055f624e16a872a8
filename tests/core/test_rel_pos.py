"""The decomposed rel-pos bias equals a brute-force evaluation of its definition."""

import itertools

import pytest
import torch

from mvit.models.rel_pos import decomposed_rel_pos_bias, rel_pos_index


def _index(q_pos: int, k_pos: int, q_size: int, k_size: int) -> int:
    """Definition (MViTv2, eq. 4 with the official q/k size-ratio scaling), one pair at a time."""
    q_ratio = max(k_size / q_size, 1.0)
    k_ratio = max(q_size / k_size, 1.0)
    return int(q_pos * q_ratio - k_pos * k_ratio + (k_size - 1) * k_ratio)


def _brute_force(q, q_thw, k_thw, tables):
    B, heads, _, C = q.shape
    q_grid = list(itertools.product(*[range(s) for s in q_thw]))
    k_grid = list(itertools.product(*[range(s) for s in k_thw]))
    out = torch.zeros(B, heads, len(q_grid), len(k_grid), dtype=torch.float64)
    for i, qp in enumerate(q_grid):
        for j, kp in enumerate(k_grid):
            r = torch.zeros(C, dtype=torch.float64)
            for axis, table in enumerate(tables):
                if table is not None:
                    r = r + table[_index(qp[axis], kp[axis], q_thw[axis], k_thw[axis])].double()
            out[:, :, i, j] = q[:, :, i].double() @ r
    return out


@pytest.mark.parametrize("q_thw, k_thw", [((4, 4), (4, 4)), ((4, 4), (2, 2)), ((2, 2), (4, 4)), ((3, 5), (6, 5))])
def test_bias_2d_matches_definition(q_thw, k_thw):
    C = 6
    q = torch.randn(2, 3, q_thw[0] * q_thw[1], C)
    rel_h = torch.randn(2 * max(q_thw[0], k_thw[0]) - 1, C)
    rel_w = torch.randn(2 * max(q_thw[1], k_thw[1]) - 1, C)
    bias = decomposed_rel_pos_bias(q, q_thw, k_thw, rel_h, rel_w)
    torch.testing.assert_close(bias.double(), _brute_force(q, q_thw, k_thw, [rel_h, rel_w]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("q_thw, k_thw", [((2, 4, 4), (2, 2, 2)), ((4, 2, 2), (2, 2, 2)), ((2, 3, 3), (4, 3, 3))])
def test_bias_3d_matches_definition(q_thw, k_thw):
    C = 4
    q = torch.randn(1, 2, q_thw[0] * q_thw[1] * q_thw[2], C)
    tables = [torch.randn(2 * max(a, b) - 1, C) for a, b in zip(q_thw, k_thw)]
    rel_t, rel_h, rel_w = tables
    bias = decomposed_rel_pos_bias(q, q_thw, k_thw, rel_h, rel_w, rel_t)
    torch.testing.assert_close(bias.double(), _brute_force(q, q_thw, k_thw, tables), atol=1e-5, rtol=1e-5)


def test_index_matrix_matches_pairwise_definition():
    for q_size, k_size in [(7, 7), (14, 7), (7, 28), (5, 3)]:
        idx = rel_pos_index(q_size, k_size)
        for i in range(q_size):
            for j in range(k_size):
                assert idx[i, j].item() == _index(i, j, q_size, k_size)
        assert idx.min().item() >= 0 and idx.max().item() <= 2 * max(q_size, k_size) - 2
