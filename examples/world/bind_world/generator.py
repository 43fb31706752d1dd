"""Write a world to disk: media per scene, ``manifest.jsonl`` and ``world.json``.

Scene ``i`` of world ``seed`` is rendered from ``(seed, i)`` alone, so the bytes do not depend on the number of
worker processes or their scheduling; the split of every scene comes from one seeded permutation (exact counts).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bind_world.audio import render_audio
from bind_world.captions import caption, caption_spec
from bind_world.imu import render_imu
from bind_world.media import imu_csv_bytes, npy_bytes, png_bytes, wav_bytes, write_mp4
from bind_world.pointcloud import object_point_cloud
from bind_world.render import THERMAL_RANGE_C, geometry, render_depth, render_rgb, render_thermal
from bind_world.scene import (
    DERIVED_MODALITIES,
    FACTORS,
    MODALITIES,
    REVEALS,
    Scene,
    WorldConfig,
    sample_scene,
    scene_rng,
)

WORLD_VERSION = "1.0"
SPLITS = ("train", "val", "test")
MANIFEST_KEYS = (
    "id",
    "split",
    "text",
    "captions",
    "factors",
    "image",
    "video",
    "audio",
    "depth",
    "thermal",
    "imu",
    "imu_csv",
    "pointcloud",
)
log = logging.getLogger(__name__)


def scene_id(index: int) -> str:
    return f"{index:06d}"


def media_paths(sid: str) -> dict[str, str]:
    """Manifest paths (relative to the manifest directory) of scene ``sid``'s files."""
    return {
        "image": f"media/{sid}.png",
        "video": f"media/{sid}.mp4",
        "audio": f"media/{sid}.wav",
        "depth": f"media/{sid}_depth.png",
        "thermal": f"media/{sid}_thermal.png",
        "imu": f"media/{sid}_imu.npy",
        "imu_csv": f"media/{sid}_imu.csv",
        "pointcloud": f"media/{sid}_points.npy",
    }


def render_scene(scene: Scene, config: WorldConfig) -> dict[str, np.ndarray]:
    """Every modality of ``scene`` as arrays: image [H,W,3] u8, video [T,H,W,3] u8, depth [H,W] u16 (mm),
    thermal [H,W] u8, audio [N] f32, imu [6, M] f32, pointcloud [P, 6] f32 (the object's segment of depth + image)."""
    seed, index, size = scene.seed, scene.index, config.size
    key = geometry(scene, size, np.array([scene.mid_time]), moving_camera=False)
    video_geo = geometry(scene, size, np.arange(config.frames) / config.fps, moving_camera=True)
    image = render_rgb(scene, key, size, scene_rng(seed, index, "image"))[0]
    depth = render_depth(scene, key, size, scene_rng(seed, index, "depth"))[0]
    return {
        "image": image,
        "video": render_rgb(scene, video_geo, size, scene_rng(seed, index, "video")),
        "depth": depth,
        "thermal": render_thermal(scene, key, size, scene_rng(seed, index, "thermal"))[0],
        "audio": render_audio(scene, config.duration, config.sample_rate, scene_rng(seed, index, "audio")),
        "imu": render_imu(scene, config.duration, config.imu_rate, scene_rng(seed, index, "imu")),
        "pointcloud": object_point_cloud(depth, image, key["alpha"][0]),
    }


def _write_scene(task: tuple[Path, int, int, str, WorldConfig]) -> dict:
    out, seed, index, split, config = task
    scene = sample_scene(seed, index, config)
    media = render_scene(scene, config)
    sid = scene_id(index)
    paths = media_paths(sid)
    files = {
        "image": png_bytes(media["image"]),
        "depth": png_bytes(media["depth"]),
        "thermal": png_bytes(media["thermal"]),
        "audio": wav_bytes(media["audio"], config.sample_rate),
        "imu": npy_bytes(media["imu"]),
        "imu_csv": imu_csv_bytes(media["imu"], config.imu_rate),
        "pointcloud": npy_bytes(media["pointcloud"]),
    }
    for name, data in files.items():
        (out / paths[name]).write_bytes(data)
    write_mp4(out / paths["video"], media["video"], config.fps, media["audio"], config.sample_rate, config.video_codec)
    rng = scene_rng(seed, index, "captions")
    factors = scene.factors
    return {
        "id": sid,
        "split": split,
        "text": caption(factors, "text", rng),
        "captions": {m: caption(factors, m, rng) for m in (*MODALITIES, *DERIVED_MODALITIES)},
        "factors": factors.as_dict(),
        **paths,
    }


def assign_splits(n: int, seed: int, fractions: Sequence[float]) -> list[str]:
    """Exact-count train/val/test split of ``n`` scenes from a seeded permutation (val and test rounded)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"split fractions must be three non-negative numbers (train, val, test), got {fractions}")
    total = float(sum(fractions))
    n_val = int(round(n * fractions[1] / total))
    n_test = min(n - n_val, int(round(n * fractions[2] / total)))
    labels = np.array(["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test)
    order = np.random.default_rng([int(seed), n, 0x5B11]).permutation(n)
    return [str(s) for s in labels[np.argsort(order)]]


def world_spec(seed: int, n: int, config: WorldConfig, fractions: Sequence[float], counts: dict[str, int]) -> dict:
    """The content of ``world.json``."""
    return {
        "generator": "bind_world",
        "version": WORLD_VERSION,
        "seed": seed,
        "n": n,
        "config": {**asdict(config), "duration": config.duration},
        "splits": dict(zip(SPLITS, (float(f) for f in fractions))),
        "counts": counts,
        "factors": {k: list(v) for k, v in FACTORS.items()},
        "reveals": {k: list(v) for k, v in REVEALS.items()},
        "captions": caption_spec(),
        "media": {
            "image": "PNG RGB uint8, the keyframe at mid-clip from a still camera",
            "video": f"MP4 {config.video_codec} yuv420p {config.frames} frames at {config.fps} fps + AAC mono audio",
            "audio": f"WAV PCM 16-bit mono {config.sample_rate} Hz",
            "depth": "PNG uint16 (I;16), millimetres, 0 = invalid, aligned with the image",
            "thermal": f"PNG uint8, linear in temperature: value = (T_celsius - {THERMAL_RANGE_C[0]}) / "
            f"{THERMAL_RANGE_C[1] - THERMAL_RANGE_C[0]} * 255, aligned with the image",
            "imu": f"NPY float32 [6, {int(round(config.duration * config.imu_rate))}]: acc xyz m/s^2 (specific "
            f"force, +9.81 on z at rest), gyro xyz rad/s, {config.imu_rate} Hz, device frame x forward y left "
            "z up",
            "imu_csv": "CSV timestamp,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z (seconds, m/s^2, rad/s)",
            "pointcloud": "NPY float32 [N, 6]: the object's valid depth pixels back-projected through the camera "
            "(x right, y forward, z up, metres) + the image's rgb in [0, 1] (bind_world.pointcloud)",
        },
    }


def _tasks(out: Path, seed: int, splits: list[str], config: WorldConfig) -> Iterator[tuple]:
    for i, split in enumerate(splits):
        yield out, seed, i, split, config


def generate(
    out: str | os.PathLike,
    n: int,
    seed: int = 0,
    workers: int | None = None,
    config: WorldConfig | None = None,
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> Path:
    """Generate ``n`` scenes of world ``seed`` under ``out``; returns the path of ``manifest.jsonl``. The output is
    byte-identical for any worker count. Files of the same names under ``out`` are overwritten, others are left in
    place.

    Args:
        out: output directory (manifest.jsonl, world.json, media/)
        n: number of scenes
        seed: world seed (same seed, same bytes)
        workers: processes rendering in parallel (default: all CPUs; 1 renders in this process)
        config: resolutions and rates of the media
        splits: train, val and test fractions (normalised)
    """
    config = config or WorldConfig()
    config.validate()
    if n < 1:
        raise ValueError(f"number of scenes must be >= 1, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    (out / "media").mkdir(parents=True, exist_ok=True)
    labels = assign_splits(n, seed, splits)
    start = time.perf_counter()
    records: list[dict] = []
    step = max(1, n // 10)
    if workers == 1 or n == 1:
        results: Iterator[dict] = map(_write_scene, _tasks(out, seed, labels, config))
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=min(workers, n))
        chunk = max(1, min(16, n // (4 * workers)))
        results = pool.map(_write_scene, _tasks(out, seed, labels, config), chunksize=chunk)
    try:
        for record in results:
            records.append(record)
            if len(records) % step == 0:
                log.info("world: %d/%d scenes (%.1fs)", len(records), n, time.perf_counter() - start)
    finally:
        if pool is not None:
            pool.shutdown()
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    counts = {s: labels.count(s) for s in SPLITS}
    (out / "world.json").write_text(json.dumps(world_spec(seed, n, config, splits, counts), indent=2) + "\n")
    return manifest


def read_manifest(path: str | os.PathLike, split: str | None = None, absolute: bool = False) -> list[dict]:
    """Records of a world manifest (optionally one split; ``absolute`` resolves media paths)."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if split is not None:
        records = [r for r in records if r["split"] == split]
    if absolute:
        for r in records:
            for key in MANIFEST_KEYS[5:]:
                r[key] = str(path.parent / r[key])
    return records
