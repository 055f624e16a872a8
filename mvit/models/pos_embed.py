"""Absolute position embeddings laid out on a token grid, and their resizing to another grid."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["grid_mode", "resize_pos_grid"]


def grid_mode(ndim: int) -> str:
    """Interpolation of a position grid of ``ndim`` axes: linear (time), bicubic (images), trilinear (video)."""
    return {1: "linear", 2: "bicubic", 3: "trilinear"}[ndim]


def resize_pos_grid(pos: torch.Tensor, old: Tuple[int, ...], new: Tuple[int, ...], mode: str = "") -> torch.Tensor:
    """Resize a (1, prod(old), C) position embedding laid out on grid ``old`` to grid ``new``: (1, prod(new), C).

    ``mode`` defaults to :func:`grid_mode` of the grid. The one implementation: run-time inputs of another size
    and checkpoints loaded with ``strict=False`` (``mvit.checkpoint``) both resize through it.
    """
    mode = mode or grid_mode(len(old))
    C = pos.shape[-1]
    grid = pos.reshape(1, *old, C).movedim(-1, 1)
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    grid = F.interpolate(grid, size=tuple(new), mode=mode, **kwargs)
    return grid.movedim(1, -1).reshape(1, -1, C)
