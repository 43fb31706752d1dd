"""Image modality: PIL decoding (jpg / png / webp / ...), CLIP preprocessing, ViT patch stem.

Preprocessing (CLIP, Radford et al. 2021; identical in ImageBind and LanguageBind): short side to 224 with bicubic
interpolation, centre crop 224, CLIP mean/std. Training adds a random resized crop (scale 0.9-1) and, if enabled,
horizontal flips; eval is deterministic.
With ``stem.temporal_patch: 2`` the image is a 2-frame clip of itself through a Conv3d tubelet (ImageBind vision).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torchvision.transforms import v2

from bind.config import EncoderConfig
from bind.errors import MediaError
from bind.modality import Modality
from bind.nn.stems import PatchStem2d, StemOutput, TubeletStem
from bind.registry import register_modality
from modalities._common import save_image, smooth_field, source_bytes_or_path

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's Image.MAX_IMAGE_PIXELS: above it PIL warns of a decompression bomb


@dataclass
class ImagePreprocess:
    size: int = 224
    crop_size: int = 224
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    train_crop_scale: tuple[float, float] = (0.9, 1.0)
    train_hflip: bool = False
    train_shift: int = 0  #: training batches move by up to this many pixels (:func:`bind.data.augment.random_shift`)
    #: largest image (width x height) ``load`` decodes, checked from the header before decoding (a decompression
    #: bomb is a tiny file claiming gigapixels); 0 = no limit of ours (PIL's own bomb check, at 2 x its
    #: ``Image.MAX_IMAGE_PIXELS``, still applies). The default is PIL's ``MAX_IMAGE_PIXELS`` (~9459 x 9459).
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class ImageStemConfig:
    patch_size: int = 16
    in_chans: int = 3
    temporal_patch: int = 0  #: > 0: the image as a clip of this many frames through a Conv3d tubelet (ImageBind)
    conv: tuple[int, ...] = ()  #: channels of 3x3 stride-2 conv layers before the patch projection (a conv stem)


_INTERP = {
    "bicubic": v2.InterpolationMode.BICUBIC,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "nearest": v2.InterpolationMode.NEAREST,
}


def decode_image(source: Any, modality: str, mode: str = "RGB", max_pixels: int = 0) -> Image.Image:
    """Decode a path / bytes / PIL image / HxW(xC) array with PIL, converting to ``mode`` (None keeps it).
    Files whose header claims more than ``max_pixels`` pixels (0: no limit) are refused before decoding."""
    if isinstance(source, Image.Image):
        img = source
    elif isinstance(source, np.ndarray):
        try:
            img = Image.fromarray(source)
        except (TypeError, ValueError) as e:
            raise MediaError(source, modality, f"array cannot be an image: {e}") from None
    else:
        fp = source_bytes_or_path(source, modality)
        try:
            img = Image.open(fp)  # reads the header only
        except Image.DecompressionBombError as e:  # PIL's own check, at 2 x Image.MAX_IMAGE_PIXELS
            claimed = re.search(r"\((\d+) pixels\)", str(e))
            raise MediaError(
                source,
                modality,
                f"the header claims {claimed[1] if claimed else 'too many'} pixels: a "
                f"decompression bomb, exceeds preprocess max_pixels={max_pixels}; "
                "refused before decoding",
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise MediaError(source, modality, f"not a decodable image ({e})") from None
        w, h = img.size
        if max_pixels and w * h > max_pixels:
            img.close()
            raise MediaError(
                source,
                modality,
                f"{w}x{h} = {w * h} pixels exceeds preprocess max_pixels={max_pixels} "
                "(checked from the header, before decoding); raise max_pixels to accept "
                "it",
            )
        try:
            img.load()
        except (OSError, SyntaxError, ValueError) as e:
            raise MediaError(source, modality, f"not a decodable image ({e})") from None
    return img.convert(mode) if mode and img.mode != mode else img


def image_transform(cfg: ImagePreprocess, train: bool) -> v2.Compose:
    interp = _INTERP[cfg.interpolation]
    if train:
        ops = [v2.RandomResizedCrop(cfg.crop_size, scale=cfg.train_crop_scale, interpolation=interp, antialias=True)]
        if cfg.train_hflip:
            ops.append(v2.RandomHorizontalFlip())
    else:
        ops = [v2.Resize(cfg.size, interpolation=interp, antialias=True), v2.CenterCrop(cfg.crop_size)]
    return v2.Compose([v2.ToImage(), *ops, v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)])


@register_modality
class ImageModality(Modality):
    name = "image"
    order = 10
    Preprocess = ImagePreprocess
    StemConfig = ImageStemConfig
    extensions = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
    webdataset_keys = ("jpg", "jpeg", "png", "webp", "bmp")
    # CLIP's image templates: a subset of the 80 ImageNet templates of Radford et al. 2021
    zeroshot_templates = (
        "a photo of a {}.",
        "a bad photo of a {}.",
        "a photo of the large {}.",
        "a photo of the small {}.",
        "a cropped photo of a {}.",
        "a bright photo of a {}.",
        "a blurry photo of a {}.",
        "art of a {}.",
    )
    tower = "vision"
    presets = {"imagebind": {}, "languagebind": {}, "clip": {}}
    default_preset = "clip"
    sample_ndim = 3
    sample_formats = ("jpg", "png")
    encoder_defaults = {"ln_pre": True, "pool": "cls", "stem": {"patch_size": 16, "in_chans": 3}}

    def load(self, source: Any, cfg: ImagePreprocess) -> Image.Image:
        return decode_image(source, self.name, max_pixels=getattr(cfg, "max_pixels", DEFAULT_MAX_PIXELS))

    def transform(self, raw: Image.Image, cfg: ImagePreprocess, train: bool = False) -> torch.Tensor:
        return image_transform(cfg, train)(raw)

    def channels(self, cfg: EncoderConfig) -> int:
        return int(self.stem_config(cfg).in_chans)

    def expected_shape(self, cfg: EncoderConfig) -> str:
        return f"[{self.channels(cfg)}, H, W]"

    def stem(self, cfg: EncoderConfig) -> nn.Module:
        size = int(cfg.preprocess.get("crop_size", ImagePreprocess.crop_size))
        s = self.stem_config(cfg)
        if s.temporal_patch:
            return _StillAsClip(
                TubeletStem(
                    s.in_chans,
                    cfg.width,
                    s.patch_size,
                    size,
                    num_frames=s.temporal_patch,
                    temporal_patch=s.temporal_patch,
                    conv=s.conv,
                )
            )
        return PatchStem2d(s.in_chans, cfg.width, s.patch_size, (size, size), conv=s.conv)

    def preview(self, source: Any, cfg: ImagePreprocess) -> dict[str, Any]:
        """A thumbnail of the decoded image."""
        from bind.preview import thumbnail

        return {"picture": thumbnail(self.load(source, cfg))}

    def write_sample(self, fmt: str, directory: Path, index: int, rng: np.random.Generator) -> Path:
        """A 640x480 smooth random RGB scene."""
        rgb = np.stack([smooth_field(rng, 480, 640) for _ in range(3)], -1)
        return save_image(directory / f"{self.name}_{index}.{fmt}", (rgb * 255).astype(np.uint8))


class _StillAsClip(nn.Module):
    """An image as a clip of ``temporal_patch`` identical frames (ImageBind's vision preprocessor)."""

    def __init__(self, tubelet: TubeletStem) -> None:
        super().__init__()
        self.tubelet = tubelet

    def forward(self, x: torch.Tensor) -> StemOutput:
        out = self.tubelet(x.unsqueeze(2).expand(-1, -1, self.tubelet.temporal_patch, -1, -1))
        return dataclasses.replace(out, time_steps=None)  # a still image has no time axis
