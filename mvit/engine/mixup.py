"""Batch-wise mixup / cutmix for images ``(B, C, H, W)`` and clips ``(B, C, T, H, W)``.

timm's :class:`~timm.data.Mixup` draws the cutmix box from the last two dimensions but pastes it with
``x[:, :, y0:y1, x0:x1]``: on a clip that cuts frames x rows at full width while the label weight is computed from
H x W (29.9% of the voxels pasted against a label weight of 14.9%, measured). PySlowFast's ``MixUp`` pastes the same
spatial box into every frame (``x[..., y0:y1, x0:x1]``); this class does that, keeping timm's random draws, so an
image batch is mixed to timm's bytes and a clip batch as PySlowFast mixes it under the same seeds.
"""

from __future__ import annotations

import torch
from timm.data import Mixup
from timm.data.mixup import cutmix_bbox_and_lam

__all__ = ["BatchMixup"]


class BatchMixup(Mixup):
    """timm's ``Mixup`` in its ``"batch"`` mode (the one PySlowFast and the official recipes use), with the cutmix
    box spanning every frame of a clip.

    Args: timm's, except ``mode`` (always ``"batch"``: timm's per-element modes index ``x[i][:, ...]`` and have the
    same fault on clips).
    """

    def __init__(self, **kwargs) -> None:
        if kwargs.pop("mode", "batch") != "batch":
            raise ValueError("BatchMixup mixes whole batches only (mode='batch')")
        super().__init__(mode="batch", **kwargs)

    def _mix_batch(self, x: torch.Tensor) -> float:
        # timm's _mix_batch with one change: the box is indexed on the last two dimensions (all frames of a clip).
        lam, use_cutmix = self._params_per_batch()
        if lam == 1.0:
            return 1.0
        if use_cutmix:
            (y0, y1, x0, x1), lam = cutmix_bbox_and_lam(
                x.shape, lam, ratio_minmax=self.cutmix_minmax, correct_lam=self.correct_lam
            )
            x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
        else:
            x_flipped = x.flip(0).mul_(1.0 - lam)  # before x is scaled in place
            x.mul_(lam).add_(x_flipped)
        return lam
