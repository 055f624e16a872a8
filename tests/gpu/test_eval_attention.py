"""Issue 19, item 5: inference attention on CUDA folds the rel-pos bias into SDPA (no (B, heads, Nq, Nk) mask), with
the outputs of the mask path and of the explicit reference."""

from __future__ import annotations

import math

import pytest
import torch

from mvit.models import MViT
from mvit.models.attention import MultiScaleAttention
from mvit.models.zoo import model_info
from mvit.utils.fake_cuda import MemoryRecorder, fake_cuda_module, gpu_sdpa


def _first_block_of_l40x3(size: int = 312):
    """The first attention block of mvitv2_l_40x3 at ``size`` px: grid (20, size/4, size/4), keys pooled 1x8x8."""
    config = model_info("mvitv2_l_40x3").build_config().replace(input_size=(40, size, size))
    with torch.device("meta"):
        spec = MViT(config).block_specs[0]
    return spec, spec.input_size


def _inference_memory(fake_mode, device: str, batch: int = 8):
    """(peak bytes of the tensors the block creates, their shapes) for one no-grad forward of the L 40x3 block."""
    spec, thw = _first_block_of_l40x3()
    attn = fake_cuda_module(lambda: MultiScaleAttention(spec), fake_mode, device).eval()
    with fake_mode:
        x = torch.empty(batch, 1 + math.prod(thw), spec.dim, device=device)
    with fake_mode, gpu_sdpa(), MemoryRecorder() as memory, torch.no_grad():
        out, _ = attn(x, thw)
    assert out.shape == (batch, 1 + math.prod(thw), spec.dim) and out.device.type == device
    n_q, n_k = 1 + math.prod(thw), 1 + math.prod(s // k for s, k in zip(thw, spec.stride_kv))
    mask_shapes = {shape for _, shape, _ in memory.outputs if math.prod(shape) >= batch * spec.num_heads * n_q * n_k}
    return memory.peak_bytes, mask_shapes


def test_cuda_inference_builds_no_bias_mask(fake_mode):
    """L 40x3 at 312 px, 8 clips: on fake CUDA no tensor of the mask's size, and the block's peak drops from the
    CPU (mask) path's 15.6 GiB to 2.6 GiB (measured here; asserted: under a fifth)."""
    cuda_peak, cuda_masks = _inference_memory(fake_mode, "cuda")
    cpu_peak, cpu_masks = _inference_memory(fake_mode, "cpu")
    assert cuda_masks == set()
    assert cpu_masks  # the same recorder sees the CPU path's (8, 2, 121681, 2001) mask
    assert cuda_peak < cpu_peak / 5, (cuda_peak / 2**30, cpu_peak / 2**30)


def test_cuda_inference_memory_with_the_old_mask_path(fake_mode, monkeypatch):
    """The issue's figure, from the mask path on a GPU kernel: the mask and its padded copy, ~29 GiB."""
    fold = MultiScaleAttention._sdpa_folded

    def mask_path(self, q, k, v, q_thw, k_thw):
        if torch.is_grad_enabled():
            return fold(self, q, k, v, q_thw, k_thw)
        mask = self._bias_mask(q, q_thw, k_thw)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    monkeypatch.setattr(MultiScaleAttention, "_sdpa_folded", mask_path)
    peak, masks = _inference_memory(fake_mode, "cuda")
    assert masks and 28 * 2**30 < peak < 32 * 2**30, peak / 2**30


@pytest.mark.parametrize("has_cls", [False, True])
def test_folded_inference_matches_mask_and_explicit(has_cls, perturb):
    """A scaled-down L 40x3 block (grid 4x16x16, keys 4x2x2, 2 heads) on the CPU without gradients: the fold (the
    CUDA inference path) gives the mask path's and the explicit reference's outputs."""
    spec, _ = _first_block_of_l40x3()
    thw = (4, 16, 16)
    spec = spec.__class__(**{**spec.__dict__, "input_size": thw, "has_cls": has_cls, "attn_impl": "sdpa"})
    attn = perturb(MultiScaleAttention(spec), scale=0.05).eval()
    x = torch.randn(2, int(has_cls) + math.prod(thw), spec.dim)
    with torch.no_grad():
        q, k, v, q_thw, k_thw = attn._project_qkv(x, thw)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        explicit = attn._attend_explicit(q, k, v, q_thw, k_thw)
        mask = attn._attend(q, k, v, q_thw, k_thw)  # CPU inference: the mask path
        folded = attn._sdpa_folded(q, k, v, q_thw, k_thw)
    assert k.shape[-2] == int(has_cls) + 4 * 2 * 2
    torch.testing.assert_close(folded, explicit, rtol=0, atol=1e-5)
    torch.testing.assert_close(folded, mask, rtol=0, atol=1e-5)
