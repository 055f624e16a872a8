"""Numerics and kernel-selection flags of a run: float32 matmul / convolution precision (TF32) and cuDNN autotuning."""

from __future__ import annotations

import logging

import torch
from fvcore.common.config import CfgNode

from ..errors import ConfigError

__all__ = ["MATMUL_PRECISIONS", "configure_backends"]

logger = logging.getLogger(__name__)

# torch.set_float32_matmul_precision's values, and "auto": "high" (TF32) on CUDA, "highest" (IEEE fp32) elsewhere.
MATMUL_PRECISIONS = ("auto", "highest", "high", "medium")


def configure_backends(cfg: CfgNode, device: torch.device) -> str:
    """Set the process-wide flags ``TRAIN.MATMUL_PRECISION`` and ``TRAIN.CUDNN_BENCHMARK`` mean on ``device``;
    returns the line logged.

    - float32 matmuls: ``torch.set_float32_matmul_precision``; cuDNN convolutions use TF32 unless "highest".
      "auto" is TF32 ("high") on CUDA, where Ampere and later GPUs run fp32 matmuls on tensor cores with a 10-bit
      mantissa (as timm's and most training scripts do), and "highest" on the CPU.
    - ``cudnn.benchmark`` on CUDA: inputs of a training / test job have one size, so autotuning pays once.
    """
    key = str(cfg.TRAIN.MATMUL_PRECISION).lower()
    if key not in MATMUL_PRECISIONS:
        raise ConfigError(
            f"TRAIN.MATMUL_PRECISION: {cfg.TRAIN.MATMUL_PRECISION!r} is not one of {list(MATMUL_PRECISIONS)}"
        )
    cuda = device.type == "cuda"
    precision = ("high" if cuda else "highest") if key == "auto" else key
    # The legacy flags only: torch refuses to read TF32 flags set through both its legacy and its new API.
    torch.set_float32_matmul_precision(precision)
    torch.backends.cudnn.allow_tf32 = precision != "highest"
    torch.backends.cudnn.benchmark = cuda and bool(cfg.TRAIN.CUDNN_BENCHMARK)
    tf32 = "TF32 matmuls and convolutions" if precision != "highest" else "IEEE fp32, no TF32"
    line = (
        f"backends on {device.type}: float32 matmul precision {precision} ({tf32}; TRAIN.MATMUL_PRECISION {key}), "
        f"cudnn.benchmark {'on' if torch.backends.cudnn.benchmark else 'off'}"
    )
    logger.info("%s", line)
    return line
