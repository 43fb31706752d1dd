"""Point clouds of world scenes: the metric depth map back-projected through the scene's pinhole camera, coloured by
the pixel-aligned image — what an RGB-D sensor's point cloud is, noise and missing pixels included.

Camera (:mod:`bind.world.scene`): focal length ``f = size`` pixels, principal point at the image centre. A valid
pixel at ``(u, v)`` pixels from the centre (u right, v down) with depth ``d`` metres (z-depth along the optical axis)
becomes the point ``(u·d/f, d, -v·d/f)``: x right, y forward (away from the camera), z up, metres, camera at the
origin. Invalid depth pixels (0) give no point. Stored as ``.npy`` float32 ``[N, 6]``: xyz, then rgb in ``[0, 1]``.
"""

from __future__ import annotations

import numpy as np

from bind.world.render import pixel_grid


def back_project(depth_mm: np.ndarray, image: np.ndarray) -> np.ndarray:
    """uint16 depth ``[H, W]`` (mm, 0 = invalid) + uint8 RGB ``[H, W, 3]`` -> float32 ``[N, 6]`` (xyz m, rgb)."""
    size = depth_mm.shape[0]
    if depth_mm.shape != (size, size) or image.shape != (size, size, 3):
        raise ValueError(f"expected a square depth map and an aligned RGB image, got {depth_mm.shape}, {image.shape}")
    px, py = pixel_grid(size)
    valid = depth_mm > 0
    d = depth_mm[valid].astype(np.float64) / 1000.0
    f = float(size)
    xyz = np.stack([px[valid] * d / f, d, -py[valid] * d / f], axis=1)
    rgb = image[valid].astype(np.float64) / 255.0
    return np.concatenate([xyz, rgb], axis=1).astype(np.float32)
