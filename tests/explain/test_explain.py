"""mvit.explain: Grad-CAM on a hand-set model with a known answer, attention rollout against dense matrices,
identity attention, shapes for 2-D / 3-D with and without a class token, every zoo architecture at small size."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mvit.explain import attention_rollout, capture_attention, grad_cam, pooling_matrix, rollout
from mvit.models import MViT, MViTConfig, list_models, model_info


def tiny(ndim: int = 2, cls: bool = False, **kw) -> MViT:
    """3 blocks, 2 stages; q pooled at block 1, kv pooled adaptively, 32 px (4 frames)."""
    size = (32, 32) if ndim == 2 else (4, 32, 32)
    q = (2, 2) if ndim == 2 else (1, 2, 2)
    one = (1,) * ndim
    kw.setdefault("pool_kv_stride_adaptive", (4, 4) if ndim == 2 else (1, 4, 4))
    kw.setdefault("dim_mul", [[1, 2.0]])
    kw.setdefault("head_mul", [[1, 2.0]])
    kw.setdefault("pool_q_stride", [[0, *one], [1, *q], [2, *one]])
    cfg = MViTConfig(
        input_size=size,
        patch_kernel=(7, 7) if ndim == 2 else (3, 7, 7),
        patch_stride=(4, 4) if ndim == 2 else (2, 4, 4),
        patch_padding=(3, 3) if ndim == 2 else (1, 3, 3),
        embed_dim=16,
        num_heads=2,
        depth=3,
        pool_kvq_kernel=(3,) * ndim,
        cls_embed_on=cls,
        rel_pos_temporal=ndim == 3,
        num_classes=5,
        **kw,
    )
    torch.manual_seed(0)
    return MViT(cfg).eval()


# ---------------------------------------------------------------------------------------------- Grad-CAM
def marker_model(ndim: int) -> MViT:
    """A model whose class 1 logit is the mean red intensity of the patch tokens and class 0 its negative.

    Patch tokens are non-overlapping 4x4 cells; channel 0 of a token is its mean red value, the other channels 0.
    Attention output projections and MLP output layers are zero, so each block passes its tokens through its skip
    connection only (max pooling where q is pooled), the final norm is off, and the head averages the tokens.
    The red marker decides the class: Grad-CAM of class 1 must peak on it.
    """
    size = (32, 32) if ndim == 2 else (4, 32, 32)
    one = (1,) * ndim
    q = (2, 2) if ndim == 2 else (1, 2, 2)
    cfg = MViTConfig(
        input_size=size,
        patch_kernel=(4, 4) if ndim == 2 else (1, 4, 4),
        patch_stride=(4, 4) if ndim == 2 else (1, 4, 4),
        patch_padding=(0,) * ndim,
        embed_dim=8,
        depth=3,
        pool_q_stride=[[0, *one], [1, *q], [2, *one]],
        pool_kvq_kernel=(3,) * ndim,
        pool_kv_stride_adaptive=(2,) * ndim if ndim == 2 else (1, 2, 2),
        final_norm=False,
        num_classes=2,
    )
    model = MViT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]:
            ln.weight.fill_(1.0)
        model.patch_embed.proj.weight[0, 0] = 1.0 / math.prod(model.patch_embed.proj.weight.shape[2:])
        model.head.projection.weight[0, 0], model.head.projection.weight[1, 0] = -1.0, 1.0
    return model


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("stage", [0, 1])
def test_grad_cam_peaks_on_the_deciding_patch(ndim, stage):
    model = marker_model(ndim)
    gen = torch.Generator().manual_seed(ndim)
    for y, x in [(4, 20), (24, 8), (12, 28)]:  # asymmetric positions: a transposed map would miss them
        image = torch.rand((1, 3, *((4,) if ndim == 3 else ()), 32, 32), generator=gen) * 0.1
        image[:, 0, ..., y : y + 4, x : x + 4] = 1.0
        cam = grad_cam(model, image, stage=stage)
        assert cam.target.item() == 1  # the marker makes the mean red positive: class 1
        heat = cam.heatmap[0] if ndim == 2 else cam.heatmap[0].mean(dim=0)
        box = torch.zeros_like(heat, dtype=torch.bool)
        box[y : y + 4, x : x + 4] = True
        assert heat[box].mean() > 3 * heat[~box].mean()
        grid = cam.grid_map[0] if ndim == 2 else cam.grid_map[0].amax(dim=0)
        oy, ox = divmod(grid.argmax().item(), grid.shape[1])  # row-major: a transposed map would fail here
        if stage == 0:  # the token over the marker, and the heat map's peak inside the marker
            assert (oy, ox) == (y // 4, x // 4)
            peak = torch.nonzero(heat == heat.max()).float().mean(dim=0).round().long()
            assert box[peak[0], peak[1]]
        else:  # a max-pooled token (window 3, stride 2, padding 1) whose window holds the marker's token
            assert 2 * oy - 1 <= y // 4 <= 2 * oy + 1 and 2 * ox - 1 <= x // 4 <= 2 * ox + 1


def test_grad_cam_of_another_class_is_its_own():
    model = marker_model(2)
    image = torch.rand(1, 3, 32, 32) * 0.1
    image[:, 0, 4:8, 20:24] = 1.0
    # Class 0's logit falls with red everywhere: its positive part is empty.
    assert grad_cam(model, image, target=0).grid_map.max() == 0


# ---------------------------------------------------------------------------------------------- capture
@pytest.mark.parametrize("ndim,cls", [(2, False), (2, True), (3, True)])
def test_capture_leaves_the_output_unchanged(ndim, cls):
    model = tiny(ndim, cls)
    x = torch.randn(2, 3, *model.config.input_size)
    model.set_attn_impl("explicit")
    with torch.no_grad():
        reference = model(x)
        with capture_attention(model) as records:
            captured = model(x)
    model.set_attn_impl("auto")
    assert torch.equal(captured, reference)
    assert len(records) == 3 and all(b.attn.attn_impl == "auto" for b in model.blocks)
    assert all("_attend_explicit" not in b.attn.__dict__ for b in model.blocks)
    for rec in records:
        probs = rec["probs"]
        assert probs.shape[-2:] == (int(cls) + math.prod(rec["q_thw"]), int(cls) + math.prod(rec["k_thw"]))
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))


# ---------------------------------------------------------------------------------------------- rollout
def test_pooling_matrix_by_hand():
    # 5 positions, kernel 3, stride 2, padding 1: windows {0,1}, {1,2,3}, {3,4}.
    expected = torch.tensor(
        [[1 / 2, 1 / 2, 0, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0], [0, 0, 0, 1 / 2, 1 / 2]], dtype=torch.float64
    )
    torch.testing.assert_close(pooling_matrix(5, 3, 2, 1), expected)
    nearest = torch.tensor([[1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(pooling_matrix(5, 3, 2, 1, "nearest"), nearest)


def _per_axis(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def dense_pooling(pool, in_thw, cls):
    """(c + N_out) x (c + N_in) by average pooling (count_include_pad=False) of one one-hot map per input token."""
    n_in = math.prod(in_thw)
    if pool is None:
        return torch.eye(cls + n_in, dtype=torch.float64)
    avg = F.avg_pool2d if len(in_thw) == 2 else F.avg_pool3d
    onehot = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, *in_thw)
    # Zero padding done here (avg_pool refuses grids smaller than the kernel); dividing by the pooled mask of
    # in-grid positions is count_include_pad=False.
    pad = [p for p in reversed(_per_axis(pool.padding, len(in_thw))) for _ in (0, 1)]
    inside = F.pad(torch.ones(1, 1, *in_thw, dtype=torch.float64), pad)
    pooled = avg(F.pad(onehot, pad), pool.kernel_size, pool.stride) / avg(inside, pool.kernel_size, pool.stride)
    m = pooled.reshape(n_in, -1).t()
    out = torch.zeros(cls + m.shape[0], cls + n_in, dtype=torch.float64)
    out[cls:, cls:] = m
    if cls:
        out[0, 0] = 1.0
    return out


@pytest.mark.parametrize("ndim,cls,res_cls", [(2, False, False), (2, True, False), (3, True, True), (3, False, False)])
def test_rollout_equals_the_product_of_dense_block_matrices(ndim, cls, res_cls):
    model = tiny(ndim, cls, residual_pooling_cls=res_cls)
    x = torch.randn(2, 3, *model.config.input_size)
    with torch.no_grad(), capture_attention(model) as records:
        model(x)
    c = int(cls)
    product = None
    for blk, rec in zip(model.blocks, records):
        A = rec["probs"].double().mean(dim=1)  # (B, Nq, Nk)
        res = torch.full((A.shape[1], 1), 0.5, dtype=torch.float64)
        if cls and not res_cls:
            res[0] = 0.0
        P_kv = dense_pooling(blk.attn.pool_k, rec["in_thw"], c)
        P_q = dense_pooling(blk.attn.pool_q, rec["in_thw"], c)
        P_skip = dense_pooling(blk.pool_skip, rec["in_thw"], c)
        M = 0.5 * P_skip + 0.5 * ((1 - res) * (A @ P_kv) + res * P_q)
        torch.testing.assert_close(M.sum(-1), torch.ones(M.shape[:-1], dtype=torch.float64))
        product = M if product is None else M @ product
    start = torch.eye(product.shape[1], dtype=torch.float64).expand(2, -1, -1)
    torch.testing.assert_close(rollout(model, records, start), product)


def no_pooling(cls: bool) -> MViT:
    return tiny(2, cls, pool_kv_stride_adaptive=None, pool_q_stride=[], dim_mul=[], head_mul=[])


@pytest.mark.parametrize("cls", [False, True])
def test_rollout_of_identity_attention_is_the_identity(cls):
    model = no_pooling(cls)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), capture_attention(model) as records:
        model(x)
    n = records[0]["probs"].shape[-1]
    for rec in records:
        rec["probs"] = torch.eye(n).expand(1, 2, n, n)
    eye = torch.eye(n, dtype=torch.float64)[None]
    torch.testing.assert_close(rollout(model, records, eye), eye)
    # The average-pooled head reads every patch token equally: its map is uniform.
    if not cls:
        mean_row = torch.full((1, 1, n), 1.0 / n, dtype=torch.float64)
        torch.testing.assert_close(rollout(model, records, mean_row), mean_row)


@pytest.mark.parametrize("ndim,cls", [(2, False), (2, True), (3, False), (3, True)])
def test_shapes_and_relevance_sum(ndim, cls):
    model = tiny(ndim, cls)
    x = torch.randn(2, 3, *model.config.input_size)
    roll = attention_rollout(model, x)
    patch_grid = model.config.patch_grid
    assert roll.grid_map.shape == (2, *patch_grid) and roll.heatmap.shape == (2, *x.shape[2:])
    torch.testing.assert_close(roll.grid_map.sum(dim=tuple(range(1, ndim + 1))) + roll.cls_share, torch.ones(2))
    assert (roll.cls_share > 0).all() if cls else (roll.cls_share == 0).all()
    assert 0 <= roll.heatmap.min() and roll.heatmap.max() == 1
    maps = model.forward_intermediates(x, intermediates_only=True)
    for stage, fmap in enumerate(maps):
        cam = grad_cam(model, x, stage=stage)
        assert cam.heatmap.shape == (2, *x.shape[2:])
        if cls and stage == len(maps) - 1:  # the last block's input: the grid before the last block
            assert cam.grid_map.shape[1:] == maps[-1].shape[2:]  # (the last block does not pool q here)
        else:
            assert cam.grid_map.shape == (2, *fmap.shape[2:])
        assert cam.grid_map.max() > 0


def reduced(name: str) -> MViTConfig:
    """The zoo architecture with one block per stage, 8 channels per head, at 64 px (4 x 64 x 64 for video)."""
    cfg = model_info(name).build_config()
    n = cfg.ndim
    q, one = ((2, 2) if n == 2 else (1, 2, 2)), (1,) * n
    return cfg.replace(
        input_size=(64, 64) if n == 2 else (4, 64, 64),
        embed_dim=8 * cfg.num_heads,  # the zoo's heads, pooling and tokens; its widths only cost time here
        depth=4,
        dim_mul=[[1, 2.0], [2, 2.0], [3, 2.0]],
        head_mul=[[1, 2.0], [2, 2.0], [3, 2.0]],
        pool_q_stride=[[i, *(q if i else one)] for i in range(4)],
        num_classes=7,
    )


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_architecture(name):
    torch.manual_seed(0)
    model = MViT(reduced(name)).eval()
    x = torch.randn(1, 3, *model.config.input_size)
    cam, roll = grad_cam(model, x), attention_rollout(model, x)
    assert cam.heatmap.shape == roll.heatmap.shape == (1, *x.shape[2:])
    assert roll.grid_map.shape == (1, *model.config.patch_grid)
    torch.testing.assert_close(roll.grid_map.sum() + roll.cls_share.sum(), torch.tensor(1.0))
    assert torch.isfinite(cam.grid_map).all() and cam.grid_map.max() > 0
