"""Reading point clouds: PLY (ASCII and binary, through ``plyfile``), ``.npy`` / ``.npz`` ``[N, 3+C]``, ``.xyz`` /
``.txt`` text, arrays and tensors -> :class:`PointCloud` (float32 xyz, optional colour in ``[0, 1]`` and normals).

Files are told apart by their content (PLY magic, NumPy magic, ZIP magic, else text), not by their suffix.
Column layouts of arrays and text files (``layout``): ``auto`` reads 3 columns as xyz, 6 as xyz + rgb and 9 as
xyz + rgb + normal; ``xyz``, ``xyzrgb``, ``xyznormal`` and ``xyzrgbnormal`` say it explicitly (6 columns of
normals need ``xyznormal``). Colours above 1 are read as 8-bit (divided by 255). PLY vertices need ``x y z``;
``red green blue`` (or ``r g b`` / ``diffuse_red ...``) and ``nx ny nz`` are read when present. ``face`` and
``edge`` elements (a mesh's connectivity) are ignored; any other element is refused, since it may be where the data
actually is. Every failure is a :class:`bind.errors.MediaError` naming the file, the modality and the fix.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bind.errors import MediaError

MODALITY = "pointcloud"
PLY_MAGIC, NPY_MAGIC, ZIP_MAGIC = b"ply", b"\x93NUMPY", b"PK\x03\x04"
LAYOUTS = {"xyz": 3, "xyzrgb": 6, "xyznormal": 6, "xyzrgbnormal": 9}
_AUTO = {3: "xyz", 6: "xyzrgb", 9: "xyzrgbnormal"}
_COLOUR_NAMES = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
_HEADER_LIMIT = 1 << 16  # bytes of a PLY header read before giving up on finding ``end_header``


@dataclass
class PointCloud:
    """A decoded cloud: ``xyz [N, 3]`` float32, ``rgb [N, 3]`` float32 in ``[0, 1]`` or None, ``normals [N, 3]`` or
    None."""

    xyz: np.ndarray
    rgb: np.ndarray | None = None
    normals: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


def _open(source: Any) -> tuple[str | io.BytesIO, bytes]:
    """A path (checked) or an in-memory buffer, and its first bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise MediaError(source, MODALITY, "empty bytes")
        data = bytes(source)
        return io.BytesIO(data), data[:8]
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise MediaError(source, MODALITY, "file not found" if not path.exists() else "not a regular file")
        if path.stat().st_size == 0:
            raise MediaError(source, MODALITY, "file is empty (0 bytes)")
        with path.open("rb") as f:
            return str(path), f.read(8)
    raise MediaError(
        source,
        MODALITY,
        f"unsupported source type {type(source).__name__} (expected a path, bytes, an array or a tensor)",
    )


def read_point_cloud(
    source: Any,
    *,
    layout: str = "auto",
    npz_key: str | None = None,
    max_points: int = 2_000_000,
    ignore_elements: tuple[str, ...] = ("face", "edge"),
) -> PointCloud:
    """Decode ``source`` (path, bytes, ndarray or tensor) and validate it (see the module docstring)."""
    if hasattr(source, "detach"):  # a torch tensor
        source = source.detach().cpu().numpy()
    if isinstance(source, np.ndarray):
        return from_array(source, source, layout, max_points)
    fp, head = _open(source)
    if head.startswith(PLY_MAGIC):
        return read_ply(source, fp, max_points, ignore_elements)
    if head.startswith(NPY_MAGIC) or head.startswith(ZIP_MAGIC):
        return from_array(_read_npy(source, fp, npz_key, max_points), source, layout, max_points)
    return from_array(_read_text(source, fp, max_points), source, layout, max_points)


# --- PLY -------------------------------------------------------------------------------------------------------------
def _ply_header_counts(source: Any, fp: str | io.BytesIO) -> dict[str, int]:
    """Element names and counts from the header alone (so the point limit holds before any body is parsed)."""
    if isinstance(fp, io.BytesIO):
        head = fp.getvalue()[:_HEADER_LIMIT]
    else:
        with open(fp, "rb") as f:
            head = f.read(_HEADER_LIMIT)
    end = head.find(b"end_header")
    if end < 0:
        raise MediaError(source, MODALITY, "PLY header has no 'end_header' line (truncated or not a PLY file)")
    counts = {}
    for m in re.finditer(rb"^element\s+(\S+)\s+(\d+)\s*$", head[:end], flags=re.MULTILINE):
        counts[m.group(1).decode("ascii", "replace")] = int(m.group(2))
    return counts


def read_ply(source: Any, fp: str | io.BytesIO, max_points: int, ignore_elements: tuple[str, ...]) -> PointCloud:
    """Vertices of a PLY file (ASCII, binary little- or big-endian) with optional colour and normal properties."""
    from plyfile import PlyData, PlyParseError

    counts = _ply_header_counts(source, fp)
    unsupported = [e for e in counts if e != "vertex" and e not in ignore_elements]
    if unsupported:
        raise MediaError(
            source,
            MODALITY,
            f"unsupported PLY element(s) {unsupported}: a point cloud is the 'vertex' "
            f"element (ignored: {list(ignore_elements)}); convert the file to vertices",
        )
    if "vertex" not in counts:
        raise MediaError(source, MODALITY, f"PLY file has no 'vertex' element (elements: {list(counts)})")
    _check_count(source, counts["vertex"], max_points)
    if isinstance(fp, io.BytesIO):
        fp.seek(0)
    try:
        ply = PlyData.read(fp, mmap=False)
    except (PlyParseError, ValueError, EOFError, OSError, UnicodeDecodeError) as e:
        raise MediaError(
            source, MODALITY, f"unreadable PLY file ({str(e).splitlines()[0] if str(e) else e!r})"
        ) from None
    vertex = ply["vertex"]
    names = {p.name for p in vertex.properties}
    if not {"x", "y", "z"} <= names:
        raise MediaError(source, MODALITY, f"PLY vertices need x, y, z properties; found {sorted(names)}")
    data = vertex.data

    def columns(keys: tuple[str, ...]) -> np.ndarray:
        try:
            return np.stack([np.asarray(data[k], dtype=np.float64) for k in keys], axis=1)
        except (ValueError, TypeError):
            raise MediaError(
                source, MODALITY, f"PLY vertex properties {list(keys)} must be scalars, not lists"
            ) from None

    xyz = columns(("x", "y", "z"))
    rgb = next((columns(keys) for keys in _COLOUR_NAMES if set(keys) <= names), None)
    normals = columns(("nx", "ny", "nz")) if {"nx", "ny", "nz"} <= names else None
    return validate(source, xyz, rgb, normals)


# --- arrays and text -------------------------------------------------------------------------------------------------
def _read_npy(source: Any, fp: str | io.BytesIO, npz_key: str | None, max_points: int) -> np.ndarray:
    try:
        loaded = np.load(fp, allow_pickle=False, mmap_mode="r" if isinstance(fp, str) else None)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise MediaError(source, MODALITY, f"not a readable .npy/.npz array ({e})") from None
    if isinstance(loaded, np.ndarray):
        if loaded.ndim >= 1:
            _check_count(source, loaded.shape[0], max_points)
        return np.array(loaded)
    with loaded:
        keys = list(loaded.keys())
        key = npz_key or next((k for k in ("points", "xyz", "pointcloud") if k in keys), None)
        key = key or (keys[0] if len(keys) == 1 else None)
        if key not in keys:
            want = repr(npz_key) if npz_key else "'points' or a single array"
            raise MediaError(source, MODALITY, f".npz holds arrays {keys}; expected {want} (set npz_key)")
        try:
            return np.asarray(loaded[key])
        except (ValueError, OSError, zipfile.BadZipFile) as e:
            raise MediaError(source, MODALITY, f"corrupt array {key!r} in .npz ({e})") from None


def _read_text(source: Any, fp: str | io.BytesIO, max_points: int) -> np.ndarray:
    """Whitespace- or comma-separated rows (``#`` comments); every row the same number of numbers."""
    try:
        text = fp.getvalue().decode("utf-8") if isinstance(fp, io.BytesIO) else Path(fp).read_text("utf-8")
    except UnicodeDecodeError:
        raise MediaError(
            source, MODALITY, "not a point cloud: neither PLY, .npy/.npz nor UTF-8 .xyz/.txt text"
        ) from None
    rows = [line.split("#", 1)[0].replace(",", " ").split() for line in text.splitlines()]
    rows = [r for r in rows if r]
    _check_count(source, len(rows), max_points)
    if not rows:
        raise MediaError(source, MODALITY, "empty point cloud (no rows of numbers)")
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        bad = next(i for i, r in enumerate(rows) if len(r) != len(rows[0]))
        raise MediaError(
            source,
            MODALITY,
            f"rows have different column counts {sorted(widths)} (row {bad + 1} has "
            f"{len(rows[bad])}, the first {len(rows[0])})",
        )
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError as e:
        raise MediaError(source, MODALITY, f"non-numeric value in a text point cloud ({e})") from None


def from_array(a: np.ndarray, source: Any, layout: str, max_points: int) -> PointCloud:
    """``[N, 3+C]`` -> :class:`PointCloud` by ``layout`` (see the module docstring)."""
    a = np.asarray(a)
    if a.dtype.kind not in "uif":
        raise MediaError(source, MODALITY, f"expected numeric points, got dtype {a.dtype}")
    if a.ndim != 2:
        raise MediaError(
            source,
            MODALITY,
            f"expected points as [N, 3+C] (N points, columns xyz[rgb][normal]), got shape {tuple(a.shape)}",
        )
    _check_count(source, a.shape[0], max_points)
    if a.shape[0] == 0:
        raise MediaError(source, MODALITY, "empty point cloud (0 points)")
    cols = a.shape[1]
    name = _AUTO.get(cols) if layout == "auto" else layout
    if name is None or LAYOUTS[name] != cols:
        want = "3 (xyz), 6 (xyz rgb) or 9 (xyz rgb normal)" if layout == "auto" else f"{LAYOUTS[layout]} ({layout})"
        raise MediaError(
            source, MODALITY, f"{cols} columns per point; expected {want} (set layout for other column orders)"
        )
    a = a.astype(np.float64, copy=False)
    rgb = a[:, 3:6] if "rgb" in name else None
    normals = a[:, -3:] if "normal" in name else None
    return validate(source, a[:, :3], rgb, normals)


def _check_count(source: Any, n: int, max_points: int) -> None:
    if n > max_points:
        raise MediaError(
            source,
            MODALITY,
            f"{n} points exceed max_points={max_points} (downsample the cloud or raise the preprocessing's max_points)",
        )


def validate(source: Any, xyz: np.ndarray, rgb: np.ndarray | None, normals: np.ndarray | None) -> PointCloud:
    """Refuse empty clouds and non-finite values; colours to ``[0, 1]`` (8-bit when any exceeds 1)."""
    if xyz.shape[0] == 0:
        raise MediaError(source, MODALITY, "empty point cloud (0 points)")
    bad = ~np.isfinite(xyz).all(axis=1)
    if bad.any():
        raise MediaError(
            source,
            MODALITY,
            f"{int(bad.sum())} of {len(xyz)} points have NaN/inf coordinates "
            f"(first at row {int(np.argmax(bad))}); drop them before binding",
        )
    for what, v in (("colour", rgb), ("normal", normals)):
        if v is not None and not np.isfinite(v).all():
            raise MediaError(source, MODALITY, f"NaN/inf {what} values")
    if rgb is not None:
        if rgb.min() < 0:
            raise MediaError(
                source, MODALITY, f"negative colour values (min {rgb.min():g}); expected [0, 1] or [0, 255]"
            )
        rgb = rgb / 255.0 if rgb.max() > 1.0 else rgb
        if rgb.max() > 1.0:
            raise MediaError(source, MODALITY, f"colour values up to {rgb.max() * 255:g}; expected [0, 1] or [0, 255]")
    f32 = lambda v: None if v is None else np.ascontiguousarray(v, dtype=np.float32)
    return PointCloud(f32(xyz), f32(rgb), f32(normals))
