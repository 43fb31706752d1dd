"""Depth plugin: real 16-bit PNG / .npy / .npz files -> load -> transform -> encode on bind-tiny; the ImageBind
disparity and LanguageBind metric conversions against hand-computed values; missing-depth handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import bind
from bind.factory import expand_config
from bind.model import BindModel
from bind.registry import get_modality, model_config_dict
from modalities.depth import depth_to_unit_range
from modalities.image import CLIP_MEAN, CLIP_STD

DEPTH = get_modality("depth")
FOCAL, BASELINE = 518.857901, 0.075


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return bind.create_model("bind-tiny", modalities=["depth"]).eval()


def write_png_mm(path, depth_mm: np.ndarray):
    Image.fromarray(depth_mm.astype(np.uint16)).save(path)
    return path


def constant_mm(value: int, h: int = 48, w: int = 80) -> np.ndarray:
    return np.full((h, w), value, dtype=np.uint16)


def test_png_is_16bit_millimetres_with_zero_as_missing(tmp_path):
    mm = constant_mm(2500)
    mm[0, :5] = 0
    raw = DEPTH.load(write_png_mm(tmp_path / "d.png", mm), DEPTH.preprocess_config())
    assert raw.dtype == np.float32 and raw.shape == (48, 80)
    assert np.isnan(raw[0, :5]).all()
    np.testing.assert_allclose(raw[1:], 2.5, rtol=1e-6)


@pytest.mark.parametrize("depth_mm", [500, 2000, 7000])
def test_imagebind_disparity_matches_hand_computation(tmp_path, model, depth_mm):
    cfg = model.preprocess_config("depth")
    assert (cfg.mode, cfg.channels, cfg.crop_size) == ("disparity", 1, 64)
    x = DEPTH.process(write_png_mm(tmp_path / "d.png", constant_mm(depth_mm)), cfg)
    expected = min(max(BASELINE * FOCAL / min(max(depth_mm / 1000, 0.01), 50.0), 0.01), 75.0) / 75.0
    assert x.shape == (1, 64, 64)
    torch.testing.assert_close(x, torch.full_like(x, expected), rtol=1e-5, atol=1e-6)


def test_disparity_clamps_near_depth_to_75():
    cfg = DEPTH.preprocess_config()
    unit = DEPTH.transform(np.full((8, 8), 0.2, np.float32), cfg)  # 0.075 * 518.86 / 0.2 = 194.6 -> 75
    torch.testing.assert_close(unit, torch.ones(1, 224, 224))


@pytest.mark.parametrize("depth_mm,metric", [(2000, 0.2), (500, 0.05), (15000, 1.0), (5, 0.001)])
def test_languagebind_metric_matches_hand_computation(tmp_path, depth_mm, metric):
    cfg = DEPTH.preprocess_config({"preset": "languagebind", "size": 32, "crop_size": 32})
    x = DEPTH.process(write_png_mm(tmp_path / "d.png", constant_mm(depth_mm)), cfg)
    assert x.shape == (3, 32, 32)
    expected = (metric - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(x[:, 5, 7], expected, rtol=1e-4, atol=1e-4)


def test_far_depth_is_clipped_at_50m_and_sun_rgbd_bit_rotation(tmp_path):
    cfg = DEPTH.preprocess_config()
    far = DEPTH.transform(np.full((4, 4), 400.0, np.float32), cfg)
    torch.testing.assert_close(far.mean(), torch.tensor(BASELINE * FOCAL / 50 / 75))
    mm = constant_mm(2000)
    rotated = ((mm << 3) | (mm >> 13)).astype(np.uint16)  # SUN RGB-D storage
    path = write_png_mm(tmp_path / "sun.png", rotated)
    np.testing.assert_allclose(DEPTH.load(path, DEPTH.preprocess_config({"png_rotate_bits": 3})), 2.0)
    np.testing.assert_allclose(DEPTH.load(path, cfg), 16.0)


def test_npy_npz_and_arrays_are_metres_and_agree_with_png(tmp_path, model):
    cfg = model.preprocess_config("depth")
    rng = np.random.default_rng(0)
    mm = rng.integers(400, 9000, size=(60, 90)).astype(np.uint16)
    metres = mm.astype(np.float32) / 1000
    np.save(tmp_path / "d.npy", metres)
    np.savez(tmp_path / "d.npz", depth=metres, rgb=np.zeros((60, 90, 3)))
    np.savez_compressed(tmp_path / "single.npz", anything=metres)
    sources = [
        write_png_mm(tmp_path / "d.png", mm),
        tmp_path / "d.npy",
        tmp_path / "d.npz",
        tmp_path / "single.npz",
        metres,
        torch.from_numpy(metres),
        (tmp_path / "d.npy").read_bytes(),
    ]
    outs = [DEPTH.process(s, cfg) for s in sources]
    for x in outs[1:]:
        torch.testing.assert_close(x, outs[0], rtol=1e-5, atol=1e-6)
    assert outs[0].std() > 0


def test_invalid_depth_nearest_vs_farthest():
    depth = np.full((4, 4), 3.0, np.float32)
    depth[0] = np.nan  # missing
    for mode, near, far in (("disparity", 1.0, BASELINE * FOCAL / 50 / 75), ("metric", 0.01 / 50, 1.0)):
        nearest = DEPTH.preprocess_config({"mode": mode, "invalid": "nearest"})
        farthest = DEPTH.preprocess_config({"mode": mode, "invalid": "farthest"})
        a, b = depth_to_unit_range(depth, nearest), depth_to_unit_range(depth, farthest)
        torch.testing.assert_close(a[0], torch.full((4,), near))
        torch.testing.assert_close(b[0], torch.full((4,), far))
        torch.testing.assert_close(a[1:], b[1:])


def test_invalid_depth_inpaint_takes_the_nearest_valid_pixel():
    depth = np.full((7, 7), 4.0, np.float32)
    depth[1:6, 1:6] = 1.5  # an object in front of a wall
    depth[2, 3] = depth[3, 3] = depth[0, 6] = np.nan  # dropouts inside the object and on the wall
    cfg = DEPTH.preprocess_config({"mode": "metric", "invalid": "inpaint", "max_depth_m": 10.0})
    want = np.where(np.isnan(depth), 1.5, depth)
    want[0, 6] = 4.0
    torch.testing.assert_close(depth_to_unit_range(depth, cfg) * 10.0, torch.from_numpy(want))
    farthest = DEPTH.preprocess_config({"mode": "metric", "invalid": "farthest", "max_depth_m": 10.0})
    assert depth_to_unit_range(depth, farthest)[3, 3] == 1.0  # the object's hole read as the far wall
    empty = np.full((3, 3), np.nan, np.float32)  # nothing to take from: farthest
    torch.testing.assert_close(depth_to_unit_range(empty, cfg), torch.ones(3, 3))


def test_eval_deterministic_train_random_but_seeded(tmp_path, model):
    cfg = model.preprocess_config("depth")
    rng = np.random.default_rng(1)
    raw = DEPTH.load(write_png_mm(tmp_path / "d.png", rng.integers(300, 8000, (70, 100))), cfg)
    torch.testing.assert_close(DEPTH.transform(raw, cfg), DEPTH.transform(raw, cfg), rtol=0, atol=0)
    torch.manual_seed(3)
    a = DEPTH.transform(raw, cfg, train=True)
    torch.manual_seed(3)
    b = DEPTH.transform(raw, cfg, train=True)
    assert a.shape == (1, 64, 64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_encode_files_on_bind_tiny(tmp_path, model):
    rng = np.random.default_rng(2)
    mm = rng.integers(400, 9000, size=(50, 70))
    np.save(tmp_path / "d.npy", mm / 1000.0)
    np.savez(tmp_path / "d.npz", depth=mm / 1000.0)
    sources = [
        write_png_mm(tmp_path / "d.png", mm),
        tmp_path / "d.npy",
        tmp_path / "d.npz",
        write_png_mm(tmp_path / "other.png", constant_mm(1200)),
    ]
    emb = model.embed_sources("depth", sources)
    assert emb.shape == (4, model.embed_dim) and torch.isfinite(emb).all()
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(emb[0], emb[1], atol=1e-5, rtol=1e-5)  # same depth, PNG vs npy
    assert (emb[0] - emb[3]).abs().max() > 1e-4


def test_languagebind_preset_builds_a_three_channel_stem(tmp_path):
    raw = model_config_dict("bind-tiny")
    raw["encoders"] = {
        "depth": {**raw["encoders"]["depth"], "preprocess": {"preset": "languagebind", "size": 32, "crop_size": 32}}
    }
    m = BindModel(expand_config(raw)).eval()
    assert m.encoder("depth").cfg.stem["in_chans"] == 3
    emb = m.embed_sources("depth", [write_png_mm(tmp_path / "d.png", constant_mm(1500))])
    assert emb.shape == (1, 64)
    raw["encoders"]["depth"]["stem"] = {"patch_size": 16, "in_chans": 1}
    with pytest.raises(ValueError, match="in_chans=1 but preprocessing produces 3"):
        BindModel(expand_config(raw))


def test_preprocess_fields_are_validated():
    with pytest.raises(ValueError, match="mode"):
        DEPTH.preprocess_config({"mode": "inverse"})
    with pytest.raises(ValueError, match="mean has 2 values"):
        DEPTH.preprocess_config({"mean": [0.1, 0.2]})
    cfg = DEPTH.preprocess_config({"focal_px": 600.0, "baseline_m": 0.1})
    x = DEPTH.transform(np.full((4, 4), 4.0, np.float32), cfg)
    torch.testing.assert_close(x.mean(), torch.tensor(0.1 * 600 / 4.0 / 75))


def test_bench_data_suite_measures_every_format(tmp_path):
    from bind.bench.data import run_data_bench

    result = run_data_bench(
        "bind-tiny", ["depth", "thermal", "imu"], items=2, files=1, loader_workers=[], directory=tmp_path
    )
    rows = {(r["modality"], r["format"]): r for r in result["results"]}
    expected = {(m, f) for m in ("depth", "thermal", "imu") for f in get_modality(m).sample_formats}
    assert set(rows) == expected and len(expected) == 6, result["skipped"]
    assert rows[("depth", "png16")]["sample_shape"] == [1, 64, 64]
    assert rows[("imu", "csv")]["sample_shape"] == [6, 200]
    assert all(r["items_per_s"] > 0 and r["workers"] == 1 for r in rows.values())


def test_depth_thermal_imu_survive_save_and_reload(tmp_path):
    torch.manual_seed(0)
    m = bind.create_model("bind-tiny", modalities=["depth", "thermal", "imu"]).eval()
    inputs = {mod: get_modality(mod).example_input(m.encoder(mod).cfg, 2) for mod in m.modalities}
    before = m.embed(inputs)
    again = bind.load_model(m.save_pretrained(tmp_path / "model")).eval()
    for mod, emb in again.embed(inputs).items():
        torch.testing.assert_close(emb, before[mod])
