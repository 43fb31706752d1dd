"""IMU renderer: the camera carrier's accelerometer (m/s², specific force) and gyroscope (rad/s) at ``imu_rate``.

Device frame x forward, y left, z up (FLU); a still device reads +9.81 m/s² on z. Gait follows the usual
pedestrian-dead-reckoning picture (e.g. Harle, "A Survey of Indoor Inertial Positioning Systems for Pedestrians",
IEEE Comm. Surveys 2013): the vertical acceleration oscillates at the step frequency (walking ~1.7-2.2 Hz, a few
m/s²; running ~2.6-3.2 Hz with sharp heel-strike peaks of 5-8 m/s²), forward at the step frequency, lateral sway
at half of it. The gyroscope reads the time derivatives of the same pitch / yaw / roll that shake the video
(:meth:`bind_world.scene.Scene.camera`); turning adds a constant yaw rate (0.25-0.35 rad/s). Nuisances: a random
mounting tilt (±10° pitch/roll) applied to both sensors, per-axis biases and white noise.
"""

from __future__ import annotations

import numpy as np

from bind_world.scene import Scene

GRAVITY = 9.81


def _rotation(pitch: float, roll: float) -> np.ndarray:
    cp, sp, cr, sr = np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return ry @ rx


def render_imu(scene: Scene, duration: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [6, N]: acc x, y, z (m/s²) then gyro x, y, z (rad/s), N = duration · rate."""
    n = int(round(duration * rate))
    t = np.arange(n) / rate
    pitch, _, roll, dpitch, dyaw, droll = scene.camera(t)
    w = 2 * np.pi * scene.step_hz
    phase = w * t + scene.phases[0]
    acc_v, acc_f, acc_l = scene.acc_amp
    if scene.factors.activity == "running":  # heel strikes: a peaky, zero-mean pulse per step
        pulse = (0.5 + 0.5 * np.cos(phase)) ** 4
        vertical = (pulse - 35 / 128) / (1 - 35 / 128)
    else:
        vertical = np.sin(phase) + 0.35 * np.sin(2 * phase + 0.5)
    up = np.stack([-np.sin(pitch) * np.cos(roll), np.sin(roll), np.cos(pitch) * np.cos(roll)])
    acc = GRAVITY * up + np.stack(
        [acc_f * np.sin(phase + np.pi / 2), acc_l * np.sin(0.5 * w * t + scene.phases[2]), acc_v * vertical]
    )
    gyro = np.stack([droll, dpitch, dyaw])
    mount = _rotation(*np.deg2rad(rng.uniform(-10, 10, 2)))
    acc = mount @ acc + rng.normal(0, 0.05, (3, 1)) + rng.normal(0, rng.uniform(0.03, 0.08), (3, n))
    gyro = mount @ gyro + rng.normal(0, 0.01, (3, 1)) + rng.normal(0, rng.uniform(0.004, 0.01), (3, n))
    return np.concatenate([acc, gyro]).astype(np.float32)
