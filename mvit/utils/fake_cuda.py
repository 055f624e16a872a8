"""Fake CUDA for tests and ``tools/gpu_check.py --dry-run``: CUDA code paths run on a machine without a GPU.

What works in torch 2.14 without a GPU (``torch.cuda.is_available()`` False):

- Tensors: ``FakeTensorMode`` creates tensors with ``device="cuda"`` that carry shape, dtype and device but no
  data, so every op costs its shape propagation only. A module cannot be moved there with ``.to("cuda")``
  (``_apply`` cannot swap a real parameter for a fake one) and cannot be built inside the mode (the random
  initialisation, e.g. ``trunc_normal_``, reads values): :func:`fake_cuda_module` builds it on the meta device and
  puts a fake CUDA parameter / buffer in each slot.
- Autocast: ``torch.autocast("cuda")`` disables itself when CUDA is unavailable; :func:`fake_cuda_autocast` patches
  the two availability checks it makes, after which the autocast dispatch key applies to fake CUDA tensors as on a
  GPU (linear layers run in bf16 / fp16, softmax and norms in fp32).
- Backward does not: the autograd engine asks the CUDA driver for the device's context (``hasPrimaryContext``).
  Backward runs on the meta device instead (same graph, no device).
- SDPA: without a GPU to query, ``F.scaled_dot_product_attention`` on fake CUDA tensors takes its math path, which
  materialises the logits. :func:`gpu_sdpa` stands in the kernel a GPU picks (flash attention for half-precision
  inputs without a mask and a head size that is a multiple of 8 up to 256, else the memory-efficient kernel, whose
  float mask is copied into a buffer padded to a multiple of 16 keys), so that memory is counted as on a GPU.
  Which kernel a real GPU runs is checked by ``tools/gpu_check.py`` (profiler kernel names).
- Limits: no values (numerics, NaN checks, ``.item()`` raise ``DataDependentOutputException``).
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Callable, Dict, Iterator, List, Tuple
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["DeviceCheckMode", "MemoryRecorder", "fake_cuda_autocast", "fake_cuda_module", "gpu_sdpa"]


def fake_cuda_module(build: Callable[[], nn.Module], mode: FakeTensorMode, device: str = "cuda") -> nn.Module:
    """``build()`` on the meta device, then each parameter and buffer replaced by a fake tensor on ``device``
    (same shape, strides, dtype and ``requires_grad``)."""
    with torch.device("meta"):
        module = build()
    for sub in module.modules():
        for name, param in sub._parameters.items():
            if param is not None:
                with mode:
                    fake = torch.empty_strided(param.shape, param.stride(), dtype=param.dtype, device=device)
                sub._parameters[name] = nn.Parameter(fake, requires_grad=param.requires_grad)
        for name, buf in sub._buffers.items():
            if buf is not None:
                with mode:
                    sub._buffers[name] = torch.empty_strided(buf.shape, buf.stride(), dtype=buf.dtype, device=device)
    return module


@contextlib.contextmanager
def fake_cuda_autocast(dtype: torch.dtype) -> Iterator[None]:
    """``torch.autocast("cuda", dtype)`` enabled without a GPU (its two availability checks patched)."""
    with (
        mock.patch("torch.cuda.amp.common.amp_definitely_not_available", return_value=False),
        mock.patch("torch.cuda.is_bf16_supported", return_value=True),
    ):
        with torch.autocast("cuda", dtype=dtype):
            yield


def _gpu_kernel_sdpa(sdpa: Callable) -> Callable:
    def attend(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if query.device.type != "cuda" or dropout_p or is_causal or enable_gqa:
            return sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)
        if torch.is_autocast_enabled("cuda"):  # SDPA runs in the autocast dtype
            dtype = torch.get_autocast_dtype("cuda")
            query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
            attn_mask = attn_mask.to(dtype) if attn_mask is not None else None
        head = query.shape[-1]
        if attn_mask is None and query.dtype in (torch.float16, torch.bfloat16) and head % 8 == 0 and head <= 256:
            return torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, scale=scale)[0]
        if attn_mask is not None and attn_mask.shape[-1] % 16:
            keys = attn_mask.shape[-1]
            attn_mask = F.pad(attn_mask, (0, -keys % 16))[..., :keys]
        return torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, attn_mask, False, scale=scale)[
            0
        ]

    return attend


@contextlib.contextmanager
def gpu_sdpa() -> Iterator[None]:
    """``F.scaled_dot_product_attention`` on fake CUDA tensors runs the flash or memory-efficient kernel's op (shapes
    only), as a GPU would, instead of the math path; other tensors are unaffected."""
    with mock.patch.object(F, "scaled_dot_product_attention", _gpu_kernel_sdpa(F.scaled_dot_product_attention)):
        yield


def _tensors(tree) -> List[torch.Tensor]:
    """The tensors in an op's arguments or outputs (flat, or in a list / tuple / dict one level down): cheaper than
    pytree's flatten, which would double the cost of a fake forward pass."""
    found = []
    for item in tree.values() if isinstance(tree, dict) else tree if isinstance(tree, (list, tuple)) else (tree,):
        if isinstance(item, torch.Tensor):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            found.extend(t for t in item if isinstance(t, torch.Tensor))
    return found


class DeviceCheckMode(TorchDispatchMode):
    """Records every op whose tensor inputs or outputs are not all on ``device_type`` ("no stray CPU tensor").

    Enter it inside the ``FakeTensorMode`` (``with fake_mode, DeviceCheckMode("cuda") as check:``) so that it sees
    each op first. ``check.strays``: ``(op name, devices seen)``, empty when every tensor stayed on the device (ops
    whose tensors are all 0-dim host tensors, such as torch.optim's step counters, are not strays).
    """

    def __init__(self, device_type: str = "cuda") -> None:
        super().__init__()
        self.device_type = device_type
        self.strays: List[Tuple[str, Tuple[str, ...]]] = []
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        tensors = _tensors(args) + _tensors(kwargs) + _tensors(out)
        off_device = [t for t in tensors if t.device.type != self.device_type]
        # Ops on host scalars alone (torch.optim's per-parameter step counters) never touch the device.
        if off_device and not (len(off_device) == len(tensors) and all(t.dim() == 0 for t in tensors)):
            self.strays.append((str(func), tuple(sorted({t.device.type for t in tensors}))))
        return out


class MemoryRecorder(TorchDispatchMode):
    """Records the tensors ops return: ``outputs`` ``(op name, shape, dtype)``, and the peak of the bytes held by
    the storages they created and that are still referenced (``peak_bytes``; inputs and parameters not counted).

    Exact for fake and real tensors under ``torch.no_grad()`` (with autograd, saved tensors can outlive their
    Python objects and are then missed).
    """

    def __init__(self) -> None:
        super().__init__()
        self.outputs: List[Tuple[str, Tuple[int, ...], torch.dtype]] = []
        self.live_bytes = 0
        self.peak_bytes = 0
        self._refs: Dict[int, List[int]] = {}  # storage id -> [referencing tensors alive, nbytes]

    def _release(self, key: int) -> None:
        entry = self._refs[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live_bytes -= entry[1]
            del self._refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in _tensors(out):
            self.outputs.append((str(func), tuple(t.shape), t.dtype))
            storage = t.untyped_storage()
            key = storage._cdata
            if key not in self._refs:
                self._refs[key] = [0, storage.nbytes()]
                self.live_bytes += storage.nbytes()
                self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            self._refs[key][0] += 1
            weakref.finalize(t, self._release, key)
        return out
