"""The ``--device cpu|cuda|auto`` flag of the inference tools (``tools/predict.py``, the detection demo)."""

from __future__ import annotations

import argparse
from typing import Tuple

import torch

from ..errors import UserError

__all__ = ["DEVICE_CHOICES", "add_device_argument", "resolve_device"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` with :data:`DEVICE_CHOICES` (a bad value is argparse's usage error: one line with mvit's parser)."""
    parser.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default="auto",
        help="where the model runs; auto: cuda if a GPU is available, else cpu (default: %(default)s)",
    )


def resolve_device(choice: str, flag: str = "--device") -> Tuple[torch.device, str]:
    """The device for ``choice`` and the one log line that says which and why.

    Raises:
        UserError: an unknown choice, or ``cuda`` asked for where torch sees no GPU (one line naming the flag).
    """
    if choice not in DEVICE_CHOICES:
        raise UserError(f"{flag} {choice}: expected one of {', '.join(DEVICE_CHOICES)}")
    available = torch.cuda.is_available()
    if choice == "cuda" and not available:
        raise UserError(
            f"{flag} cuda: torch sees no GPU (torch.cuda.is_available() is False; this torch is built for CUDA "
            f"{torch.version.cuda or 'none'}); use {flag} cpu or {flag} auto"
        )
    if choice == "auto":
        device = torch.device("cuda" if available else "cpu")
        why = "auto: a GPU is available" if available else "auto: no GPU available"
    else:
        device, why = torch.device(choice), f"{flag} {choice}"
    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    return device, f"Device: {device.type}{name} ({why})"
