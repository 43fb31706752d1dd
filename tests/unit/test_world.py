"""The procedural world: byte determinism across worker counts, manifest schema, every file decodes, and each
factor shows in the signals of the modalities that should reveal it."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import re
from pathlib import Path

import av
import decord
import numpy as np
import pytest
import soundfile as sf
from bind_world import (
    FACTORS,
    MANIFEST_KEYS,
    MODALITIES,
    REVEALS,
    SceneFactors,
    WorldConfig,
    caption,
    generate,
    paraphrase,
    read_manifest,
    render_scene,
    sample_scene,
)
from bind_world.captions import PARAPHRASE_PHRASES, PARAPHRASE_TEMPLATES, PHRASES, TEMPLATES
from bind_world.generator import assign_splits
from bind_world.pointcloud import back_project
from bind_world.render import geometry, thermal_to_celsius
from bind_world.scene import DERIVED_MODALITIES
from PIL import Image

N, SEED = 8, 7
CONFIG = WorldConfig()
BASE = dict(shape="sphere", colour="red", motion="static", temperature="warm", distance="mid", activity="still")


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world_w1")
    generate(out, N, seed=SEED, workers=1)
    return out


def _render(index: int, **factors):
    scene = sample_scene(0, index, CONFIG, factors=SceneFactors(**{**BASE, **factors}))
    return scene, render_scene(scene, CONFIG)


def _object_mask(scene, threshold: float = 0.99) -> np.ndarray:
    return geometry(scene, CONFIG.size, np.array([scene.mid_time]), moving_camera=False)["alpha"][0] >= threshold


# --- determinism ---------------------------------------------------------------------------------------------------


def test_same_seed_same_bytes_for_any_worker_count(world, tmp_path):
    generate(tmp_path / "w2", N, seed=SEED, workers=2)
    first, second = _hashes(world), _hashes(tmp_path / "w2")
    assert len(first) == 8 * N + 2  # 8 files per scene (point cloud included) + manifest.jsonl + world.json
    assert first == second


_GENERATE = """
import ctypes, ctypes.util, glob, os, sys
import av
if sys.argv[2] == "c-only":  # FFmpeg without SIMD (swscale / AAC / MPEG-4 take their C paths), as on another CPU
    libs = glob.glob(os.path.join(os.path.dirname(av.__file__), os.pardir, "av.libs", "libavutil*"))
    ctypes.CDLL(libs[0] if libs else ctypes.util.find_library("avutil")).av_force_cpu_flags(0)
import torch
torch.set_num_threads(int(sys.argv[3]))
from bind_world import WorldConfig, generate
generate(os.path.join(sys.argv[1], "x264"), 2, seed=int(sys.argv[4]), workers=1)
generate(os.path.join(sys.argv[1], "mpeg4"), 1, seed=int(sys.argv[4]), workers=1,
         config=WorldConfig(size=32, frames=8, video_codec="mpeg4"))
"""


def test_world_bytes_do_not_depend_on_the_process_or_cpu_paths(tmp_path):
    """The same world, byte for byte, from fresh processes with different thread counts, torch CPU kernels
    (``ATEN_CPU_CAPABILITY``), OpenBLAS kernels, hash seeds and FFmpeg SIMD on or off. (x264's AVX-512 kernels
    changed the MP4 bytes from one process to the next; swscale's SIMD rounded RGB->YUV differently from its C
    path, as another CPU would.)"""
    import os
    import subprocess
    import sys

    variants = [
        ("default", "1", {}),
        (
            "default",
            "2",
            {
                "OMP_NUM_THREADS": "2",
                "ATEN_CPU_CAPABILITY": "default",
                "PYTHONHASHSEED": "1",
                "OPENBLAS_CORETYPE": "Prescott",
            },
        ),
        ("default", "1", {"ATEN_CPU_CAPABILITY": "avx2", "PYTHONHASHSEED": "2", "OPENBLAS_CORETYPE": "Haswell"}),
        ("c-only", "1", {"PYTHONHASHSEED": "3"}),
    ]
    worlds = []
    for i, (ffmpeg, threads, env) in enumerate(variants):
        out = tmp_path / str(i)
        subprocess.run(
            [sys.executable, "-c", _GENERATE, str(out), ffmpeg, threads, str(SEED)],
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", **env},
            timeout=300,
        )
        worlds.append(_hashes(out))
    assert len(worlds[0]) == (8 * 2 + 2) + (8 + 2)  # 8 files per scene (7 media + point cloud) + manifest + world.json
    for variant, world in zip(variants[1:], worlds[1:]):
        assert world == worlds[0], (variant, sorted(k for k in world if world[k] != worlds[0].get(k)))


def test_rgb_to_yuv420p_matches_bt601():
    from bind_world.media import rgb_to_yuv420p

    for rgb in [(0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255), (12, 200, 97)]:
        frame = np.broadcast_to(np.array(rgb, np.uint8), (4, 6, 3))
        yuv = rgb_to_yuv420p(frame).astype(int)
        assert yuv.shape == (6, 6)
        reference = (
            av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            .reformat(format="yuv420p")
            .to_ndarray()
            .astype(int)
        )  # swscale's BT.601 limited range
        assert np.abs(yuv - reference).max() <= 1, rgb
    decoded = (
        av.VideoFrame.from_ndarray(rgb_to_yuv420p(np.full((4, 4, 3), (40, 90, 200), np.uint8)), format="yuv420p")
        .to_ndarray(format="rgb24")
        .astype(int)
    )
    assert np.abs(decoded - (40, 90, 200)).max() <= 2


def test_different_seed_different_world(world, tmp_path):
    generate(tmp_path / "other", 2, seed=SEED + 1, workers=1)
    other = _hashes(tmp_path / "other")
    assert other["media/000000.png"] != _hashes(world)["media/000000.png"]


# --- manifest and world.json ---------------------------------------------------------------------------------------


def test_manifest_schema(world):
    lines = (world / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == N
    for i, line in enumerate(lines):
        record = json.loads(line)
        assert tuple(record) == MANIFEST_KEYS
        assert record["id"] == f"{i:06d}"
        assert record["split"] in ("train", "val", "test")
        assert set(record["captions"]) == set(MODALITIES) | set(DERIVED_MODALITIES)
        assert all(isinstance(c, str) and c for c in record["captions"].values()) and record["text"]
        factors = SceneFactors(**record["factors"])  # validates every value
        assert set(record["factors"]) == set(FACTORS)
        for key in MANIFEST_KEYS[5:]:
            assert not Path(record[key]).is_absolute() and (world / record[key]).is_file()
        # the per-modality caption names the revealed factors (checked through the phrase vocabularies)
        for modality in (*MODALITIES, *DERIVED_MODALITIES):
            text = record["captions"][modality]
            for name in REVEALS[modality]:
                assert any(p in text for p in PHRASES[name][getattr(factors, name)]), (modality, name, text)
    spec = json.loads((world / "world.json").read_text())
    assert spec["seed"] == SEED and spec["n"] == N and spec["version"]
    assert spec["factors"] == {k: list(v) for k, v in FACTORS.items()}
    assert spec["captions"]["templates"]["image"] == list(TEMPLATES["image"])
    assert sum(spec["counts"].values()) == N
    splits = [json.loads(line)["split"] for line in lines]
    assert {s: splits.count(s) for s in ("train", "val", "test")} == spec["counts"]
    assert len(read_manifest(world, split="train")) == spec["counts"]["train"]


@pytest.mark.parametrize("n,fractions", [(10, (0.8, 0.1, 0.1)), (100, (0.5, 0.25, 0.25)), (7, (1, 0, 0))])
def test_splits_have_exact_counts(n, fractions):
    labels = assign_splits(n, 0, fractions)
    total = sum(fractions)
    assert labels.count("val") == round(n * fractions[1] / total)
    assert labels.count("test") == round(n * fractions[2] / total)
    assert len(labels) == n and labels == assign_splits(n, 0, fractions)


# --- every file decodes --------------------------------------------------------------------------------------------


def test_every_file_decodes(world):
    size, frames = CONFIG.size, CONFIG.frames
    n_audio, n_imu = int(CONFIG.duration * CONFIG.sample_rate), int(CONFIG.duration * CONFIG.imu_rate)
    for r in read_manifest(world, absolute=True):
        img = Image.open(r["image"])
        assert img.mode == "RGB" and img.size == (size, size)
        depth = Image.open(r["depth"])
        assert depth.mode == "I;16" and depth.size == (size, size)
        depth_mm = np.asarray(depth)
        assert depth_mm.dtype == np.uint16 and 500 < np.median(depth_mm[depth_mm > 0]) < 10000
        thermal = Image.open(r["thermal"])
        assert thermal.mode == "L" and thermal.size == (size, size)
        wav, sr = sf.read(r["audio"], dtype="float32")
        assert sr == CONFIG.sample_rate and wav.shape == (n_audio,) and 0 < np.abs(wav).max() <= 1
        imu = np.load(r["imu"])
        assert imu.dtype == np.float32 and imu.shape == (6, n_imu)
        with open(r["imu_csv"]) as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["timestamp", "acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
        table = np.array(rows[1:], dtype=np.float64)
        np.testing.assert_allclose(table[:, 0], np.arange(n_imu) / CONFIG.imu_rate, atol=1e-6)
        np.testing.assert_allclose(table[:, 1:].T, imu, atol=1e-5)
        video = decord.VideoReader(r["video"])
        assert len(video) == frames and video[0].shape == (size, size, 3)
        with av.open(r["video"]) as container:
            assert container.streams.video[0].codec_context.name == "h264"
            stream = container.streams.audio[0]
            assert stream.codec_context.name == "aac" and stream.rate == CONFIG.sample_rate
            track = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)[0]
        assert np.corrcoef(track[:n_audio], wav)[0, 1] > 0.99  # the mp4's audio is the wav, aligned


def test_video_and_image_match_the_render(world):
    r = read_manifest(world, absolute=True)[0]
    media = render_scene(sample_scene(SEED, 0, CONFIG), CONFIG)
    np.testing.assert_array_equal(np.asarray(Image.open(r["image"])), media["image"])
    np.testing.assert_array_equal(np.asarray(Image.open(r["depth"])), media["depth"])
    frames = decord.VideoReader(r["video"]).get_batch(list(range(CONFIG.frames))).asnumpy().astype(np.float64)
    psnr = 10 * np.log10(255**2 / np.mean((frames - media["video"]) ** 2))
    assert psnr > 28


def test_mpeg4_codec_decodes(tmp_path):
    generate(tmp_path, 1, seed=1, workers=1, config=WorldConfig(video_codec="mpeg4", size=32, frames=8))
    r = read_manifest(tmp_path, absolute=True)[0]
    video = decord.VideoReader(r["video"])
    assert len(video) == 8 and video[0].shape == (32, 32, 3)


# --- factors show in the right signals -----------------------------------------------------------------------------


def test_depth_follows_distance():
    medians = {}
    for distance in FACTORS["distance"]:
        values = []
        for i in range(3):
            scene, media = _render(i, distance=distance)
            obj = media["depth"][_object_mask(scene)]
            values.append(np.median(obj[obj > 0]) / 1000)
            assert abs(values[-1] - scene.distance_m) < scene.radius_m + 0.05  # the surface lies within one radius
        medians[distance] = values
    assert max(medians["near"]) < min(medians["mid"]) and max(medians["mid"]) < min(medians["far"])


def test_thermal_follows_temperature():
    means = {}
    for temperature in FACTORS["temperature"]:
        means[temperature] = []
        for i in range(3):
            scene, media = _render(i, temperature=temperature)
            obj = thermal_to_celsius(media["thermal"][_object_mask(scene)]).mean()
            background = thermal_to_celsius(media["thermal"][~_object_mask(scene, 0.01)]).mean()
            means[temperature].append(obj)
            assert (obj < background) if temperature == "cold" else (obj > background)
    assert max(means["cold"]) < min(means["warm"]) and max(means["warm"]) < min(means["hot"])


def test_imu_energy_follows_activity():
    energy, yaw_rate = {}, {}
    for activity in FACTORS["activity"]:
        stats = [_render(i, activity=activity)[1]["imu"] for i in range(3)]
        energy[activity] = [np.linalg.norm(imu[:3], axis=0).std() for imu in stats]
        yaw_rate[activity] = [abs(imu[5].mean()) for imu in stats]
        for imu in stats:  # gravity on z (within the mounting tilt) when averaged over the clip
            assert 9.0 < imu[2].mean() < 10.5
    assert max(energy["still"]) < min(energy["walking"]) and max(energy["walking"]) < min(energy["running"])
    assert min(yaw_rate["turning"]) > 0.2 > max(max(yaw_rate[a]) for a in ("still", "walking", "running"))


def _log_bands(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    power = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / sample_rate)
    edges = np.geomspace(50, sample_rate / 2, 41)
    bands = np.log(np.array([power[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in itertools.pairwise(edges)]) + 1e-6)
    return (bands - bands.mean()) / bands.std()


def test_audio_spectrum_identifies_shape_and_level_follows_distance():
    feats, labels = [], []
    for shape in FACTORS["shape"]:
        for i, distance in enumerate(FACTORS["distance"]):
            feats.append(_log_bands(_render(i, shape=shape, distance=distance)[1]["audio"], CONFIG.sample_rate))
            labels.append(shape)
    sim = np.array(feats) @ np.array(feats).T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(axis=1)
    assert all(labels[j] == labels[i] for i, j in enumerate(nearest))  # 1-NN over nuisances and distances
    rms = {
        d: [float(np.sqrt(np.mean(_render(i, shape="cone", distance=d)[1]["audio"] ** 2))) for i in range(3)]
        for d in FACTORS["distance"]
    }
    assert np.mean(rms["near"]) > np.mean(rms["mid"]) > np.mean(rms["far"])


def test_video_shows_motion_and_camera_shake():
    def change(**factors):  # mean absolute difference between first and last frame
        video = _render(1, **factors)[1]["video"].astype(np.float64)
        return np.abs(video[-1] - video[0]).mean()

    static = change(motion="static", distance="near")
    assert change(motion="left", distance="near") > 2 * static
    assert change(motion="rotating", distance="near", shape="cube") > 2 * static
    assert change(motion="static", distance="near", activity="turning") > 2 * static

    def red_x(frame: np.ndarray) -> float:  # centroid column of the (red) object
        f = frame.astype(int)
        return float(np.nonzero((f[..., 0] - f[..., 1] > 80) & (f[..., 0] - f[..., 2] > 80))[1].mean())

    for motion, sign in (("left", -1), ("right", 1)):
        video = _render(2, motion=motion, distance="near")[1]["video"]
        assert sign * (red_x(video[-1]) - red_x(video[0])) > 0.15 * CONFIG.size


# --- captions ------------------------------------------------------------------------------------------------------


def _phrase_in(phrase: str, text: str) -> bool:
    return re.search(rf"\b{re.escape(phrase)}\b", text) is not None


@pytest.mark.parametrize("modality", [*MODALITIES, *DERIVED_MODALITIES, "text"])
def test_captions_name_exactly_the_revealed_factors(modality):
    rng = np.random.default_rng(0)
    for _ in range(20):
        factors = sample_scene(0, int(rng.integers(1000))).factors
        named = FACTORS if modality == "text" else REVEALS[modality]
        for text, phrases in (
            (caption(factors, modality, rng), PHRASES),
            (paraphrase(factors, modality, rng), PARAPHRASE_PHRASES),
        ):
            for name in FACTORS:
                own = any(_phrase_in(p, text) for p in phrases[name][getattr(factors, name)])
                assert own == (name in named), (modality, name, text)
            assert not re.search(r"\ba [aeiou]", text), text


def test_paraphrases_never_appear_in_training():
    for name, values in PHRASES.items():
        train = {p for ps in values.values() for p in ps}
        held_out = {p for ps in PARAPHRASE_PHRASES[name].values() for p in ps}
        assert not train & held_out
    for modality, templates in TEMPLATES.items():
        assert not set(templates) & set(PARAPHRASE_TEMPLATES[modality])
    factors = SceneFactors(**BASE)
    every_training = set()
    for modality in TEMPLATES:
        rng = np.random.default_rng(1)
        every_training |= {caption(factors, modality, rng) for _ in range(200)}
        rng = np.random.default_rng(2)
        assert not {paraphrase(factors, modality, rng) for _ in range(50)} & every_training
    assert caption(factors, "image") == "a photo of a red sphere at a medium distance."  # rng=None: canonical


# --- API and CLI errors --------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        SceneFactors(**{**BASE, "shape": "banana"})
    with pytest.raises(ValueError, match="even"):
        generate(tmp_path, 2, config=WorldConfig(size=63))
    with pytest.raises(ValueError, match=">= 1"):
        generate(tmp_path, 0)
    with pytest.raises(ValueError, match="modality"):
        caption(SceneFactors(**BASE), "smell")


def test_cli_generate(tmp_path, capsys):
    from bind.cli import main

    out = tmp_path / "cli_world"
    assert (
        main(
            [
                "world",
                "generate",
                "--out",
                str(out),
                "--n",
                "3",
                "--seed",
                "5",
                "--workers",
                "1",
                "--size",
                "32",
                "--frames",
                "8",
                "--splits",
                "1",
                "1",
                "1",
            ]
        )
        == 0
    )
    assert "wrote 3 scenes" in capsys.readouterr().out
    spec = json.loads((out / "world.json").read_text())
    assert spec["config"]["size"] == 32 and spec["counts"] == {"train": 1, "val": 1, "test": 1}
    assert np.asarray(Image.open(out / "media/000000.png")).shape == (32, 32, 3)
    assert main(["world", "generate", "--out", str(out), "--n", "0"]) == 1
    assert "number of scenes" in capsys.readouterr().err


# --- point clouds ----------------------------------------------------------------------------------------------------


def test_point_cloud_back_projects_depth_through_the_camera(world):
    size = 16
    depth = np.full((size, size), 2000, dtype=np.uint16)
    depth[0, 0] = 0  # invalid: no point
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[size - 1, size - 1] = (255, 0, 0)
    pts = back_project(depth, image)
    assert pts.shape == (size * size - 1, 6) and pts.dtype == np.float32
    assert np.allclose(pts[:, 1], 2.0)  # y: forward, metres
    half = (size - 1) / 2 * 2.0 / size  # pixel (size-1)/2 from the centre at f = size px, depth 2 m
    assert np.isclose(pts[:, 0].max(), half) and np.isclose(pts[:, 2].min(), -half)  # x right, z up
    assert np.allclose(pts[-1], [half, 2.0, -half, 1, 0, 0])  # bottom-right pixel: right, below, red
    assert len(back_project(depth, image, np.eye(size, dtype=bool))) == size - 1  # a mask keeps its valid pixels


def test_world_point_cloud_is_the_objects_segment_at_its_distance(world):
    for i, record in enumerate(json.loads(line) for line in (world / "manifest.jsonl").read_text().splitlines()):
        cloud = np.load(world / record["pointcloud"])
        scene = sample_scene(SEED, i, CONFIG)
        media = render_scene(scene, CONFIG)
        assert np.array_equal(cloud, media["pointcloud"]) and cloud.shape[1] == 6
        mask = _object_mask(scene, 0.5) & (media["depth"] > 0)
        assert len(cloud) == mask.sum() > 10
        # the surface facing the camera: between the object's centre distance and one radius nearer
        near, far = scene.distance_m - 1.3 * scene.radius_m, scene.distance_m + 0.05
        assert np.all((cloud[:, 1] > near) & (cloud[:, 1] < far))
        assert np.allclose(cloud[:, 3:].mean(0), media["image"][mask].mean(0) / 255, atol=1e-5)
