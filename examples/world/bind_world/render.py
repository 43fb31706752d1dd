"""Visual renderers: RGB image, video frames, metric depth and thermal, from one analytic scene geometry.

Each shape is an analytic 2.5-D primitive in its own frame (unit radius): a signed distance (anti-aliased
silhouette), a surface normal (Lambert + Blinn-Phong shading) and a relief (how far the surface stands towards the
camera, for depth). The room behind is a wall, a floor below the horizon (depth from the camera height, as for a
ground plane under a pinhole camera: ``z = h·f / (y - y_horizon)``) and a few panels. The same geometry gives
every visual modality, so the image, the depth map and the thermal image are pixel-aligned views of one scene;
video frames add the object's motion and the camera's shake/pan from :meth:`Scene.camera`.

Depth follows the sensors LanguageBind's data came from: metric millimetres in 16-bit PNG, noise growing with
the square of depth (as a structured-light / stereo sensor's does) and invalid (zero) pixels, most often at
object edges. Thermal is a radiometric temperature field (°C), blurred like a microbolometer's optics, with
temporal and fixed-pattern column noise, stored as 8-bit: ``value = (T + 20) / 120 · 255``.
"""

from __future__ import annotations

import numpy as np

from bind_world.scene import Scene

THERMAL_RANGE_C = (-20.0, 100.0)
STRIPE = (0.18, 0.38)  # a darker band in the object frame: makes spinning visible on round shapes


def _box_sd(u: np.ndarray, v: np.ndarray, hx: float, hy: float) -> np.ndarray:
    qx, qy = np.abs(u) - hx, np.abs(v) - hy
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)


def shape_field(shape: str, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, ...]:
    """Signed distance (unit radii), normal (nx, ny, nz, object frame, y down) and relief of ``shape`` at (u, v)."""
    zero = np.zeros_like(u)
    if shape == "sphere":
        d2 = u * u + v * v
        sd = np.sqrt(d2) - 1
        nz = np.sqrt(np.clip(1 - d2, 0, 1))
        return sd, u, v, nz, nz
    if shape == "cube":
        half, bevel = 0.8, 0.16
        sd = _box_sd(u, v, half, half)
        tx = np.clip((np.abs(u) - (half - bevel)) / bevel, 0, 1) * np.sign(u) * 0.8
        ty = np.clip((np.abs(v) - (half - bevel)) / bevel, 0, 1) * np.sign(v) * 0.8
        relief = half * (1 - 0.25 * np.maximum(np.abs(tx), np.abs(ty)))
        return sd, tx, ty, np.ones_like(u), relief
    if shape == "cone":  # apex up at v=-1, base at v=0.85, half-width 0.9
        norm = float(np.hypot(1.85, 0.9))
        sd = np.maximum(np.maximum((u * 1.85 - (v + 1) * 0.9) / norm, (-u * 1.85 - (v + 1) * 0.9) / norm), v - 0.85)
        width = np.maximum(0.9 * (v + 1) / 1.85, 1e-3)
        s = np.clip(u / width, -1, 1)
        nz = np.sqrt(1 - s * s)
        return sd, s, zero - 0.35, nz, nz * width
    if shape == "torus":
        ring, tube = 0.64, 0.34
        d = np.maximum(np.hypot(u, v), 1e-6)
        s = np.clip((d - ring) / tube, -1, 1)
        nz = np.sqrt(1 - s * s)
        return np.abs(d - ring) - tube, s * u / d, s * v / d, nz, nz * tube
    if shape == "cylinder":  # body |u| <= 0.55, v in [-0.7, 0.9]; elliptic top cap at v = -0.7
        a, b = 0.55, 0.2
        body = _box_sd(u, v - 0.1, a, 0.8)
        ell = np.hypot(u / a, (v + 0.7) / b)
        sd = np.minimum(body, (ell - 1) * b)
        cap = ell <= 1
        s = np.clip(u / a, -1, 1)
        nz_body = np.sqrt(1 - s * s)
        nx = np.where(cap, 0.0, s)
        ny = np.where(cap, -0.85, 0.0)
        nz = np.where(cap, 0.5, nz_body)
        relief = np.where(cap, 0.5 * a, a * nz_body)
        return sd, nx, ny, nz, relief
    raise ValueError(f"unknown shape {shape!r}")


def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = np.arange(size, dtype=np.float32) - (size - 1) / 2
    return np.meshgrid(c, c, indexing="xy")  # x (right), y (down), pixels from the centre


def geometry(scene: Scene, size: int, t: np.ndarray, moving_camera: bool) -> dict[str, np.ndarray]:
    """Per-pixel geometry of the views at times ``t`` ([T]): world-view coordinates, object coverage, normals..."""
    px, py = pixel_grid(size)
    t = np.asarray(t, dtype=np.float64)
    f = float(size)
    if moving_camera:
        pitch, yaw, roll = scene.camera(t)[:3]
    else:
        pitch = yaw = roll = np.zeros_like(t)

    def col(a: np.ndarray) -> np.ndarray:  # [T] float64 -> [T, 1, 1] float32
        return np.asarray(a, dtype=np.float32)[:, None, None]

    cr, sr = col(np.cos(roll)), col(np.sin(roll))
    x = cr * px - sr * py - col(f * yaw)
    y = sr * px + cr * py + col(f * pitch)
    cx, cy, ang = scene.object_state(t)
    radius = f * scene.radius_m / scene.distance_m
    ca, sa = col(np.cos(ang)), col(np.sin(ang))
    dx, dy = (x - col(cx)) / radius, (y - col(cy)) / radius
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    sd, nx, ny, nz, relief = shape_field(scene.factors.shape, u, v)
    alpha = np.clip(0.5 - sd * radius, 0, 1)
    nxv, nyv = ca * nx - sa * ny, sa * nx + ca * ny
    n = np.stack(np.broadcast_arrays(nxv, nyv, nz)).astype(np.float32)
    n /= np.maximum(np.sqrt((n * n).sum(axis=0)), 1e-6)
    stripe = (u > STRIPE[0]) & (u < STRIPE[1])
    return {"x": x, "y": y, "alpha": alpha, "normal": n, "relief": relief, "stripe": stripe}


def _panel_masks(scene: Scene, x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, tuple[float, ...]]]:
    return [((x >= p[0]) & (x < p[1]) & (y >= p[2]) & (y < p[3]), p) for p in scene.panels]


def render_rgb(scene: Scene, geo: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB frames [T, H, W, 3]."""
    x, y = geo["x"], geo["y"]
    horizon = scene.horizon * size
    rgb = lambda c: np.asarray(c, dtype=np.float32)
    wall = rgb(scene.wall_rgb) * (1 - 0.2 * np.clip((horizon - y) / size, 0, 1))[..., None]
    floor = rgb(scene.floor_rgb) * (0.75 + 0.35 * np.clip((y - horizon) / (0.5 * size), 0, 1))[..., None]
    bg = np.where((y < horizon)[..., None], wall, floor)
    for mask, p in _panel_masks(scene, x, y):
        bg[mask] = rgb(p[4:7])
    n = geo["normal"]
    light = rgb(scene.light)
    diffuse = np.clip(np.tensordot(light, n, axes=1), 0, 1)
    half = light + rgb([0.0, 0.0, 1.0])
    half /= np.linalg.norm(half)
    spec = np.clip(np.tensordot(half, n, axes=1), 0, 1)
    spec *= spec
    spec *= spec
    spec = spec * spec * spec  # Blinn-Phong exponent 12
    shade = (scene.ambient + (1 - scene.ambient) * diffuse) * np.where(geo["stripe"], 0.6, 1.0)
    obj = rgb(scene.colour_rgb) * shade[..., None] + 0.35 * spec[..., None]
    a = geo["alpha"][..., None]
    img = bg + (obj - bg) * a
    img += rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(0.005, 0.02)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def render_depth(scene: Scene, geo: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """uint16 depth in millimetres [T, H, W]; 0 = invalid."""
    x, y = geo["x"], geo["y"]
    horizon = scene.horizon * size
    below = np.maximum(y - horizon, 1e-3)
    depth = np.where(
        y < horizon, scene.wall_depth_m, np.minimum(scene.camera_height_m * size / below, scene.wall_depth_m)
    )
    for mask, p in _panel_masks(scene, x, y):
        depth = np.where(mask, p[7], depth)
    alpha = geo["alpha"]
    depth = np.where(alpha >= 0.5, scene.distance_m - geo["relief"] * scene.radius_m, depth)
    depth = depth + rng.normal(0, 1, depth.shape) * (0.0015 * depth**2)
    invalid = rng.random(depth.shape) < np.where((alpha > 0.1) & (alpha < 0.9), 0.3, 0.01)
    mm = np.clip(np.rint(depth * 1000), 1, 65535)
    return np.where(invalid, 0, mm).astype(np.uint16)


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    r = max(1, int(round(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(a, [(0, 0), (r, r), (r, r)], mode="edge")
    h = sum(k[i] * pad[:, :, i : i + a.shape[2]] for i in range(2 * r + 1))
    return sum(k[i] * h[:, i : i + a.shape[1], :] for i in range(2 * r + 1))


def thermal_celsius(scene: Scene, geo: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """Apparent temperature field (°C) [T, H, W] as the camera sees it (blurred, noisy)."""
    x, y = geo["x"], geo["y"]
    horizon = scene.horizon * size
    temp = np.where(y < horizon, scene.ambient_c + 1.5 * np.clip((horizon - y) / size, 0, 1), scene.ambient_c - 1.5)
    for mask, p in _panel_masks(scene, x, y):
        temp = np.where(mask, scene.ambient_c + p[8], temp)
    emissive = scene.ambient_c + (scene.temperature_c - scene.ambient_c) * (0.65 + 0.35 * geo["normal"][2])
    a = geo["alpha"]
    temp = _blur(temp * (1 - a) + emissive * a, sigma=1.0)
    column = rng.normal(0, 0.2, (1, 1, temp.shape[2]))
    return temp + column + rng.normal(0, 0.25, temp.shape)


def render_thermal(scene: Scene, geo: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 thermal frames [T, H, W] (linear in °C over :data:`THERMAL_RANGE_C`)."""
    lo, hi = THERMAL_RANGE_C
    temp = thermal_celsius(scene, geo, size, rng)
    return np.clip(np.rint((temp - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)


def thermal_to_celsius(values: np.ndarray) -> np.ndarray:
    """Invert the 8-bit thermal encoding to °C."""
    lo, hi = THERMAL_RANGE_C
    return lo + np.asarray(values, dtype=np.float64) / 255 * (hi - lo)
