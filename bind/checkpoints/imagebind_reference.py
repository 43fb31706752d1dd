"""ImageBind's audio encoder restated in plain PyTorch with the published module names (``modality_*.audio.*``), so
its state dict has the published key layout: ``AudioPreprocessor`` + ``PatchEmbedGeneric``, ``SimpleTransformer`` of
``BlockWithMasking`` with ``nn.MultiheadAttention(add_bias_kv=True)``, sequence-first, LayerNorm + CLS + Linear head,
``Normalize`` + fixed ``LearnableLogitScaling(20)`` (facebookresearch/ImageBind). ``bindspace bench imagebind-parity``
times it against the converted bind encoder (:func:`bind.checkpoints.convert_imagebind_state_dict`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

WIDTH, DEPTH, HEADS, OUT, MEL, FRAMES = 768, 12, 12, 1024, 128, 204


class _Stem(nn.Module):  # PatchEmbedGeneric([Conv2d], norm_layer=LayerNorm)
    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, width, 16, 10, bias=False)
        self.norm_layer = nn.LayerNorm(width)


class _PosHelper(nn.Module):
    def __init__(self, tokens: int, width: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, width) * width**-0.5)


class _Pre(nn.Module):  # AudioPreprocessor
    def __init__(self, width: int, mel: int, frames: int) -> None:
        super().__init__()
        self.rgbt_stem = _Stem(width)
        n = ((mel - 16) // 10 + 1) * ((frames - 16) // 10 + 1)
        self.pos_embedding_helper = _PosHelper(n + 1, width)
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * width**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.rgbt_stem.norm_layer(self.rgbt_stem.proj(x).flatten(2).transpose(1, 2))
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        return t + self.pos_embedding_helper.pos_embed


class _Mlp(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):  # BlockWithMasking
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, bias=True, add_bias_kv=True)
        self.norm_1, self.norm_2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
        self.mlp = _Mlp(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=None)[0]
        return x + self.mlp(self.norm_2(x))


class _Trunk(nn.Module):  # SimpleTransformer (sequence-first, no pre-LN for audio)
    def __init__(self, width: int, depth: int, heads: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[_Block(width, heads) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.transpose(0, 1)).transpose(0, 1)


class _Scale(nn.Module):  # LearnableLogitScaling(20, learnable=False)
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("log_logit_scale", torch.tensor(math.log(20.0)))


class ImageBindAudioReference(nn.Module):
    """ImageBind's audio encoder, plain PyTorch, published key names (``modality_*.audio.*``)."""

    modality = "audio"  #: the bind modality whose converted encoder this reference matches

    def __init__(
        self,
        width: int = WIDTH,
        depth: int = DEPTH,
        heads: int = HEADS,
        out: int = OUT,
        mel: int = MEL,
        frames: int = FRAMES,
    ) -> None:
        super().__init__()
        self.modality_preprocessors = nn.ModuleDict({"audio": _Pre(width, mel, frames)})
        self.modality_trunks = nn.ModuleDict({"audio": _Trunk(width, depth, heads)})
        self.modality_heads = nn.ModuleDict(
            {"audio": nn.Sequential(nn.LayerNorm(width, eps=1e-6), nn.Identity(), nn.Linear(width, out, bias=False))}
        )
        self.modality_postprocessors = nn.ModuleDict({"audio": nn.Sequential(nn.Identity(), _Scale())})
        with torch.no_grad():
            for blk in self.modality_trunks["audio"].blocks:
                nn.init.normal_(blk.attn.bias_k, std=0.02)
                nn.init.normal_(blk.attn.bias_v, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.modality_trunks["audio"](self.modality_preprocessors["audio"](x))
        head = self.modality_heads["audio"]
        emb = F.normalize(head[2](head[0](tokens)[:, 0]), dim=-1)
        return emb * self.modality_postprocessors["audio"][1].log_logit_scale.exp().clamp(max=100)
