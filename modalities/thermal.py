"""Thermal (infrared) modality: 8- / 16-bit PNG or TIFF, float TIFF, arrays -> one normalised intensity map.

Decoding keeps the bit depth (PIL ``L``, ``I;16``, ``I``, ``F``); 3-channel files (LLVIP stores its infrared frames
as grey RGB JPEGs) are converted to luminance. The map is scaled to ``[0, 1]`` (``scaling``):

* ``"range"`` — divide by the type's full range: 8-bit / 255, 16-bit / 65535; floats are taken as already in
  ``[0, 1]`` (clipped);
* ``"minmax"`` — per image ``(x - min) / (max - min)`` (a constant image gives zeros);
* ``"auto"`` (default) — ``range`` for 8-bit images (already tone-mapped by the camera), ``minmax`` for 16-bit and
  32-bit integer images (raw radiometric counts, e.g. FLIR ADAS 16-bit TIFFs, fill a few hundred counts of the
  65535 range, so dividing by 65535 would give a near-constant image), and for float maps outside ``[0, 1]``
  (e.g. temperatures).

Then, as for images (and as in the references), short side resized to 224 (bicubic), centre crop 224, and:

* ``imagebind`` (default) — one channel (ImageBind, Girdhar et al. CVPR 2023: thermal encoder with
  ``Conv2d(1, 768, 16, stride 16, bias=False)`` + LayerNorm). ImageBind published no thermal normalisation
  constants: the ``[0, 1]`` map goes in as is (mean 0, std 1).
* ``languagebind`` — the map repeated to 3 channels with CLIP mean/std (LanguageBind, Zhu et al. ICLR 2024, whose
  thermal encoder starts from a CLIP ViT and loads LLVIP frames as RGB images).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bind.errors import MediaError
from bind.registry import register_modality
from modalities._common import save_image, smooth_field
from modalities.depth import MapModality, as_2d, check_mean_std, map_transform
from modalities.image import _INTERP, CLIP_MEAN, CLIP_STD, DEFAULT_MAX_PIXELS, decode_image


@dataclass
class ThermalPreprocess:
    """Every constant of thermal preprocessing (see the module docstring)."""

    scaling: str = "auto"  # auto | range | minmax: how raw intensities map to [0, 1]
    size: int = 224
    crop_size: int = 224
    interpolation: str = "bicubic"
    channels: int = 1  # 1, or 3 = the map repeated (CLIP-initialised encoders)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    train_crop_scale: tuple[float, float] = (0.9, 1.0)
    train_hflip: bool = False
    train_shift: int = 0  #: training batches move by up to this many pixels (:func:`bind.data.augment.random_shift`)
    #: largest image (width x height) ``load`` accepts: files are checked from the header before decoding, arrays
    #: as given; 0 = no limit. Default: PIL's ``MAX_IMAGE_PIXELS``.
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        self.train_crop_scale = tuple(self.train_crop_scale)
        for name, value, allowed in (
            ("scaling", self.scaling, ("auto", "range", "minmax")),
            ("interpolation", self.interpolation, tuple(_INTERP)),
            ("channels", self.channels, (1, 3)),
        ):
            if value not in allowed:
                raise ValueError(f"thermal: {name}={value!r}, expected one of {allowed}")
        check_mean_std("thermal", self.mean, self.std, self.channels)


def scale_to_unit(a: np.ndarray, scaling: str) -> np.ndarray:
    """Raw intensities -> float32 ``[0, 1]`` by the ``scaling`` rule of the module docstring."""
    x = a.astype(np.float32)
    if scaling == "auto":
        if a.dtype == np.uint8:
            scaling = "range"
        elif a.dtype.kind == "f":
            scaling = "range" if (x.min() >= 0 and x.max() <= 1) else "minmax"
        else:
            scaling = "minmax"
    if scaling == "minmax":
        lo, hi = float(x.min()), float(x.max())
        return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    if a.dtype.kind in "ui":
        x /= 255.0 if a.dtype.itemsize == 1 else 65535.0
    return np.clip(x, 0.0, 1.0)


@register_modality
class ThermalModality(MapModality):
    """Thermal images; ``load`` returns float32 intensities in ``[0, 1]``, ``[H, W]``."""

    name = "thermal"
    order = 50
    lora_rank = 2  # LanguageBind's LoRA rank (alpha 16, dropout 0)
    Preprocess = ThermalPreprocess
    extensions = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")
    webdataset_keys = ("thermal.png", "thermal.jpg", "thermal.npy")
    zeroshot_templates = ("a thermal image of a {}.", "a thermal photo of a {}.", "an infrared photo of a {}.")
    presets = {
        "imagebind": {},
        "languagebind": {"channels": 3, "mean": CLIP_MEAN, "std": CLIP_STD},
    }
    default_preset = "imagebind"
    sample_ndim = 3
    sample_formats = ("png8", "tiff16")
    # ImageBind thermal: Conv2d(1, 768, 16, stride 16, bias=False) + LayerNorm, no ln_pre. (ImageBind-Huge trunk
    # 768/12/12, kv bias tokens, fixed logit scale 10 — set by the model configs / converters.)
    encoder_defaults = {"pool": "cls", "stem": {"patch_size": 16, "norm": True}}

    def load(self, source: Any, cfg: ThermalPreprocess) -> np.ndarray:
        if isinstance(source, torch.Tensor):
            source = source.detach().cpu().numpy()
        if isinstance(source, np.ndarray):
            a = source
            if a.ndim == 3 and a.shape[-1] in (3, 4) and a.dtype == np.uint8:  # grey RGB(A) -> ITU-R 601 luma (PIL)
                a = np.rint(a[..., :3].astype(np.float32) @ np.float32([0.299, 0.587, 0.114])).astype(np.uint8)
        else:
            img = decode_image(source, self.name, mode=None, max_pixels=cfg.max_pixels)
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                a = np.asarray(img).astype(np.uint16)
            elif img.mode == "I":
                a = np.asarray(img)
                a = a.astype(np.uint16) if a.size and a.min() >= 0 and a.max() <= 65535 else a
            elif img.mode in ("L", "F"):
                a = np.asarray(img)
            else:  # RGB(A) / P / LA / 1: grey pseudo-colour frames -> luminance
                a = np.asarray(img.convert("L"))
        a = as_2d(a, source, self.name, "thermal image")
        if cfg.max_pixels and a.size > cfg.max_pixels:
            raise MediaError(
                source,
                self.name,
                f"image of shape {tuple(a.shape)} exceeds preprocess "
                f"max_pixels={cfg.max_pixels}; raise max_pixels to accept it",
            )
        if a.dtype.kind not in "uif":
            raise MediaError(source, self.name, f"expected numeric intensities, got dtype {a.dtype}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise MediaError(source, self.name, f"{int((~np.isfinite(a)).sum())} NaN/inf pixels")
        return scale_to_unit(a, cfg.scaling)

    def transform(self, raw: np.ndarray, cfg: ThermalPreprocess, train: bool = False) -> torch.Tensor:
        return map_transform(torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32)), cfg, train)

    def preview(self, source: Any, cfg: ThermalPreprocess) -> dict[str, Any]:
        """Intensities colour-mapped (hot = bright)."""
        from bind.preview import colour_map

        return {"picture": colour_map(self.load(source, cfg), "inferno")}

    def write_sample(self, fmt: str, directory: Path, index: int, rng: np.random.Generator) -> Path:
        """640x512 (a common sensor size) smooth intensities: 8-bit PNG (``png8``) or 16-bit raw counts as TIFF."""
        field = smooth_field(rng, 512, 640)
        if fmt == "png8":
            return save_image(directory / f"{self.name}_{index}.png", (255 * field).astype(np.uint8))
        return save_image(directory / f"{self.name}_{index}.tif", (7000 + 900 * field).astype(np.uint16))
