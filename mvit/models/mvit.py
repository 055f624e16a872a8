"""MViTv2: one model for images (B, 3, H, W) and video (B, 3, T, H, W).

Improved Multiscale Vision Transformers for Classification and Detection (Li et al., CVPR 2022).
Parameter names follow the official release (``patch_embed.proj``, ``blocks.{i}.attn.qkv``, ``head.projection``
...), so official and PySlowFast checkpoints load without renaming; ``mvit.checkpoint`` converts the others.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as grad_checkpoint

from .block import MultiScaleBlock
from .config import MViTConfig
from .layers import ClassifierHead, PatchEmbed
from .pos_embed import resize_pos_grid

__all__ = ["MViT"]

Grid = Tuple[int, ...]


class MViT(nn.Module):
    """Multiscale Vision Transformer v2.

    Args:
        config: architecture; ``len(config.input_size)`` (2 or 3) selects images or video. Kept as
            ``model.config`` (``cfg`` is an experiment config in this project, never the model's).

    Inputs other than the build size ``config.input_size`` work: relative position tables (and absolute position
    embeddings) are interpolated at run time; at the build size nothing is interpolated.

    Besides ``forward`` it has timm's model interface: ``forward_features``, ``forward_head``,
    ``forward_intermediates``, ``get_classifier``, ``reset_classifier``, ``no_weight_decay``, ``group_matcher``,
    ``set_grad_checkpointing`` and ``feature_info``; ``forward_multiscale`` gives detectron2-style stage maps.
    """

    def __init__(self, config: MViTConfig) -> None:
        super().__init__()
        self.config = config
        self.ndim = config.ndim
        self.in_chans = config.in_chans
        self.num_classes = config.num_classes
        self.cls_embed_on = config.cls_embed_on
        self.global_pool = "token" if config.cls_embed_on else "avg"
        self.grad_checkpointing = config.act_checkpoint
        self.patch_embed = PatchEmbed(
            config.in_chans, config.embed_dim, config.patch_kernel, config.patch_stride, config.patch_padding
        )
        self.patch_grid = config.patch_grid

        dim = config.embed_dim
        if config.cls_embed_on:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.sep_pos_embed = config.use_abs_pos and config.sep_pos_embed and self.ndim == 3
        if config.use_abs_pos:
            if self.sep_pos_embed:
                t, h, w = self.patch_grid
                self.pos_embed_spatial = nn.Parameter(torch.zeros(1, h * w, dim))
                self.pos_embed_temporal = nn.Parameter(torch.zeros(1, t, dim))
                if config.cls_embed_on:
                    self.pos_embed_class = nn.Parameter(torch.zeros(1, 1, dim))
            else:
                num_tokens = math.prod(self.patch_grid) + int(config.cls_embed_on)
                self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))

        self.block_specs = config.block_specs()
        self.blocks = nn.ModuleList(MultiScaleBlock(spec) for spec in self.block_specs)
        self.stage_ends = config.stage_ends()
        self.feature_info = self._feature_info()
        if config.out_norm:
            for info in self.feature_info:
                self.add_module(f"{info['name']}_norm", nn.LayerNorm(info["num_chs"], eps=config.norm_eps))
        self.num_features = self.head_hidden_size = self.block_specs[-1].dim_out
        self.norm = nn.LayerNorm(self.num_features, eps=config.norm_eps) if config.final_norm else nn.Identity()
        self.head = ClassifierHead(self.num_features, config.num_classes, config.head_dropout)
        self._init_weights()

    # ------------------------------------------------------------------ init and metadata
    def _init_weights(self) -> None:
        for name in ("cls_token", "pos_embed", "pos_embed_spatial", "pos_embed_temporal", "pos_embed_class"):
            if hasattr(self, name):
                nn.init.trunc_normal_(getattr(self, name), std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _feature_info(self) -> List[dict]:
        info, reduction = [], self.config.patch_stride[-1]
        for k, end in enumerate(self.stage_ends):
            if k > 0:
                start = self.block_specs[self.stage_ends[k - 1] + 1]
                reduction *= start.stride_q[-1] if start.stride_q else 1
            num_chs = self.block_specs[end].dim_out
            info.append(
                dict(name=f"scale{k + 2}", module=f"blocks.{end}", num_chs=num_chs, reduction=reduction, index=end)
            )
        return info

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """Names of parameters that take no weight decay: position embeddings, class token, rel-pos tables."""
        keys = ("cls_token", "pos_embed", "rel_pos_h", "rel_pos_w", "rel_pos_t")
        return {name for name, _ in self.named_parameters() if any(k in name.split(".")[-1] for k in keys)}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Union[str, List[Tuple[str, Optional[tuple]]]]]:
        """Parameter groups in timm's form (``timm.models.group_parameters``), for layer-wise lr decay.

        Ordered groups: the stem (patch embedding, class token, position embeddings), then one group per block
        (per stage when ``coarse``); what no rule matches (final norm, output norms, head) forms the last group.
        """
        if not coarse:
            return dict(stem=r"^(?:cls_token|pos_embed|patch_embed)", blocks=[(r"^blocks\.(\d+)\.", None)])
        starts = [0] + [end + 1 for end in self.stage_ends[:-1]]
        stages = [
            (rf"^blocks\.(?:{'|'.join(str(i) for i in range(start, end + 1))})\.", (k,))
            for k, (start, end) in enumerate(zip(starts, self.stage_ends))
        ]
        return dict(stem=r"^(?:cls_token|pos_embed|patch_embed)", blocks=stages)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations (training only)."""
        self.grad_checkpointing = enable

    def set_attn_impl(self, impl: str) -> None:
        """Attention kernel of every block: "auto", "sdpa" or "explicit"."""
        if impl not in ("auto", "sdpa", "explicit"):
            raise ValueError(f"attention implementation must be 'auto', 'sdpa' or 'explicit', got {impl!r}")
        for blk in self.blocks:
            blk.attn.attn_impl = impl

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The classifier's linear layer (``nn.Identity`` without classes)."""
        return self.head.projection

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classification head (fine-tuning with another label set), on the model's device and dtype.

        ``global_pool``: "token" (the class token; needs ``cls_embed_on``), "avg" (mean of the patch tokens) or ""
        (none: the head gets every token, timm's convention); None keeps the current pooling.
        """
        if global_pool is not None:
            if global_pool not in ("avg", "token", ""):
                raise ValueError(f"reset_classifier: global_pool must be 'avg', 'token' or '', got {global_pool!r}")
            if global_pool == "token" and not self.cls_embed_on:
                raise ValueError("reset_classifier: global_pool='token' needs a model with a class token")
            self.global_pool = global_pool
        self.num_classes = num_classes
        param = next(self.parameters())
        head = ClassifierHead(self.num_features, num_classes, self.config.head_dropout)
        if num_classes > 0:
            nn.init.trunc_normal_(head.projection.weight, std=0.02)
            nn.init.zeros_(head.projection.bias)
        self.head = head.to(device=param.device, dtype=param.dtype).train(self.training)

    # ------------------------------------------------------------------ forward
    def _abs_pos(self, grid: Grid) -> torch.Tensor:
        """Absolute position embedding for a token grid, interpolated when it differs from the build grid."""
        cls_on = self.cls_embed_on
        if self.sep_pos_embed:
            t0, h0, w0 = self.patch_grid
            spatial = self.pos_embed_spatial
            if (h0, w0) != tuple(grid[1:]):
                spatial = resize_pos_grid(spatial, (h0, w0), grid[1:])
            temporal = self.pos_embed_temporal
            if t0 != grid[0]:
                temporal = resize_pos_grid(temporal, (t0,), grid[:1])
            pos = (spatial.unsqueeze(1) + temporal.unsqueeze(2)).flatten(1, 2)
            if cls_on:
                pos = torch.cat((self.pos_embed_class, pos), dim=1)
            return pos
        pos = self.pos_embed
        if tuple(grid) != tuple(self.patch_grid):
            cls_pos, patch_pos = (pos[:, :1], pos[:, 1:]) if cls_on else (None, pos)
            patch_pos = resize_pos_grid(patch_pos, self.patch_grid, grid)
            pos = torch.cat((cls_pos, patch_pos), dim=1) if cls_on else patch_pos
        return pos

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Grid]:
        x, grid = self.patch_embed(_checked_input(x, self.ndim, self.in_chans))
        if self.cls_embed_on:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        if self.config.use_abs_pos:
            x = x + _abs_pos_embed(self, grid)
        return x, grid

    def _run_block(self, blk: nn.Module, x: torch.Tensor, thw: Grid):
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return grad_checkpoint(blk, x, thw, use_reentrant=False)
        return blk(x, thw)

    def _forward_stages(
        self, x: torch.Tensor, take: Sequence[int], last: int
    ) -> Tuple[torch.Tensor, List[Tuple[int, torch.Tensor, Grid]]]:
        """Embed ``x`` and run the blocks up to the end of stage ``last``; return the tokens there and
        ``(stage, tokens, grid)`` at the end of every stage in ``take``."""
        x, thw = self._embed(x)
        taken: List[Tuple[int, torch.Tensor, Grid]] = []
        stage = 0
        for i, blk in enumerate(self.blocks[: self.stage_ends[last] + 1]):
            x, thw = self._run_block(blk, x, thw)
            if i == self.stage_ends[stage]:
                if stage in take:
                    taken.append((stage, x, thw))
                stage += 1
        return x, taken

    def _token_map(self, tokens: torch.Tensor, thw: Grid, norm: Optional[nn.Module] = None) -> torch.Tensor:
        """Tokens (B, [1 +] N, C) -> feature map (B, C, [T,] H, W) of the patch tokens, through ``norm`` if given."""
        patches = tokens[:, int(self.cls_embed_on) :]
        if norm is not None:
            patches = norm(patches)
        return patches.transpose(1, 2).reshape(tokens.shape[0], -1, *thw)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, [T,] H, W) -> tokens after the final norm, (B, N, C') (class token first when used)."""
        x, thw = self._embed(x)
        for blk in self.blocks:
            x, thw = self._run_block(blk, x, thw)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, N, C') -> logits (B, num_classes): the class token, or the mean of the patch tokens
        (``global_pool`` "token" or "avg"; "" pools nothing; see :meth:`reset_classifier`)."""
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, int(self.cls_embed_on) :].mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, [T,] H, W) -> logits (B, num_classes). No softmax, in train or eval mode."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, Sequence[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: Optional[str] = None,
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs, with timm's semantics (one intermediate per stage, as timm's MViTv2).

        Args:
            x: (B, C, H, W) or (B, C, T, H, W).
            indices: stages to return: all when None, the last n for an int n, else these (negative from the end).
            norm: apply the final norm to the last stage's intermediate.
            stop_early: stop after the last stage asked for (the final output is then the un-normed tokens there).
            output_fmt: "NCHW" (2-D, the default) or "NCTHW" (3-D, the default): maps without the class token;
                "NLC": tokens as the blocks give them, class token first when used.
            intermediates_only: return the list only.

        Returns:
            ``(final tokens, [intermediates])`` (the final tokens equal :meth:`forward_features` when not stopped
            early), or the list alone with ``intermediates_only``.
        """
        spatial_fmt = "NCHW" if self.ndim == 2 else "NCTHW"
        output_fmt = output_fmt or spatial_fmt
        if output_fmt not in (spatial_fmt, "NLC"):
            raise ValueError(f"forward_intermediates: output_fmt for a {self.ndim}-D model is {spatial_fmt!r} or 'NLC'")
        take = _take_indices(len(self.stage_ends), indices)
        last_stage = len(self.stage_ends) - 1
        last = max(take) if stop_early else last_stage
        x, taken = self._forward_stages(x, take, last)
        intermediates = []
        for stage, tokens, thw in taken:
            if norm and stage == last_stage:
                tokens = self.norm(tokens)
            intermediates.append(tokens if output_fmt == "NLC" else self._token_map(tokens, thw))
        if intermediates_only:
            return intermediates
        return (self.norm(x) if last == last_stage else x), intermediates

    def forward_multiscale(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Stage outputs as feature maps: {"scale2": (B, C2, [T,] H/4, W/4), ..., "scale5": (..., H/32, W/32)}.

        The class token is dropped; each map goes through its own LayerNorm when ``config.out_norm``.
        """
        stages = range(len(self.stage_ends))
        _, taken = self._forward_stages(x, stages, stages[-1])
        outputs: Dict[str, torch.Tensor] = {}
        for stage, tokens, thw in taken:
            name = self.feature_info[stage]["name"]
            norm = getattr(self, f"{name}_norm") if self.config.out_norm else None
            outputs[name] = self._token_map(tokens, thw, norm)
        return outputs


def _checked_input(x: torch.Tensor, ndim: int, in_chans: int) -> torch.Tensor:
    """``x`` if it is a batch of images (``ndim`` 2) or clips (3) with ``in_chans`` channels, else a one-line
    ValueError. Returns ``x`` so that a traced graph, which drops calls whose result is unused, keeps the check."""
    axes = "(B, C, H, W)" if ndim == 2 else "(B, C, T, H, W)"
    if x.ndim != ndim + 2:
        raise ValueError(f"MViT ({ndim}-D) expects input of shape {axes}, got {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(f"MViT expects {in_chans} input channels {axes}, got {x.shape[1]} in {tuple(x.shape)}")
    return x


def _abs_pos_embed(model: MViT, grid: Grid) -> torch.Tensor:
    """``model._abs_pos(grid)``, as a function that torch.fx records as one call (it compares grid sizes)."""
    return model._abs_pos(grid)


# torch.fx records these as single calls that run as written: their branches read the input's shape.
torch.fx.wrap("_checked_input")
torch.fx.wrap("_abs_pos_embed")


def _take_indices(num_stages: int, indices: Optional[Union[int, Sequence[int]]]) -> List[int]:
    """timm's ``feature_take_indices``: None -> all, int n -> the last n, a sequence -> those (negatives wrap)."""
    if indices is None:
        indices = num_stages
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f"forward_intermediates: last-n indices={indices} is out of range (1 to {num_stages})")
        return list(range(num_stages - indices, num_stages))
    take = []
    for index in indices:
        idx = num_stages + index if index < 0 else index
        if not 0 <= idx < num_stages:
            raise ValueError(f"forward_intermediates: stage index {index} is out of range ({num_stages} stages)")
        take.append(idx)
    return take
