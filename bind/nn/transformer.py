"""Pre-norm transformer trunk (ViT / CLIP style) with drop path, patch dropout and gradient checkpointing.

* Blocks: Vaswani et al. 2017 in the pre-norm form of Dosovitskiy et al. 2021 (ViT).
* Drop path: Huang et al. 2016 (stochastic depth), as in timm.
* Patch dropout: Li et al. 2023 ("Scaling Language-Image Pre-training via Masking", FLIP), as in open_clip.
* Divided space-time attention: Bertasius et al. 2021 (TimeSformer), in the layout LanguageBind uses for video
  (per-layer temporal embedding, temporal attention over frames, then spatial attention within each frame).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from bind.nn.attention import Attention


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the activation of OpenAI CLIP and HF CLIP checkpoints."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_act(name: str) -> nn.Module:
    return QuickGELU() if name == "quick_gelu" else nn.GELU()


class DropPath(nn.Module):
    """Stochastic depth per sample."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str = "gelu") -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), make_act(act), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """``x + DropPath(Attn(LN(x)))`` then ``x + DropPath(MLP(LN(x)))``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        fused_qkv: bool = True,
        kv_bias_tokens: bool = False,
        act: str = "gelu",
        norm_eps: float = 1e-6,
        drop_path: float = 0.0,
        backend: str = "sdpa",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(
            dim, heads, qkv_bias=qkv_bias, fused_qkv=fused_qkv, kv_bias_tokens=kv_bias_tokens, backend=backend
        )
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act)

    def forward(
        self,
        x: torch.Tensor,
        causal: bool = False,
        key_padding_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.drop_path(
            self.attn(self.norm1(x), causal=causal, key_padding_mask=key_padding_mask, attn_mask=attn_mask)
        )
        return x + self.drop_path(self.mlp(self.norm2(x)))


class DividedSpaceTimeBlock(nn.Module):
    """Temporal attention across frames (per spatial token), then a spatial :class:`Block` within each frame.

    Input and output are ``[B, T, N, D]``. A learned temporal embedding ``[1, T_max, D]`` is added at every layer
    (LanguageBind's layout, ``modeling_video.py``): its first ``T`` rows for ``1 < T <= T_max`` (exactly what
    LanguageBind does), linearly interpolated only for ``T > T_max`` (where LanguageBind defines nothing), none for
    ``T == 1``; temporal attention runs for every ``T`` (a single frame attends to itself, as in LanguageBind).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        num_frames: int = 8,
        norm_eps: float = 1e-6,
        backend: str = "sdpa",
        **block_kwargs,
    ) -> None:
        super().__init__()
        self.temporal_embedding = nn.Parameter(torch.zeros(1, num_frames, dim))
        self.temporal_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.temporal_attn = Attention(
            dim,
            heads,
            qkv_bias=block_kwargs.get("qkv_bias", True),
            fused_qkv=block_kwargs.get("fused_qkv", True),
            backend=backend,
        )
        self.spatial = Block(dim, heads, norm_eps=norm_eps, backend=backend, **block_kwargs)

    def forward(
        self,
        x: torch.Tensor,
        causal: bool = False,
        key_padding_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, t, n, d = x.shape
        xt = x.permute(0, 2, 1, 3).reshape(b * n, t, d)
        if t > 1:  # LanguageBind adds no temporal embedding to a single frame, but still runs temporal attention
            xt = xt + temporal_positions(self.temporal_embedding, t).to(xt.dtype)
        xt = xt + self.temporal_attn(self.temporal_norm(xt))
        x = xt.reshape(b, n, t, d).permute(0, 2, 1, 3).reshape(b * t, n, d)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.repeat_interleave(t, dim=0)
        x = self.spatial(x, causal=causal, key_padding_mask=key_padding_mask, attn_mask=attn_mask)
        return x.reshape(b, t, n, d)


def temporal_positions(embedding: torch.Tensor, frames: int) -> torch.Tensor:
    """The ``[1, frames, D]`` positions of a ``[1, T_max, D]`` temporal embedding: the first ``frames`` rows when
    ``frames <= T_max`` (LanguageBind's ``temporal_embedding[:, :T]``), interpolated beyond."""
    if frames <= embedding.shape[1]:
        return embedding[:, :frames]
    return resize_temporal(embedding, frames)


def resize_temporal(embedding: torch.Tensor, frames: int) -> torch.Tensor:
    """Linearly interpolate a ``[1, T, D]`` temporal embedding to ``frames`` positions (identity when equal)."""
    if embedding.shape[1] == frames:
        return embedding
    return F.interpolate(embedding.transpose(1, 2), size=frames, mode="linear", align_corners=False).transpose(1, 2)


class PatchDropout(nn.Module):
    """Keep a random subset of patch tokens during training; prefix (CLS) tokens always kept (FLIP, open_clip).

    Works on ``[B, L, D]`` and on ``[B, T, N, D]`` (the same spatial tokens are dropped in every frame).
    """

    def __init__(self, p: float = 0.0, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"patch dropout must be in [0, 1), got {p}")
        self.p, self.num_prefix_tokens = p, num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        axis = x.dim() - 2
        prefix, patches = x.split([self.num_prefix_tokens, x.shape[axis] - self.num_prefix_tokens], dim=axis)
        n = patches.shape[axis]
        keep = max(1, int(n * (1 - self.p)))
        idx = torch.rand(x.shape[0], n, device=x.device).argsort(dim=-1)[:, :keep].sort(dim=-1).values
        shape = [x.shape[0]] + [1] * (x.dim() - 3) + [keep, 1]
        idx = idx.reshape(shape).expand(*patches.shape[:axis], keep, patches.shape[-1])
        return torch.cat([prefix, patches.gather(axis, idx)], dim=axis)


class Transformer(nn.Module):
    """A stack of :class:`Block` (``[B, L, D]``) or :class:`DividedSpaceTimeBlock` (``[B, T, N, D]``)."""

    def __init__(
        self,
        width: int,
        depth: int,
        heads: int,
        *,
        drop_path: float = 0.0,
        divided: bool = False,
        num_frames: int = 8,
        grad_checkpointing: bool = False,
        **block_kwargs: Any,
    ) -> None:
        """``drop_path``: the last block's rate (linear from 0); ``block_kwargs``: :class:`Block`'s other options
        (``mlp_ratio``, ``qkv_bias``, ``fused_qkv``, ``kv_bias_tokens``, ``act``, ``norm_eps``, ``backend``)."""
        super().__init__()
        self.grad_checkpointing = grad_checkpointing
        rates = torch.linspace(0, drop_path, depth, device="cpu").tolist() if depth > 1 else [drop_path] * depth
        if divided:
            block_kwargs["num_frames"] = num_frames
        kind = DividedSpaceTimeBlock if divided else Block
        self.blocks = nn.ModuleList(kind(width, heads, drop_path=r, **block_kwargs) for r in rates)

    def set_backend(self, backend: str) -> None:
        for m in self.modules():
            if isinstance(m, Attention):
                m.backend = backend

    def forward(
        self,
        x: torch.Tensor,
        causal: bool = False,
        key_padding_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, causal, key_padding_mask, attn_mask, use_reentrant=False)
            else:
                x = blk(x, causal=causal, key_padding_mask=key_padding_mask, attn_mask=attn_mask)
        return x
