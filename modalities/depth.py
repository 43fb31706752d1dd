"""Depth modality: 16-bit PNG (millimetres) / ``.npy`` / ``.npz`` / arrays (metres) -> one normalised depth map.

Two published conversions, as presets of :class:`DepthPreprocess`:

* ``imagebind`` (default) — Omnivore's disparity (Girdhar et al., *Omnivore*, CVPR 2022; used by ImageBind,
  Girdhar et al., CVPR 2023): depth clipped to ``[min_depth_m, max_depth_m]`` = [0.01, 50] m,
  ``disparity = baseline_m * focal_px / depth_m``, clamped to ``[0.01, 75]`` and divided by 75 (Omnivore's
  ``convert_depth_to_disparity``, posted in facebookresearch/omnivore#12, then its ``DepthNorm``). Omnivore reads the
  focal length from each SUN RGB-D intrinsics file and uses a 7.5 cm baseline for Kinect sensors (9.5 cm for
  RealSense / Xtion); our defaults are 7.5 cm and the Kinect v1 / NYU-v2 focal length 518.857901 px (set
  ``baseline_m`` / ``focal_px`` per camera). SUN RGB-D PNGs store millimetres rotated left by 3 bits (its toolbox's
  ``read3dPoints.m``): read them with ``png_rotate_bits: 3``. One channel, short side resized to 224
  (bilinear), centre crop 224, no mean/std (mean 0, std 1). Stem: ImageBind's ``Conv2d(1, 384, 16, stride 16,
  bias=False)`` + LayerNorm (``stem: {patch_size: 16, in_chans: 1, norm: true}``).
* ``languagebind`` — LanguageBind's metric depth (Zhu et al., ICLR 2024, ``DepthNorm``): millimetres / 1000,
  clipped to ``[0.01, 10]`` m, divided by 10, repeated to 3 channels, short side 224 (bicubic), centre crop 224,
  CLIP mean/std (the depth encoder starts from a CLIP ViT).

In both, the conversion runs at full resolution before resizing (as in the references).

Units: integer sources (16-bit PNG, integer arrays) are in ``png_unit_m`` metres per unit (millimetres);
float sources (``.npy`` / ``.npz`` / float arrays / 32-bit float TIFF) are in ``array_unit_m`` metres per unit (metres).

Missing depth: a 0 (sensor dropout, the convention of Kinect / RealSense / SUN RGB-D PNGs) or a non-finite value
is *missing*; :meth:`DepthModality.load` marks it NaN. ``invalid`` then decides its value:
``"nearest"`` (both presets) reproduces the references, which clip 0 up to ``min_depth_m`` — missing pixels read as
the nearest possible depth (disparity 1.0 after scaling, metric 0.001) — and is what the published checkpoints saw;
``"farthest"`` maps them to ``max_depth_m`` (disparity 0.075 * 518.86 / 50 / 75 = 0.0104, metric 1.0), the
physically better reading for training new encoders; ``"inpaint"`` gives each the depth of the nearest valid pixel
(nearest-neighbour hole filling, as depth datasets' own fills do), which keeps an object's outline whole where the
sensor drops the pixels along depth edges — the far reading erodes it (a map with no valid pixel reads farthest).
Negative depth is an error, not missing data.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2

from bind.config import EncoderConfig
from bind.errors import MediaError
from bind.modality import Modality
from bind.nn.stems import PatchStem2d
from bind.registry import register_modality
from modalities._common import save_image, smooth_field, source_bytes_or_path
from modalities.image import _INTERP, CLIP_MEAN, CLIP_STD, DEFAULT_MAX_PIXELS, decode_image

OMNIVORE_BASELINE_M = 0.075  # Omnivore's SUN RGB-D depth -> disparity conversion
KINECT_FOCAL_PX = 518.857901  # NYU-v2 / Kinect v1 colour camera focal length (pixels)
NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


@dataclass
class DepthPreprocess:
    """Every constant of depth preprocessing (see the module docstring for the two presets)."""

    mode: str = "disparity"  # disparity (ImageBind / Omnivore) | metric (LanguageBind)
    size: int = 224  # short side after resizing
    crop_size: int = 224
    interpolation: str = "bilinear"
    channels: int = 1  # 1, or 3 = the map repeated (CLIP-initialised encoders)
    png_unit_m: float = 0.001  # metres per unit of integer sources (16-bit PNG in millimetres)
    png_rotate_bits: int = 0  # 16-bit PNG values rotated right by this many bits first (SUN RGB-D: 3)
    array_unit_m: float = 1.0  # metres per unit of float sources (.npy / .npz / arrays in metres)
    min_depth_m: float = 0.01  # depth is clipped to [min_depth_m, max_depth_m] in both modes
    max_depth_m: float = 50.0  # (metric: the result is divided by it; LanguageBind 10)
    baseline_m: float = OMNIVORE_BASELINE_M  # disparity: stereo baseline
    focal_px: float = KINECT_FOCAL_PX  # disparity: focal length in pixels
    disparity_min: float = 0.01  # disparity: clamp range; the result is divided by disparity_max
    disparity_max: float = 75.0
    invalid: str = "nearest"  # value of missing pixels: nearest (references) | farthest
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    npz_key: str | None = None  # array to read from a .npz (default: "depth", or its only array)
    train_crop_scale: tuple[float, float] = (0.9, 1.0)
    train_hflip: bool = False
    train_shift: int = 0  #: training batches move by up to this many pixels (:func:`bind.data.augment.random_shift`)
    #: largest map (width x height) ``load`` accepts: image files are checked from the header before decoding,
    #: .npy/.npz arrays once read; 0 = no limit. Default: PIL's ``MAX_IMAGE_PIXELS``.
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        self.train_crop_scale = tuple(self.train_crop_scale)
        for name, value, allowed in (
            ("mode", self.mode, ("disparity", "metric")),
            ("invalid", self.invalid, ("nearest", "farthest", "inpaint")),
            ("interpolation", self.interpolation, tuple(_INTERP)),
            ("channels", self.channels, (1, 3)),
        ):
            if value not in allowed:
                raise ValueError(f"depth: {name}={value!r}, expected one of {allowed}")
        check_mean_std("depth", self.mean, self.std, self.channels)
        if self.min_depth_m <= 0 or self.max_depth_m <= self.min_depth_m:
            raise ValueError(f"depth: need 0 < min_depth_m < max_depth_m, got {self.min_depth_m}, {self.max_depth_m}")


@dataclass
class MapStemConfig:
    """ViT patch stem over ``[C, crop, crop]`` maps (depth, thermal)."""

    patch_size: int = 16
    in_chans: int | None = None  #: default: the preprocessing's channel count
    norm: bool = False  #: LayerNorm after the patch projection (ImageBind)
    norm_eps: float = 1e-5
    bias: bool = False
    conv: tuple[int, ...] = ()  #: channels of 3x3 stride-2 conv layers before the patch projection (a conv stem)


def check_mean_std(modality: str, mean: tuple[float, ...], std: tuple[float, ...], channels: int) -> None:
    """``mean`` / ``std`` hold one value (shared) or one per channel; ``std`` is positive."""
    for name, v in (("mean", mean), ("std", std)):
        if len(v) not in (1, channels):
            raise ValueError(f"{modality}: {name} has {len(v)} values; expected 1 or {channels} (channels)")
    if min(std) <= 0:
        raise ValueError(f"{modality}: std must be positive, got {std}")


def inpaint_nearest(d: torch.Tensor) -> torch.Tensor:
    """Each missing (NaN) pixel of a 2-D map takes the value of the nearest valid one (nearest-neighbour inpainting,
    by the Euclidean distance transform); a map with no valid pixel is returned as it is."""
    from scipy.ndimage import distance_transform_edt

    missing = torch.isnan(d)
    if not missing.any() or missing.all():
        return d
    idx = distance_transform_edt(missing.numpy(), return_distances=False, return_indices=True)
    return d[tuple(torch.from_numpy(i) for i in idx)]


def depth_to_unit_range(depth_m: np.ndarray | torch.Tensor, cfg: DepthPreprocess) -> torch.Tensor:
    """Depth in metres (NaN = missing) -> the preset's ``[0, 1]`` map (disparity or metric), before resizing."""
    d = torch.as_tensor(depth_m, dtype=torch.float32)
    if cfg.invalid == "inpaint":
        d = inpaint_nearest(d)
    d = torch.nan_to_num(d, nan=cfg.min_depth_m if cfg.invalid == "nearest" else float("inf"))
    d = d.clamp(cfg.min_depth_m, cfg.max_depth_m)
    if cfg.mode == "metric":
        return d / cfg.max_depth_m
    disparity = cfg.baseline_m * cfg.focal_px / d
    return disparity.clamp(cfg.disparity_min, cfg.disparity_max) / cfg.disparity_max


def map_transform(unit_map: torch.Tensor, cfg: Any, train: bool) -> torch.Tensor:
    """A single-channel ``[H, W]`` float map -> ``[channels, crop, crop]``: resize short side + centre crop (eval) or
    random resized crop (train), repeat to ``channels``, ``(x - mean) / std``. Shared by depth and thermal: ``cfg`` is
    their ``Preprocess`` (``size``, ``crop_size``, ``interpolation``, ``channels``, ``mean``, ``std``,
    ``train_crop_scale``, ``train_hflip``)."""
    interp = _INTERP[cfg.interpolation]
    x = unit_map.reshape(1, *unit_map.shape[-2:]).float()
    if train:
        x = v2.RandomResizedCrop(cfg.crop_size, scale=cfg.train_crop_scale, interpolation=interp, antialias=True)(x)
        if cfg.train_hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
    else:
        x = v2.functional.center_crop(
            v2.functional.resize(x, [cfg.size], interpolation=interp, antialias=True), [cfg.crop_size, cfg.crop_size]
        )
    x = x.expand(cfg.channels, -1, -1)
    m = torch.tensor(cfg.mean, dtype=x.dtype).reshape(-1, 1, 1)
    s = torch.tensor(cfg.std, dtype=x.dtype).reshape(-1, 1, 1)
    return (x - m) / s


def read_array(source: Any, modality: str, npz_key: str | None = None, default_key: str | None = None) -> np.ndarray:
    """A ``.npy`` / ``.npz`` path or bytes -> ndarray (``npz_key``, else ``default_key`` if present, else the only
    array), with :class:`MediaError` for corrupt files or ambiguous archives."""
    fp = source_bytes_or_path(source, modality)
    try:
        loaded = np.load(fp, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise MediaError(source, modality, f"not a readable .npy/.npz array ({e})") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        keys = list(loaded.keys())
        key = npz_key or (default_key if default_key in keys else (keys[0] if len(keys) == 1 else None))
        if key not in keys:
            want = repr(npz_key) if npz_key else f"{default_key!r} or a single array"
            raise MediaError(source, modality, f".npz holds arrays {keys}; expected {want} (set npz_key)")
        try:
            return loaded[key]
        except (ValueError, OSError, zipfile.BadZipFile) as e:
            raise MediaError(source, modality, f"corrupt array {key!r} in .npz ({e})") from None


def sniff(source: Any, modality: str) -> bytes:
    """The first bytes of a path / bytes source (to tell .npy / .npz / images apart)."""
    fp = source_bytes_or_path(source, modality)
    if isinstance(fp, io.BytesIO):
        return fp.getvalue()[:8]
    with open(fp, "rb") as f:
        return f.read(8)


def as_2d(array: np.ndarray, source: Any, modality: str, what: str) -> np.ndarray:
    """``[H, W]``, ``[H, W, 1]`` or ``[1, H, W]`` -> ``[H, W]`` (MediaError otherwise)."""
    a = np.asarray(array)
    if a.ndim == 3 and 1 in (a.shape[0], a.shape[-1]):
        a = a.reshape(a.shape[1:] if a.shape[0] == 1 else a.shape[:2])
    if a.ndim != 2 or min(a.shape) < 1:
        raise MediaError(source, modality, f"expected a single-channel {what} [H, W], got shape {tuple(a.shape)}")
    return a


class MapModality(Modality):
    """Shared model side of single-map modalities (depth, thermal): channel count from the preprocessing, a patch
    stem over ``[C, H, W]`` maps, random example inputs for benchmarks."""

    StemConfig = MapStemConfig

    # --- model side ---------------------------------------------------------------------------------------------
    def channels(self, cfg: EncoderConfig) -> int:
        return stem_channels(self, cfg)

    def prepare_encoder_config(self, cfg: EncoderConfig, root=None) -> None:
        fill_in_chans(self, cfg)

    def expected_shape(self, cfg: EncoderConfig) -> str:
        return f"[{self.channels(cfg)}, H, W]"

    def stem(self, cfg: EncoderConfig) -> nn.Module:
        return map_stem(self, cfg)

    def example_input(self, cfg: EncoderConfig, batch: int) -> torch.Tensor:
        """A random batch ``[batch, C, crop, crop]`` of this encoder's input shape (benchmarks)."""
        size = self.preprocess_config(cfg.preprocess).crop_size
        return torch.randn(batch, self.channels(cfg), size, size)


@register_modality
class DepthModality(MapModality):
    """Depth maps; ``load`` returns float32 depth in metres ``[H, W]`` with NaN where depth is missing."""

    name = "depth"
    order = 40
    lora_rank = 2  # LanguageBind's LoRA rank (alpha 16, dropout 0)
    Preprocess = DepthPreprocess
    extensions = (".png", ".npy", ".npz", ".tif", ".tiff")
    webdataset_keys = ("depth.png", "depth.npy", "depth.npz", "depth.tif", "depth.tiff")
    zeroshot_templates = ("a depth map of a {}.", "a depth photo of a {}.", "a depth map of the {}.")
    presets = {
        "imagebind": {},
        "languagebind": {
            "mode": "metric",
            "max_depth_m": 10.0,
            "interpolation": "bicubic",
            "channels": 3,
            "mean": CLIP_MEAN,
            "std": CLIP_STD,
        },
    }
    default_preset = "imagebind"
    sample_ndim = 3
    sample_formats = ("png16", "npy")
    # ImageBind depth: Conv2d(1, 384, 16, stride 16, bias=False) + LayerNorm, no ln_pre. (ImageBind-Huge trunk
    # 384/12/8, kv bias tokens, fixed logit scale 5, drop path 0 — set by the model configs / converters.)
    encoder_defaults = {"pool": "cls", "stem": {"patch_size": 16, "norm": True}}

    def load(self, source: Any, cfg: DepthPreprocess) -> np.ndarray:
        if isinstance(source, torch.Tensor):
            source = source.detach().cpu().numpy()
        if isinstance(source, np.ndarray):
            raw = source
        else:
            head = sniff(source, self.name)
            if head.startswith(NPY_MAGIC) or head.startswith(ZIP_MAGIC):
                raw = read_array(source, self.name, cfg.npz_key, default_key="depth")
            else:
                img = decode_image(source, self.name, mode=None, max_pixels=cfg.max_pixels)
                if img.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                    raise MediaError(
                        source,
                        self.name,
                        f"image mode {img.mode} holds no depth; expected a "
                        "single-channel 16-bit PNG in millimetres or a float map",
                    )
                raw = np.asarray(img)
        if cfg.max_pixels and np.asarray(raw).size > cfg.max_pixels:
            raise MediaError(
                source,
                self.name,
                f"array of shape {tuple(np.shape(raw))} exceeds preprocess "
                f"max_pixels={cfg.max_pixels}; raise max_pixels to accept it",
            )
        return self._to_metres(raw, source, cfg)

    def _to_metres(self, raw: np.ndarray, source: Any, cfg: DepthPreprocess) -> np.ndarray:
        a = as_2d(raw, source, self.name, "depth map")
        if a.dtype.kind in "ui":
            unit = cfg.png_unit_m
            if cfg.png_rotate_bits:
                a = a.astype(np.uint16)
                a = (a >> cfg.png_rotate_bits) | (a << (16 - cfg.png_rotate_bits))
        elif a.dtype.kind == "f":
            unit = cfg.array_unit_m
        else:
            raise MediaError(source, self.name, f"expected numeric depth, got dtype {a.dtype}")
        d = a.astype(np.float32) * np.float32(unit)
        finite = np.isfinite(d)
        if (d[finite] < 0).any():
            raise MediaError(
                source,
                self.name,
                f"{int((d[finite] < 0).sum())} negative depth values (expected depth >= 0, 0 = missing)",
            )
        d[~finite | (d == 0)] = np.nan
        if np.isnan(d).all():
            raise MediaError(source, self.name, "no valid depth pixels (all zero / NaN)")
        return d

    def transform(self, raw: np.ndarray, cfg: DepthPreprocess, train: bool = False) -> torch.Tensor:
        return map_transform(depth_to_unit_range(raw, cfg), cfg, train)

    def preview(self, source: Any, cfg: DepthPreprocess) -> dict[str, Any]:
        """Depth colour-mapped (near = bright, missing = black)."""
        from bind.preview import colour_map

        return {"picture": colour_map(self.load(source, cfg), "viridis", invert=True)}

    def write_sample(self, fmt: str, directory: Path, index: int, rng: np.random.Generator) -> Path:
        """640x480 depth 0.5-8 m: 16-bit PNG millimetres with 5 % sensor dropouts (``png16``) or float32 metres."""
        field = smooth_field(rng, 480, 640)
        if fmt == "npy":
            np.save(directory / f"{self.name}_{index}.npy", (0.5 + 7.5 * field).astype(np.float32))
            return directory / f"{self.name}_{index}.npy"
        mm = (500 + 7500 * field).astype(np.uint16)
        mm[rng.random(mm.shape) < 0.05] = 0
        return save_image(directory / f"{self.name}_{index}.png", mm)


def stem_channels(plugin: Modality, cfg: EncoderConfig) -> int:
    """``stem.in_chans`` when given, else the preprocessing's channel count."""
    return int(plugin.stem_config(cfg).in_chans or plugin.preprocess_config(cfg.preprocess).channels)


def fill_in_chans(plugin: Modality, cfg: EncoderConfig) -> None:
    """Set ``stem.in_chans`` from preprocessing; refuse a stem whose channel count preprocessing cannot produce."""
    chans = plugin.preprocess_config(cfg.preprocess).channels
    given = cfg.stem.setdefault("in_chans", chans)
    if int(given) != chans:
        raise ValueError(
            f"{plugin.name}: stem.in_chans={given} but preprocessing produces {chans} channel(s) "
            f"(preprocess {cfg.preprocess}); set preprocess channels: {given} or stem in_chans: {chans}"
        )


def map_stem(plugin: Modality, cfg: EncoderConfig) -> PatchStem2d:
    """ViT patch stem over ``[C, crop, crop]`` maps (``stem: {patch_size, in_chans, norm, norm_eps}``)."""
    size = plugin.preprocess_config(cfg.preprocess).crop_size
    s = plugin.stem_config(cfg)
    return PatchStem2d(
        plugin.channels(cfg),
        cfg.width,
        s.patch_size,
        (size, size),
        bias=s.bias,
        norm=s.norm,
        norm_eps=s.norm_eps,
        conv=s.conv,
    )


__all__ = ["DepthModality", "DepthPreprocess", "depth_to_unit_range", "map_transform"]
