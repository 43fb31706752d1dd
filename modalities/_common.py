"""Helpers shared by the built-in plugins: reading sources and turning decoder failures into ``MediaError``; the
smooth random scenes their synthetic samples (``Modality.write_sample``) show."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from bind.errors import MediaError


def source_bytes_or_path(source: Any, modality: str) -> str | io.BytesIO:
    """A path (checked to exist and be non-empty) or an in-memory buffer for ``bytes``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise MediaError(source, modality, "empty bytes")
        return io.BytesIO(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise MediaError(source, modality, "file not found")
        if not path.is_file():
            raise MediaError(source, modality, "not a regular file")
        if path.stat().st_size == 0:
            raise MediaError(source, modality, "file is empty (0 bytes)")
        return str(path)
    raise MediaError(
        source, modality, f"unsupported source type {type(source).__name__} (expected a path, bytes or an array)"
    )


def smooth_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random ``[h, w]`` field in [0, 1] (so compressed formats see realistic, not noise-like, content)."""
    coarse = rng.random((h // 16 + 2, w // 16 + 2))
    ys, xs = np.linspace(0, coarse.shape[0] - 1.001, h), np.linspace(0, coarse.shape[1] - 1.001, w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    c = coarse
    return (
        (1 - fy) * (1 - fx) * c[y0][:, x0]
        + (1 - fy) * fx * c[y0][:, x0 + 1]
        + fy * (1 - fx) * c[y0 + 1][:, x0]
        + fy * fx * c[y0 + 1][:, x0 + 1]
    )


def save_image(path: Path, array: np.ndarray) -> Path:
    """``array`` written by PIL (the format from the suffix); returns ``path``."""
    from PIL import Image

    Image.fromarray(array).save(path)
    return path
