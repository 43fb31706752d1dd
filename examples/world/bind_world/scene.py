"""Scene sampling: the latent factors, the nuisance parameters, and the camera/object motion every modality shares.

A scene is drawn from ``numpy.random.default_rng([seed, index])``, so it depends on ``(seed, index)`` only —
never on the worker that renders it or the order of rendering. Each renderer gets its own child generator
(``scene_rng(seed, index, stream)``), so adding noise to one modality never shifts another's random draws.

Geometry (all modalities agree): a pinhole camera with focal length ``f = size`` pixels (53° field of view),
device frame x forward, y left, z up. The carrier's activity moves the camera: pitch ``θ(t)`` bobs at the step
frequency, yaw ``ψ(t)`` sways at half of it (plus a constant rate when turning), roll ``ρ(t)`` sways too. The
gyroscope reads their time derivatives and the video shifts by ``f·ψ`` / ``f·θ`` pixels and rotates by ``ρ``, so
the IMU's step phase and frequency are exactly the video's shake. Amplitudes are those of a head-worn camera.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

SHAPES = ("cube", "sphere", "cone", "torus", "cylinder")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
MOTIONS = ("static", "left", "right", "up", "down", "rotating")
TEMPERATURES = ("cold", "warm", "hot")
DISTANCES = ("near", "mid", "far")
ACTIVITIES = ("still", "walking", "running", "turning")

FACTORS: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": COLOURS,
    "motion": MOTIONS,
    "temperature": TEMPERATURES,
    "distance": DISTANCES,
    "activity": ACTIVITIES,
}
"""Every latent factor and its vocabulary (the order is the label index)."""

MODALITIES = ("image", "video", "audio", "depth", "thermal", "imu")
DERIVED_MODALITIES = ("pointcloud",)
"""Modalities computed from the rendered ones (a point cloud back-projects the depth map, coloured by the image):
written with every scene, captioned, but served by plugins outside bind (``examples/pointcloud_plugin``), so the
built-in demo does not train them."""

REVEALS: dict[str, tuple[str, ...]] = {
    "image": ("shape", "colour", "distance"),
    "video": ("shape", "colour", "motion", "activity"),
    "audio": ("shape", "distance"),
    "depth": ("shape", "distance"),
    "thermal": ("temperature", "shape"),
    "imu": ("activity",),
    "pointcloud": ("shape", "colour", "distance"),
}
"""The factors each modality's signal determines and its caption names. (Video and thermal also show the object's
size, audio carries a motion rhythm; their captions leave those out.)"""

COLOUR_RGB = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.13, 0.68, 0.20),
    "blue": (0.14, 0.30, 0.92),
    "yellow": (0.95, 0.86, 0.10),
    "purple": (0.58, 0.18, 0.78),
    "orange": (0.98, 0.50, 0.05),
}
DISTANCE_M = {"near": (1.1, 1.4), "mid": (2.2, 2.8), "far": (3.6, 4.4)}
TEMPERATURE_C = {"cold": (-10.0, 4.0), "warm": (30.0, 42.0), "hot": (60.0, 95.0)}
# step frequency (Hz), pitch bob (rad), yaw sway (rad), roll sway (rad), vertical / forward / lateral acc (m/s²)
ACTIVITY_PARAMS = {
    "still": dict(
        step_hz=(0.3, 0.9),
        pitch=(0.001, 0.003),
        yaw=(0.001, 0.002),
        roll=(0.001, 0.002),
        acc_v=(0.0, 0.05),
        acc_f=(0.0, 0.03),
        acc_l=(0.0, 0.03),
    ),
    "walking": dict(
        step_hz=(1.7, 2.2),
        pitch=(0.02, 0.03),
        yaw=(0.01, 0.02),
        roll=(0.01, 0.02),
        acc_v=(1.5, 2.5),
        acc_f=(0.8, 1.2),
        acc_l=(0.4, 0.7),
    ),
    "running": dict(
        step_hz=(2.6, 3.2),
        pitch=(0.05, 0.07),
        yaw=(0.02, 0.035),
        roll=(0.02, 0.04),
        acc_v=(5.0, 8.0),
        acc_f=(2.0, 3.0),
        acc_l=(1.0, 1.5),
    ),
    "turning": dict(
        step_hz=(1.2, 1.6),
        pitch=(0.004, 0.008),
        yaw=(0.003, 0.006),
        roll=(0.003, 0.006),
        acc_v=(0.3, 0.6),
        acc_f=(0.1, 0.3),
        acc_l=(0.2, 0.4),
    ),
}
TURN_RATE = (0.25, 0.35)  # rad/s, either direction
OBJECT_RADIUS_M = (0.38, 0.44)
STREAMS = {"scene": 0, "image": 1, "video": 2, "depth": 3, "thermal": 4, "audio": 5, "imu": 6, "captions": 7}


@dataclass(frozen=True)
class WorldConfig:
    """Resolutions and rates of the rendered media (the scene content does not depend on them).

    Attributes:
        size: image / video / depth / thermal side in pixels (even, for yuv420p)
        frames: video frames
        fps: video frame rate; clip length = frames / fps seconds
        sample_rate: audio sample rate (Hz)
        imu_rate: IMU sample rate (Hz)
        video_codec: the mp4 encoder
    """

    size: int = 64
    frames: int = 16
    fps: int = 8
    sample_rate: int = 16000
    imu_rate: int = 200
    video_codec: Literal["libx264", "mpeg4"] = "libx264"

    @property
    def duration(self) -> float:
        return self.frames / self.fps

    def validate(self) -> None:
        if self.size < 16 or self.size % 2:
            raise ValueError(f"world size must be an even number >= 16, got {self.size}")
        if self.frames < 2 or self.fps < 1:
            raise ValueError(f"world video needs frames >= 2 and fps >= 1, got {self.frames} frames at {self.fps}")
        if self.sample_rate < 8000 or self.imu_rate < 50:
            raise ValueError(
                f"sample_rate >= 8000 and imu_rate >= 50 expected, got {self.sample_rate}, {self.imu_rate}"
            )
        if self.video_codec not in ("libx264", "mpeg4"):
            raise ValueError(f"video_codec must be 'libx264' or 'mpeg4', got {self.video_codec!r}")


@dataclass(frozen=True)
class SceneFactors:
    """The latent factors of one scene (the ground truth every caption and label is made from)."""

    shape: str
    colour: str
    motion: str
    temperature: str
    distance: str
    activity: str

    def __post_init__(self) -> None:
        for name, vocab in FACTORS.items():
            if getattr(self, name) not in vocab:
                raise ValueError(f"factor {name}={getattr(self, name)!r} is not one of {vocab}")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def labels(self) -> dict[str, int]:
        """Factor values as class indices into :data:`FACTORS`."""
        return {name: FACTORS[name].index(getattr(self, name)) for name in FACTORS}


@dataclass(frozen=True)
class Scene:
    """One scene: factors plus every nuisance parameter the renderers need (all drawn from ``(seed, index)``)."""

    index: int
    seed: int
    factors: SceneFactors
    # object
    colour_rgb: tuple[float, float, float]
    radius_m: float
    distance_m: float
    temperature_c: float
    center: tuple[float, float]  # object position at mid-clip, pixels from the image centre (x right, y down)
    velocity: tuple[float, float]  # pixels per second
    angle: float  # in-plane orientation at mid-clip, rad
    spin: float  # rad/s
    # camera carrier
    step_hz: float
    pitch_amp: float
    yaw_amp: float
    roll_amp: float
    turn_rate: float  # rad/s (0 unless turning)
    phases: tuple[float, float, float]  # pitch, yaw, roll
    acc_amp: tuple[float, float, float]  # vertical, forward, lateral, m/s²
    # environment
    light: tuple[float, float, float]
    ambient: float
    horizon: float  # fraction of the image height (relative to centre) where the floor meets the wall
    camera_height_m: float
    wall_depth_m: float
    wall_rgb: tuple[float, float, float]
    floor_rgb: tuple[float, float, float]
    ambient_c: float
    panels: tuple[tuple[float, ...], ...] = field(default_factory=tuple)  # x0, x1, y0, y1, r, g, b, depth_m, dtemp
    mid_time: float = 1.0  # the keyframe (image, depth, thermal) time, seconds

    def camera(self, t: np.ndarray) -> tuple[np.ndarray, ...]:
        """Camera pitch, yaw, roll (rad) and their rates (rad/s) at times ``t`` (seconds from clip start)."""
        w = 2 * np.pi * self.step_hz
        tc = t - self.mid_time
        pitch = self.pitch_amp * np.sin(w * t + self.phases[0])
        yaw = self.yaw_amp * np.sin(0.5 * w * t + self.phases[1]) + self.turn_rate * tc
        roll = self.roll_amp * np.sin(0.5 * w * t + self.phases[2])
        dpitch = self.pitch_amp * w * np.cos(w * t + self.phases[0])
        dyaw = self.yaw_amp * 0.5 * w * np.cos(0.5 * w * t + self.phases[1]) + self.turn_rate
        droll = self.roll_amp * 0.5 * w * np.cos(0.5 * w * t + self.phases[2])
        return pitch, yaw, roll, dpitch, dyaw, droll

    def object_state(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Object centre x, y (pixels from the image centre, before the camera moves) and angle at times ``t``."""
        tc = t - self.mid_time
        return (
            self.center[0] + self.velocity[0] * tc,
            self.center[1] + self.velocity[1] * tc,
            self.angle + self.spin * tc,
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["factors"] = self.factors.as_dict()
        return d


def scene_rng(seed: int, index: int, stream: str = "scene") -> np.random.Generator:
    """The random generator of one scene's ``stream`` (``scene`` for factors, or a modality's render noise)."""
    return np.random.default_rng([int(seed), int(index), STREAMS[stream]])


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def sample_factors(rng: np.random.Generator) -> SceneFactors:
    """Uniform, independent factors."""
    return SceneFactors(**{name: vocab[int(rng.integers(len(vocab)))] for name, vocab in FACTORS.items()})


def sample_scene(
    seed: int, index: int, config: WorldConfig = WorldConfig(), factors: SceneFactors | None = None
) -> Scene:
    """Draw scene ``index`` of world ``seed`` (pass ``factors`` to fix them and draw only the nuisances)."""
    rng = scene_rng(seed, index)
    drawn = sample_factors(rng)
    f = factors or drawn
    size = config.size
    duration = config.duration
    colour = np.clip(np.asarray(COLOUR_RGB[f.colour]) * rng.uniform(0.85, 1.05) + rng.normal(0, 0.03, 3), 0, 1)
    radius_m = _u(rng, OBJECT_RADIUS_M)
    distance_m = _u(rng, DISTANCE_M[f.distance])
    radius_px = size * radius_m / distance_m
    # translation covers 25-37% of the frame over the clip; spin 1.2-2 rad/s either way
    speed = rng.uniform(0.25, 0.375) * size / duration
    velocity = {
        "static": (0.0, 0.0),
        "rotating": (0.0, 0.0),
        "left": (-speed, 0.0),
        "right": (speed, 0.0),
        "up": (0.0, -speed),
        "down": (0.0, speed),
    }[f.motion]
    spin = float(rng.uniform(1.2, 2.0) * rng.choice([-1.0, 1.0])) if f.motion == "rotating" else 0.0
    room = max(0.0, min(0.12 * size, size / 2 - 1.05 * radius_px))
    center = (float(rng.uniform(-room, room)), float(rng.uniform(-room, room)))
    act = ACTIVITY_PARAMS[f.activity]
    turn = _u(rng, TURN_RATE) * float(rng.choice([-1.0, 1.0])) if f.activity == "turning" else 0.0
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.8, -0.2), rng.uniform(0.6, 1.0)])
    light /= np.linalg.norm(light)
    ambient_c = _u(rng, (16.0, 26.0))
    wall_depth = _u(rng, (6.0, 9.0))
    horizon = _u(rng, (-0.15, 0.08))
    grey_wall, grey_floor = rng.uniform(0.35, 0.75), rng.uniform(0.25, 0.6)
    panels = []
    for _ in range(int(rng.integers(1, 4))):
        x0 = rng.uniform(-1.2, 1.0) * size
        y0 = rng.uniform(-0.7, horizon) * size
        grey = rng.uniform(0.25, 0.8)
        panels.append(
            (
                float(x0),
                float(x0 + rng.uniform(0.15, 0.5) * size),
                float(y0),
                float(y0 + rng.uniform(0.1, 0.4) * size),
                *[float(v) for v in np.clip(grey + rng.normal(0, 0.05, 3), 0, 1)],
                float(rng.uniform(3.0, wall_depth - 0.5)),
                float(rng.normal(0, 1.5)),
            )
        )
    return Scene(
        index=index,
        seed=seed,
        factors=f,
        colour_rgb=tuple(float(c) for c in colour),
        radius_m=radius_m,
        distance_m=distance_m,
        temperature_c=_u(rng, TEMPERATURE_C[f.temperature]),
        center=center,
        velocity=velocity,
        angle=float(rng.uniform(-0.35, 0.35)),
        spin=spin,
        step_hz=_u(rng, act["step_hz"]),
        pitch_amp=_u(rng, act["pitch"]),
        yaw_amp=_u(rng, act["yaw"]),
        roll_amp=_u(rng, act["roll"]),
        turn_rate=turn,
        phases=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, 3)),
        acc_amp=(_u(rng, act["acc_v"]), _u(rng, act["acc_f"]), _u(rng, act["acc_l"])),
        light=tuple(float(v) for v in light),
        ambient=_u(rng, (0.3, 0.45)),
        horizon=horizon,
        camera_height_m=_u(rng, (1.2, 1.6)),
        wall_depth_m=wall_depth,
        wall_rgb=tuple(float(v) for v in np.clip(grey_wall + rng.normal(0, 0.05, 3), 0, 1)),
        floor_rgb=tuple(float(v) for v in np.clip(grey_floor + rng.normal(0, 0.05, 3), 0, 1)),
        ambient_c=ambient_c,
        panels=tuple(panels),
        mid_time=duration / 2,
    )
