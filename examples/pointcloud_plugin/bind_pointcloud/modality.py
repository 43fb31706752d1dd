"""The ``pointcloud`` modality: a third-party bind plugin (entry point ``bind.modalities``), nothing under ``bind/``.

Data path (bind's contract): ``load`` -> :class:`~bind_pointcloud.io.PointCloud` -> ``transform`` -> ``[C, N]``
float tensor (xyz, then rgb, then normals when enabled) -> ``collate`` -> ``[B, C, N]`` -> :class:`PointGroupStem`
-> ``[B, G, width]`` tokens -> bind's standard trunk and head.

Preprocessing (:class:`PointCloudPreprocess`): centre (subtract the centroid), scale into the unit sphere, then a
fixed point count — farthest point sampling in eval (deterministic: the same file always gives the same tensor),
a random subset in training, followed by a random rotation about the up axis, random scaling and clipped Gaussian
jitter (the augmentations of PointNet++ / Point-BERT training). Colour channels (``colour: true``) are the
source's rgb in ``[0, 1]`` minus 0.5; a source without colour either fails (``missing_colour: error``) or reads
as mid grey (``grey``).

Stem (:class:`PointGroupStem`, Point-BERT, Yu et al. 2022; Point-MAE, Pang et al. 2022 — the 3-D encoders of ULIP
and Point-Bind): ``num_groups`` centres by farthest point sampling, the ``group_size`` nearest neighbours of each,
their coordinates relative to the centre (plus their other channels) through a shared mini-PointNet (per-point MLP,
max-pool, concatenation of the pooled feature to every point, a second MLP, max-pool) -> one token per group; the
positional embedding is an MLP of the centre's coordinates. LayerNorm replaces the reference's BatchNorm, so a
sample's embedding never depends on the other samples of its batch.
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from bind.config import EncoderConfig
from bind.errors import MediaError
from bind.modality import Modality
from bind.registry import register_modality
from bind_pointcloud.io import LAYOUTS, PointCloud, read_point_cloud
from bind_pointcloud.ops import farthest_point_sample, gather_points, knn

UP_AXES = {"x": 0, "y": 1, "z": 2}


@dataclass
class PointCloudPreprocess:
    """Every constant of point-cloud reading and preprocessing (see the module docstring)."""

    num_points: int = 1024  # points per sample after sampling (fewer: repeated; eval FPS, train random subset)
    colour: bool = False  # append rgb channels (3 more input channels)
    normals: bool = False  # append normal channels (3 more input channels; the source must have normals)
    missing_colour: str = "error"  # error | grey: what colour=True does with a cloud without colour
    centre: bool = True  # subtract the centroid
    unit_sphere: bool = True  # divide by the largest distance from the centre (after centring)
    scale: float = 1.0  # coordinates are divided by this after the above (metres per unit for raw sensor clouds)
    up_axis: str = "z"  # axis of the training rotation
    train_rotate_deg: float = 180.0  # training: rotation about up_axis uniform in [-this, this] degrees
    train_scale: tuple[float, float] = (0.9, 1.1)  # training: isotropic scale range
    train_jitter: float = 0.01  # training: Gaussian jitter sigma (in normalised units)
    train_jitter_clip: float = 0.05
    layout: str = "auto"  # column layout of arrays / text files: auto | xyz | xyzrgb | xyznormal | xyzrgbnormal
    npz_key: str | None = None  # array of a .npz (default 'points', 'xyz', 'pointcloud' or its only array)
    max_points: int = 2_000_000  # larger clouds are refused before they are read
    ply_ignore_elements: tuple[str, ...] = ("face", "edge")  # PLY elements skipped; others are refused

    def __post_init__(self) -> None:
        self.train_scale = tuple(self.train_scale)
        self.ply_ignore_elements = tuple(self.ply_ignore_elements)
        for name, value, allowed in (
            ("missing_colour", self.missing_colour, ("error", "grey")),
            ("up_axis", self.up_axis, tuple(UP_AXES)),
            ("layout", self.layout, ("auto", *LAYOUTS)),
        ):
            if value not in allowed:
                raise ValueError(f"pointcloud: {name}={value!r}, expected one of {allowed}")
        if self.num_points < 1 or self.max_points < 1 or self.scale <= 0:
            raise ValueError(
                f"pointcloud: need num_points >= 1, max_points >= 1, scale > 0 (got {self.num_points}, "
                f"{self.max_points}, {self.scale})"
            )

    @property
    def channels(self) -> int:
        return 3 + 3 * self.colour + 3 * self.normals


@dataclass
class PointCloudStemConfig:
    """Settings of :class:`PointGroupStem` (the encoder config's ``stem: {...}``)."""

    num_groups: int = 64  # G: tokens per cloud (Point-BERT / Point-MAE: 64 of 1024 points)
    group_size: int = 32  # k nearest neighbours per centre
    hidden: int = 128  # width of the first per-point MLP (the second is 2 x hidden)
    in_chans: int | None = None  # input channels (default: from the preprocessing)
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.num_groups < 1 or self.group_size < 1 or self.hidden < 1:
            raise ValueError(f"pointcloud: stem needs num_groups, group_size, hidden >= 1, got {self}")


def stem_settings(cfg: EncoderConfig) -> PointCloudStemConfig:
    """The typed stem settings of an encoder config (unknown keys: one-line error naming the known ones)."""
    if isinstance(cfg.stem, PointCloudStemConfig):
        return cfg.stem
    known = {f.name for f in dataclasses.fields(PointCloudStemConfig)}
    unknown = set(cfg.stem) - known
    if unknown:
        raise ValueError(f"pointcloud: unknown stem settings {sorted(unknown)}; known: {sorted(known)}")
    return PointCloudStemConfig(**cfg.stem)


class PointGroupStem(nn.Module):
    """``[B, C, N]`` (xyz first) -> ``[B, G, width]``: FPS centres, kNN groups, a shared mini-PointNet per group and
    an MLP positional embedding of the centres (see the module docstring)."""

    def __init__(
        self, in_chans: int, width: int, num_groups: int, group_size: int, hidden: int = 128, norm_eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.in_chans, self.num_groups, self.group_size = in_chans, num_groups, group_size
        h = hidden
        self.first = nn.Sequential(
            nn.Linear(in_chans, h), nn.LayerNorm(h, eps=norm_eps), nn.GELU(), nn.Linear(h, 2 * h)
        )
        self.second = nn.Sequential(
            nn.Linear(4 * h, 4 * h), nn.LayerNorm(4 * h, eps=norm_eps), nn.GELU(), nn.Linear(4 * h, width)
        )
        self.pos_embed = nn.Sequential(nn.Linear(3, h), nn.GELU(), nn.Linear(h, width))

    def group(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Centres ``[B, G, 3]`` and grouped points ``[B, G, k, C]`` (xyz relative to their centre)."""
        pts = x.transpose(1, 2)  # [B, N, C]
        xyz = pts[..., :3]
        centres = gather_points(xyz, farthest_point_sample(xyz, self.num_groups))
        groups = gather_points(pts, knn(centres, xyz, self.group_size))  # [B, G, k, C]
        rel = groups[..., :3] - centres[:, :, None]
        return centres, torch.cat([rel, groups[..., 3:]], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centres, groups = self.group(x)
        f = self.first(groups)  # [B, G, k, 2h]
        f = torch.cat([f, f.amax(dim=2, keepdim=True).expand_as(f)], dim=-1)
        tokens = self.second(f).amax(dim=2)  # [B, G, width]
        return tokens + self.pos_embed(centres.to(tokens.dtype))


def rotation_about(axis: int, angle: float) -> torch.Tensor:
    """3x3 rotation by ``angle`` radians about coordinate axis ``axis``."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    r = torch.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


@register_modality
class PointCloudModality(Modality):
    """Point clouds; ``load`` returns a :class:`~bind_pointcloud.io.PointCloud`, ``transform`` a ``[C, N]`` tensor."""

    name = "pointcloud"
    Preprocess = PointCloudPreprocess
    StemConfig: ClassVar[type] = PointCloudStemConfig
    presets = {"pointbert": {}, "pointbert-colour": {"colour": True, "missing_colour": "grey"}}
    default_preset = "pointbert"
    sample_ndim = 2
    encoder_defaults = {"pool": "cls", "stem": {"num_groups": 64, "group_size": 32}}
    extensions: ClassVar[tuple[str, ...]] = (".ply", ".npy", ".npz", ".xyz", ".txt")
    webdataset_keys: ClassVar[tuple[str, ...]] = ("pointcloud.npy", "ply", "xyz")
    zeroshot_templates: ClassVar[tuple[str, ...]] = (
        "a point cloud of a {}.",
        "a 3D scan of a {}.",
        "a 3D model of a {}.",
        "{}",
    )
    tower: ClassVar[str | None] = None
    order: ClassVar[int] = 100

    # --- decoding -----------------------------------------------------------------------------------------------
    def load(self, source: Any, cfg: PointCloudPreprocess) -> PointCloud:
        cloud = read_point_cloud(
            source,
            layout=cfg.layout,
            npz_key=cfg.npz_key,
            max_points=cfg.max_points,
            ignore_elements=cfg.ply_ignore_elements,
        )
        if cfg.colour and cloud.rgb is None and cfg.missing_colour == "error":
            raise MediaError(
                source,
                self.name,
                "colour channels are enabled but the cloud has no colour (give rgb "
                "columns / PLY red green blue, or set missing_colour: grey)",
            )
        if cfg.normals and cloud.normals is None:
            raise MediaError(
                source,
                self.name,
                "normal channels are enabled but the cloud has no normals (give nx ny nz, or set normals: false)",
            )
        return cloud

    def transform(self, raw: PointCloud, cfg: PointCloudPreprocess, train: bool = False) -> torch.Tensor:
        xyz = torch.from_numpy(np.asarray(raw.xyz, dtype=np.float32))
        if cfg.centre:
            xyz = xyz - xyz.mean(0)
        if cfg.unit_sphere:
            xyz = xyz / xyz.norm(dim=1).max().clamp_min(1e-8)
        xyz = xyz / cfg.scale
        feats = [xyz]
        if cfg.colour:
            rgb = raw.rgb if raw.rgb is not None else np.full_like(raw.xyz, 0.5)
            feats.append(torch.from_numpy(np.asarray(rgb, dtype=np.float32)) - 0.5)
        if cfg.normals:
            feats.append(torch.from_numpy(np.asarray(raw.normals, dtype=np.float32)))
        pts = torch.cat(feats, dim=1)  # [N, C]
        n = pts.shape[0]
        if train:
            idx = torch.randperm(n)[: cfg.num_points] if n >= cfg.num_points else torch.randint(n, (cfg.num_points,))
            pts = pts[idx].clone()
            angle = math.radians(cfg.train_rotate_deg) * (2 * float(torch.rand(())) - 1)
            r = rotation_about(UP_AXES[cfg.up_axis], angle)
            s = cfg.train_scale[0] + (cfg.train_scale[1] - cfg.train_scale[0]) * float(torch.rand(()))
            pts[:, :3] = pts[:, :3] @ r.T * s
            if cfg.normals:
                pts[:, -3:] = pts[:, -3:] @ r.T
            jitter = (torch.randn(pts.shape[0], 3) * cfg.train_jitter).clamp(
                -cfg.train_jitter_clip, cfg.train_jitter_clip
            )
            pts[:, :3] += jitter
        else:
            pts = pts[farthest_point_sample(pts[None, :, :3], cfg.num_points)[0]]
        return pts.T.contiguous()

    # --- model side ---------------------------------------------------------------------------------------------
    def channels(self, cfg: EncoderConfig) -> int:
        given = stem_settings(cfg).in_chans
        return int(given) if given else self.preprocess_config(cfg.preprocess).channels

    def prepare_encoder_config(self, cfg: EncoderConfig, root=None) -> None:
        chans = self.preprocess_config(cfg.preprocess).channels
        given = cfg.stem.setdefault("in_chans", chans)
        if int(given) != chans:
            raise ValueError(
                f"pointcloud: stem.in_chans={given} but preprocessing produces {chans} channels "
                f"(preprocess {cfg.preprocess}); set colour / normals or stem in_chans: {chans}"
            )

    def expected_shape(self, cfg: EncoderConfig) -> str:
        return f"[{self.channels(cfg)}, N]"

    def stem(self, cfg: EncoderConfig) -> nn.Module:
        s = stem_settings(cfg)
        return PointGroupStem(self.channels(cfg), cfg.width, s.num_groups, s.group_size, s.hidden, s.norm_eps)

    def example_input(self, cfg: EncoderConfig, batch: int) -> torch.Tensor:
        """A random batch ``[batch, C, num_points]`` (benchmarks, contract tests)."""
        return torch.randn(batch, self.channels(cfg), self.preprocess_config(cfg.preprocess).num_points)

    # --- presentation -------------------------------------------------------------------------------------------
    def preview(self, source: Any, cfg: PointCloudPreprocess) -> dict[str, Any]:
        """A small PNG scatter render (front view, points coloured by their colour or by depth) and a point count."""
        cloud = self.load(source, dataclasses.replace(cfg, colour=False, normals=False))
        return {"picture": render_png(cloud), "picture_mime": "image/png", "text": f"{len(cloud)} points"}


def render_png(cloud: PointCloud, size: int = 128, max_points: int = 20_000) -> bytes:
    """A ``size`` x ``size`` PNG of ``cloud`` seen along +y (x right, z up), nearer points drawn last."""
    from PIL import Image

    step = max(1, len(cloud) // max_points)
    xyz = cloud.xyz[::step].astype(np.float64)
    lo, hi = xyz.min(0), xyz.max(0)
    span = float(max(hi[0] - lo[0], hi[2] - lo[2], 1e-9))
    u = ((xyz[:, 0] - lo[0]) / span * (size - 1)).astype(int)
    v = ((hi[2] - xyz[:, 2]) / span * (size - 1)).astype(int)
    if cloud.rgb is not None:
        colour = cloud.rgb[::step]
    else:
        near = 1 - (xyz[:, 1] - lo[1]) / max(hi[1] - lo[1], 1e-9)
        colour = np.stack([near, 0.3 + 0 * near, 1 - near], axis=1)
    img = np.full((size, size, 3), 255, dtype=np.uint8)
    order = np.argsort(-xyz[:, 1])  # far first
    rgb = np.clip(np.asarray(colour)[order] * 255, 0, 255).astype(np.uint8)
    for dv, du in ((0, 0), (0, 1), (1, 0), (1, 1)):  # 2x2 splats
        img[np.minimum(v[order] + dv, size - 1), np.minimum(u[order] + du, size - 1)] = rgb
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()
