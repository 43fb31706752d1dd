"""Reusable stems: modality plugins compose these into their ``stem(encoder_cfg)``.

All stems add their own positional embeddings and return tokens ``[B, L, width]`` (or ``[B, T, N, width]`` when
``divided`` is set on the tubelet stem). Position embeddings are resized to new grids (bicubic in space, linear in
time) so one model takes any image size, spectrogram length or frame count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import nn

from bind.nn.transformer import resize_temporal


@dataclass
class StemOutput:
    """Tokens plus side information a stem may hand to the trunk and head."""

    tokens: torch.Tensor
    key_padding_mask: torch.Tensor | None = None  # [B, L], True = padding
    pool_index: torch.Tensor | None = None  # [B], token to pool for ``eot`` heads
    time_steps: int | None = None  # joint [B, L, D] tokens laid out time-major over this many steps (None: no time)


def resize_pos_2d(pos: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a ``[1, H*W, D]`` position embedding from grid ``old`` to ``new`` (timm.layers)."""
    if tuple(old) == tuple(new):
        return pos
    return resample_abs_pos_embed(pos, list(new), list(old), num_prefix_tokens=0, antialias=False)


def _grid(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


class ChannelsLastConv2d(nn.Conv2d):
    """``nn.Conv2d`` run channels-last (NHWC), oneDNN's fast CPU layout: its weight goes channels-last for the call
    (the parameter itself, and so the state dict, keep the default layout), which also settles the layout of a 1-channel
    input, where the input alone cannot. Forward + backward of the world's image stem (``conv: [16, 32]``, batch 64,
    64 pixels): 23.5 -> 12.7 ms in fp32 on the AVX2 path, 12.5 -> 10.0 ms in bf16; depth's 1-channel ``[24, 48]`` 40
    -> 21-27 ms in fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # clone, not contiguous: a 1-channel weight counts as contiguous in both layouts and would stay NCHW
        return self._conv_forward(x, self.weight.clone(memory_format=torch.channels_last), self.bias)


def conv_stem(
    in_chans: int,
    channels: tuple[int, ...] | list[int],
    time_kernel: int = 0,
    time_stride: tuple[int, ...] | list[int] | None = None,
) -> nn.Sequential:
    """3x3 stride-2 convolutions, each followed by BatchNorm and GELU: the convolutional stem of Xiao et al.
    ("Early Convolutions Help Transformers See Better", NeurIPS 2021), which makes a ViT far more sample-efficient
    than a single large-kernel patch projection. Each layer halves the resolution.

    ``time_kernel > 0`` makes the layers 3-D (``[B, C, T, H, W]`` in and out): each kernel also spans that many
    frames (odd; same-padding in time), so motion is mixed in from the first layer, as in R3D/I3D. ``time_stride``:
    each 3-D layer's stride in time (default 1): 2 halves the frames that layer hands on (the C3D/R(2+1)D downsampling),
    and with it the cost of every layer after it."""
    if time_kernel and time_kernel % 2 == 0:
        raise ValueError(f"conv stem time kernel must be odd, got {time_kernel}")
    strides = [1] * len(channels) if time_stride is None else [int(v) for v in time_stride]
    if len(strides) != len(channels) or min(strides, default=1) < 1 or (not time_kernel and set(strides) - {1}):
        raise ValueError(
            f"conv stem time stride {list(strides)}: one stride >= 1 per conv layer {list(channels)}, and 3-D layers "
            "(a time kernel > 1) to stride in time"
        )
    layers: list[nn.Module] = []
    for c, st in zip(channels, strides):
        if time_kernel:
            conv = nn.Conv3d(in_chans, c, (time_kernel, 3, 3), (st, 2, 2), (time_kernel // 2, 1, 1), bias=False)
            layers += [conv, nn.BatchNorm3d(c), nn.GELU()]
        else:
            layers += [ChannelsLastConv2d(in_chans, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.GELU()]
        in_chans = c
    return nn.Sequential(*layers)


def _conv3d_input(x: torch.Tensor, frame_difference: bool) -> torch.Tensor:
    """``[B, C, T, H, W]`` clips (with each frame's difference from the previous one as ``C`` more channels, zero for
    the first) written once into a channels-last buffer (oneDNN's fast Conv3d layout: 2.2x in fp32 on CPU) of the
    dtype autocast would cast the convolution's input to: the same values as concatenating, converting the layout
    and casting, without three passes over the largest tensor of the video encoder (a third of a training step's
    memory traffic on the world demo's clips)."""
    dtype = x.dtype
    if x.dtype in (torch.float32, torch.float16, torch.bfloat16) and torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
    b, c, t, h, w = x.shape
    shape = (b, 2 * c if frame_difference else c, t, h, w)
    out = torch.empty(shape, dtype=dtype, device=x.device, memory_format=torch.channels_last_3d)
    dst = out.permute(0, 2, 3, 4, 1)  # [B, T, H, W, C'] in memory order
    # one channel at a time: the copy then runs along W (a whole channel block at once runs its inner loop over the
    # channels, a few elements with the source's largest stride: 2x slower on the demo's clips)
    for i in range(c):
        dst[..., i] = x[:, i]
    if frame_difference:
        dst[:, :1, ..., c:] = 0
        for i in range(c):
            dst[:, 1:, ..., c + i] = x[:, i, 1:] - x[:, i, :-1]
    return out


def _conv_reduced(patch: tuple[int, int], stride: tuple[int, int], conv: tuple[int, ...], what: str) -> int:
    """The downsampling of ``len(conv)`` stride-2 layers, checked to divide the patch size and stride."""
    factor = 2 ** len(conv)
    if any(v % factor for v in (*patch, *stride)):
        raise ValueError(
            f"{what}: patch size {patch} and stride {stride} must be multiples of {factor} "
            f"(the {len(conv)} stride-2 layers of stem conv {list(conv)})"
        )
    return factor


class PatchStem2d(nn.Module):
    """Conv2d patchify (kernel ``patch_size``, stride ``stride``) + learned 2-D positions (ViT, AST for audio).

    ``conv``: channels of 3x3 stride-2 layers (:func:`conv_stem`) run first; the patch projection then covers the
    rest of ``patch_size`` (``patch_size / 2**len(conv)``), so the token grid is the same as without them."""

    def __init__(
        self,
        in_chans: int,
        width: int,
        patch_size: int | tuple[int, int],
        input_size: tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        bias: bool = False,
        norm: bool = False,
        norm_eps: float = 1e-5,
        conv: tuple[int, ...] | list[int] = (),
    ):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=norm_eps) if norm else nn.Identity()  # ImageBind: LN after the patch conv
        self.patch_size = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        stride = stride or self.patch_size
        self.stride = (stride, stride) if isinstance(stride, int) else tuple(stride)
        conv = tuple(conv)
        f = _conv_reduced(self.patch_size, self.stride, conv, "PatchStem2d") if conv else 1
        self.conv = conv_stem(in_chans, conv) if conv else None
        kernel, step = tuple(k // f for k in self.patch_size), tuple(v // f for v in self.stride)
        self.proj = nn.Conv2d(conv[-1] if conv else in_chans, width, kernel, step, bias=bias)
        self.grid = tuple(_grid(s // f, k, st) for s, k, st in zip(input_size, kernel, step))
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid[0] * self.grid[1], width) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x if self.conv is None else self.conv(x))
        grid = tuple(x.shape[-2:])
        return self.norm(x.flatten(2).transpose(1, 2)) + resize_pos_2d(self.pos_embed, self.grid, grid).to(x.dtype)


class TubeletStem(nn.Module):
    """Conv3d tubelets ``(temporal_patch, patch, patch)`` over ``[B, C, T, H, W]`` + spatial and temporal positions.

    ``temporal_patch=2`` is ImageBind's 2-frame tubelet (a still image is the frame repeated twice); the temporal
    position embedding covers ``num_frames // temporal_patch`` steps and is interpolated for any other count.
    Videos whose frame count is not a multiple of ``temporal_patch`` repeat their last frame.
    With ``divided=True`` the output is ``[B, T', N, width]`` without temporal positions (the divided blocks own
    theirs); otherwise ``[B, T'*N, width]`` for joint space-time attention.

    ``frame_difference=True`` appends each frame's difference from the previous frame as extra input channels (the
    RGB difference of TSN, Wang et al. 2016): motion then reaches the first layer directly instead of having to be
    inferred from appearance; on the world's 64-pixel clips a classifier of the camera holder's activity reached 0.50
    accuracy after one epoch with it and 0.23 without (8 frames, 1200 clips).

    ``conv`` adds a convolutional stem before the tubelets (:func:`conv_stem`), per frame by default;
    ``conv_time_kernel=3`` makes its kernels span 3 frames, which mixes motion in before any attention (a classifier
    of the world's object motion, 8 frames, 2040 clips, 8 epochs: 0.58 with per-frame convs, 0.71 with 3-frame ones).
    ``conv_time_stride`` (one per conv layer) strides those 3-D layers in time; the tubelet projection then spans
    ``temporal_patch`` divided by their product, so the token grid is the same as without it.

    Token reduction for long videos (off by default): ``reduce_time=r`` averages the tokens of every ``r``
    consecutive tubelet steps at the same spatial position, ``reduce_space=s`` averages ``s x s`` neighbouring patches
    within a step (after positions are added, so a merged token keeps its group's mean position). Every layer then
    sees ``r * s**2`` times fewer tokens.
    """

    def __init__(
        self,
        in_chans: int,
        width: int,
        patch_size: int,
        image_size: int,
        num_frames: int,
        temporal_patch: int = 2,
        divided: bool = False,
        bias: bool = False,
        reduce_time: int = 1,
        reduce_space: int = 1,
        conv: tuple[int, ...] | list[int] = (),
        frame_difference: bool = False,
        conv_time_kernel: int = 1,
        conv_time_stride: tuple[int, ...] | list[int] | None = None,
    ) -> None:
        super().__init__()
        if reduce_time < 1 or reduce_space < 1:
            raise ValueError(f"token reduction factors must be >= 1, got time={reduce_time} space={reduce_space}")
        self.temporal_patch, self.divided = temporal_patch, divided
        self.reduce_time, self.reduce_space = reduce_time, reduce_space
        self.frame_difference = frame_difference
        in_chans = 2 * in_chans if frame_difference else in_chans
        conv = tuple(conv)
        f = _conv_reduced((patch_size,) * 2, (patch_size,) * 2, conv, "TubeletStem") if conv else 1
        # before the tubelets: per frame (2-D), or spanning conv_time_kernel frames (3-D)
        self.conv_3d = conv_time_kernel > 1
        self.conv = (
            conv_stem(in_chans, conv, conv_time_kernel if self.conv_3d else 0, conv_time_stride) if conv else None
        )
        ft = math.prod(conv_time_stride or ()) if conv else 1
        if temporal_patch % ft:
            raise ValueError(
                f"TubeletStem: temporal_patch {temporal_patch} must be a multiple of {ft}, the product of the conv "
                f"layers' time strides {list(conv_time_stride or ())}"
            )
        kernel = (temporal_patch // ft, patch_size // f, patch_size // f)
        self.proj = nn.Conv3d(conv[-1] if conv else in_chans, width, kernel, kernel, bias=bias)
        self.grid = (image_size // patch_size,) * 2
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid[0] * self.grid[1], width) * 0.02)
        steps = max(1, math.ceil(num_frames / temporal_patch))
        self.temporal_pos_embed = None if divided else nn.Parameter(torch.zeros(1, steps, width))

    def forward(self, x: torch.Tensor) -> StemOutput:
        if self.conv is not None and self.conv_3d:  # channels-last: oneDNN's fast fp32 Conv3d path (2.2x on CPU)
            x = self._pad_time(_conv3d_input(x, self.frame_difference))
            x = self.conv(x.contiguous(memory_format=torch.channels_last_3d))  # a no-op unless padded
        else:
            if self.frame_difference:  # each frame's change from the previous one (zero for the first), as channels
                x = torch.cat([x, torch.diff(x, dim=2, prepend=x[:, :, :1])], dim=1)
            x = self._pad_time(x)
            if self.conv is not None:
                b, c, tt = x.shape[:3]
                x = self.conv(x.transpose(1, 2).flatten(0, 1))  # frames through the 2-D stem
                x = x.unflatten(0, (b, tt)).transpose(1, 2)
        x = self.proj(x)  # [B, D, T', H', W']
        b, d, tp, h, w = x.shape
        x = x.permute(0, 2, 3, 4, 1).reshape(b, tp, h * w, d)
        x = x + resize_pos_2d(self.pos_embed, self.grid, (h, w)).to(x.dtype)[:, None]
        if not self.divided:
            x = x + resize_temporal(self.temporal_pos_embed, tp).to(x.dtype)[:, :, None]
        x = self.reduce(x, (h, w))
        return StemOutput(x if self.divided else x.flatten(1, 2), time_steps=x.shape[1])

    def _pad_time(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W]`` with its last frame repeated up to whole tubelets."""
        t = x.shape[2]
        if t % self.temporal_patch == 0:
            return x
        pad = self.temporal_patch - t % self.temporal_patch
        return torch.cat([x, x[:, :, -1:].expand(-1, -1, pad, -1, -1)], dim=2)

    def reduce(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Average-merge ``[B, T, H*W, D]`` tokens by ``reduce_time`` steps and ``reduce_space``² patches."""
        b, t, n, d = x.shape
        if self.reduce_time > 1 and t > 1:
            r = min(self.reduce_time, t)
            if t % r:  # repeat the last step so every group is full
                x = torch.cat([x, x[:, -1:].expand(-1, r - t % r, -1, -1)], dim=1)
            x = x.reshape(b, -1, r, n, d).mean(dim=2)
        if self.reduce_space > 1:
            tt = x.shape[1]
            x = x.reshape(b * tt, *grid, d).permute(0, 3, 1, 2)
            x = F.avg_pool2d(x, self.reduce_space, ceil_mode=True)
            x = x.flatten(2).transpose(1, 2).reshape(b, tt, -1, d)
        return x


class SequencePatchStem(nn.Module):
    """Non-overlapping patches of ``patch`` samples over ``[B, C, L]`` -> Linear(C*patch, width) + 1-D positions.

    ImageBind IMU: 6 channels x 2000 samples, patches of 8 samples -> 250 tokens of 48 features.
    """

    def __init__(
        self,
        in_chans: int,
        width: int,
        patch: int,
        length: int,
        bias: bool = False,
        norm: bool = False,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(in_chans * patch, width, bias=bias)
        self.norm = nn.LayerNorm(width, eps=norm_eps) if norm else nn.Identity()
        self.num_tokens = length // patch
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_tokens, width) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n = x.shape
        n = n // self.patch * self.patch
        x = x[..., :n].unfold(-1, self.patch, self.patch)  # [B, C, L', patch]
        x = x.permute(0, 2, 1, 3).reshape(b, n // self.patch, c * self.patch)
        pos = self.pos_embed
        if pos.shape[1] != x.shape[1]:
            pos = resize_temporal(pos, x.shape[1])
        return self.norm(self.proj(x)) + pos.to(x.dtype)


class TokenStem(nn.Module):
    """Token + learned position embeddings for integer ids ``[B, L]`` (CLIP text).

    ``eot_token_id``: the head pools the first occurrence of that id (CLIP's end-of-text); when absent from a row,
    its last non-padding token. ``pad_token_id`` marks padding for mean pooling and bidirectional towers.
    """

    def __init__(
        self,
        vocab_size: int,
        width: int,
        context_length: int,
        eot_token_id: int | None = None,
        pad_token_id: int | None = 0,
    ) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.randn(1, context_length, width) * 0.01)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.context_length, self.vocab_size = context_length, vocab_size
        self.eot_token_id, self.pad_token_id = eot_token_id, pad_token_id

    def forward(self, ids: torch.Tensor) -> StemOutput:
        if ids.shape[1] > self.context_length:
            raise ValueError(f"text: {ids.shape[1]} tokens exceed the context length {self.context_length}")
        if ids.numel() and (int(ids.max()) >= self.vocab_size or int(ids.min()) < 0):
            raise ValueError(
                f"text: token ids must lie in [0, {self.vocab_size}), got [{int(ids.min())}, {int(ids.max())}]"
            )
        x = self.token_embedding(ids) + self.pos_embed[:, : ids.shape[1]]
        pad = (ids == self.pad_token_id) if self.pad_token_id is not None else None
        if pad is not None and self.pad_token_id == self.eot_token_id:
            pad = None  # CLIP pads with EOT: no usable padding mask (causal + EOT pooling do not need one)
        length = (~pad).sum(-1) if pad is not None else torch.full_like(ids[:, 0], ids.shape[1])
        last = (length - 1).clamp_min(0)
        if self.eot_token_id is not None:
            is_eot = ids == self.eot_token_id
            pool_index = torch.where(is_eot.any(-1), is_eot.int().argmax(-1), last)
        else:
            pool_index = last
        return StemOutput(x, key_padding_mask=pad, pool_index=pool_index)

    def from_embeddings(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> StemOutput:
        """:meth:`forward` from token embeddings ``[B, L, width]`` (``token_embedding(ids)``, positions not yet added)
        and ``attention_mask [B, L]`` (1 = token): the last token of each row is pooled (where tokenisation puts the
        end-of-text token). Prompt learning (CoOp) feeds learned context vectors this way."""
        if inputs_embeds.shape[1] > self.context_length:
            raise ValueError(f"text: {inputs_embeds.shape[1]} tokens exceed the context length {self.context_length}")
        x = inputs_embeds + self.pos_embed[:, : inputs_embeds.shape[1]].to(inputs_embeds.dtype)
        keep = attention_mask.bool()
        pad = None if self.pad_token_id is None or self.pad_token_id == self.eot_token_id else ~keep
        return StemOutput(x, key_padding_mask=pad, pool_index=(keep.sum(-1) - 1).clamp_min(0))
