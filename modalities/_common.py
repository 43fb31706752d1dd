"""Helpers shared by the built-in plugins: reading sources and turning decoder failures into ``MediaError``."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

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
