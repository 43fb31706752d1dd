"""Batched training augmentations on collated tensors, which :meth:`bind.Modality.augment` applies to every training
batch (so they also reach samples a :class:`~bind.data.dataset.SampleCache` decoded once in eval mode)."""

from __future__ import annotations

import math

import torch


def random_shift(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Each item of ``[B, ..., H, W]`` translated by its own random whole-pixel offset in ``[-pad, pad]`` on both
    axes, the border repeated: DrQ's augmentation (Kostrikov et al. 2021; replicate-pad by ``pad``, crop back at a
    random position), written as copies into the output without the padded tensor. Every channel and frame of an
    item moves alike, so the motion inside a clip is kept. Draws from torch's global RNG (the trainer seeds it per
    step)."""
    if pad < 0:
        raise ValueError(f"random_shift: pad must be >= 0 pixels, got {pad}")
    if pad == 0:
        return x
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b), device=x.device).tolist()
    src = x.reshape(b, math.prod(x.shape[1:-2]), h, w)
    out = torch.empty_like(src, memory_format=torch.contiguous_format)
    for k in range(b):  # the rows and columns inside the image, then the border repeated: copies only, no padded tensor
        oy, ox = max(1 - h, min(h - 1, dy[k] - pad)), max(1 - w, min(w - 1, dx[k] - pad))  # beyond: the edge
        r0, r1, c0, c1 = max(0, -oy), min(h, h - oy), max(0, -ox), min(w, w - ox)
        o = out[k]
        o[:, r0:r1, c0:c1].copy_(src[k, :, r0 + oy : r1 + oy, c0 + ox : c1 + ox])
        if c0:
            o[:, r0:r1, :c0].copy_(o[:, r0:r1, c0 : c0 + 1].expand(-1, -1, c0))
        if c1 < w:
            o[:, r0:r1, c1:].copy_(o[:, r0:r1, c1 - 1 : c1].expand(-1, -1, w - c1))
        if r0:
            o[:, :r0].copy_(o[:, r0 : r0 + 1].expand(-1, r0, -1))
        if r1 < h:
            o[:, r1:].copy_(o[:, r1 - 1 : r1].expand(-1, h - r1, -1))
    return out.reshape(x.shape)


def resize_spatial(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``[B, ..., H, W]`` resized to ``round(scale * H) x round(scale * W)`` (bilinear, antialiased when shrinking),
    every channel and frame alike: the low-resolution phase of progressive resizing."""
    if not 0 < scale <= 1:
        raise ValueError(f"resize_spatial: scale must lie in (0, 1], got {scale}")
    h, w = x.shape[-2:]
    size = (max(1, round(scale * h)), max(1, round(scale * w)))
    if size == (h, w):
        return x
    flat = x.reshape(x.shape[0] if x.dim() >= 4 else 1, -1, h, w)  # frames and channels alike: one channel axis
    out = torch.nn.functional.interpolate(flat, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.reshape(*x.shape[:-2], *size)
