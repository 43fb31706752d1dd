"""Embedding heads: pool -> LayerNorm -> dropout -> projection -> L2 normalisation (CLIP / ImageBind heads)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingHead(nn.Module):
    """Pools trunk tokens into one unit-norm embedding per sample.

    ``pool``: ``cls`` (token 0), ``mean`` (mean over non-padding tokens, excluding prefix tokens) or ``eot``
    (the token at ``pool_index``, e.g. CLIP's end-of-text). For ``[B, T, N, D]`` (divided space-time) tokens
    every frame is pooled and normalised, then frames are averaged (LanguageBind video).
    """

    def __init__(
        self,
        width: int,
        embed_dim: int,
        *,
        pool: str = "cls",
        norm_eps: float = 1e-6,
        dropout: float = 0.0,
        proj_bias: bool = False,
        num_prefix_tokens: int = 1,
    ) -> None:
        super().__init__()
        self.pool, self.num_prefix_tokens = pool, num_prefix_tokens
        self.norm = nn.LayerNorm(width, eps=norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(width, embed_dim, bias=proj_bias)

    def pooled(
        self, x: torch.Tensor, pool_index: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.pool == "cls":
            return x[..., 0, :]
        if self.pool == "eot":
            if pool_index is None:
                return x[..., -1, :]
            return x[torch.arange(x.shape[0], device=x.device), pool_index]
        tokens = x[..., self.num_prefix_tokens :, :]
        if key_padding_mask is None:
            return tokens.mean(dim=-2)
        keep = (~key_padding_mask[:, self.num_prefix_tokens :]).to(tokens.dtype).unsqueeze(-1)
        return (tokens * keep).sum(-2) / keep.sum(-2).clamp_min(1.0)

    def forward(
        self,
        x: torch.Tensor,
        pool_index: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        pooled = self.norm(self.pooled(x, pool_index, key_padding_mask))
        if pooled.dim() == 3:  # [B, T, D]: per-frame, averaged over frames
            pooled = pooled.mean(dim=1)
        out = self.proj(self.dropout(pooled))
        return F.normalize(out, dim=-1) if normalize else out
