"""Point clouds of world scenes: the object's segment of the RGB-D view — the metric depth map back-projected through
the scene's pinhole camera, coloured by the pixel-aligned image, kept where the object covers the pixel (as in
ScanObjectNN's object-only clouds, Uy et al., ICCV 2019: a real partial scan, segmented by its annotation).

The whole frustum would be a 9-metre room of wall and floor points around a 0.8 m object: farthest point sampling
to a fixed count (what point encoders do) spreads its picks evenly over space and keeps 3-20 object points of 1024.
The segment keeps the signal — the shape's visible surface, with the depth sensor's noise and edge dropouts — and its
metric position (how far the object is) in camera coordinates.

Camera (:mod:`bind_world.scene`): focal length ``f = size`` pixels, principal point at the image centre. A valid
pixel at ``(u, v)`` pixels from the centre (u right, v down) with depth ``d`` metres (z-depth along the optical axis)
becomes the point ``(u·d/f, d, -v·d/f)``: x right, y forward (away from the camera), z up, metres, camera at the
origin. Invalid depth pixels (0) give no point. Stored as ``.npy`` float32 ``[N, 6]``: xyz, then rgb in ``[0, 1]``.
"""

from __future__ import annotations

import numpy as np

from bind_world.render import pixel_grid


def back_project(depth_mm: np.ndarray, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """uint16 depth ``[H, W]`` (mm, 0 = invalid) + uint8 RGB ``[H, W, 3]`` -> float32 ``[N, 6]`` (xyz m, rgb) of the
    valid pixels (and, given a boolean ``mask [H, W]``, only those it selects)."""
    size = depth_mm.shape[0]
    if depth_mm.shape != (size, size) or image.shape != (size, size, 3):
        raise ValueError(f"expected a square depth map and an aligned RGB image, got {depth_mm.shape}, {image.shape}")
    px, py = pixel_grid(size)
    valid = depth_mm > 0
    if mask is not None:
        valid &= mask
    d = depth_mm[valid].astype(np.float64) / 1000.0
    f = float(size)
    xyz = np.stack([px[valid] * d / f, d, -py[valid] * d / f], axis=1)
    rgb = image[valid].astype(np.float64) / 255.0
    return np.concatenate([xyz, rgb], axis=1).astype(np.float32)


def object_point_cloud(depth_mm: np.ndarray, image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The object's segment (coverage ``alpha >= 0.5``, the pixels whose depth is the object's) back-projected."""
    return back_project(depth_mm, image, alpha >= 0.5)
