"""Thermal plugin: real 8- and 16-bit PNG / TIFF files -> load -> transform -> encode on bind-tiny; the documented
scaling to [0, 1] (8-bit / 255, 16-bit min-max, explicit range), ImageBind 1-channel and LanguageBind 3-channel
CLIP normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import bind
from bind.registry import get_modality
from modalities.image import CLIP_MEAN, CLIP_STD

THERMAL = get_modality("thermal")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return bind.create_model("bind-tiny", modalities=["thermal"]).eval()


def write(path, array: np.ndarray):
    Image.fromarray(array).save(path)
    return path


def radiometric(h: int = 60, w: int = 80, seed: int = 0) -> np.ndarray:
    """Raw 16-bit counts in a narrow band (like FLIR radiometric TIFFs)."""
    rng = np.random.default_rng(seed)
    return (7000 + rng.integers(0, 900, size=(h, w))).astype(np.uint16)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_8bit_is_divided_by_255(tmp_path, model, ext):
    path = write(tmp_path / f"t8.{ext}", np.full((40, 60), 51, np.uint8))
    cfg = model.preprocess_config("thermal")
    raw = THERMAL.load(path, cfg)
    np.testing.assert_allclose(raw, 0.2, rtol=1e-6)
    x = THERMAL.transform(raw, cfg)
    assert x.shape == (1, 64, 64)
    torch.testing.assert_close(x, torch.full_like(x, 0.2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16bit_auto_is_per_image_minmax(tmp_path, ext):
    counts = radiometric()
    path = write(tmp_path / f"t16.{ext}", counts)
    assert Image.open(path).mode.startswith("I;16")
    raw = THERMAL.load(path, THERMAL.preprocess_config())
    lo, hi = counts.min(), counts.max()
    np.testing.assert_allclose(raw, (counts.astype(np.float32) - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    assert raw.min() == 0.0 and raw.max() == 1.0


def test_16bit_range_scaling_divides_by_65535(tmp_path):
    path = write(tmp_path / "t16.png", np.full((10, 10), 32768, np.uint16))
    raw = THERMAL.load(path, THERMAL.preprocess_config({"scaling": "range"}))
    np.testing.assert_allclose(raw, 32768 / 65535, rtol=1e-6)
    constant = THERMAL.load(path, THERMAL.preprocess_config())  # min-max of a constant image: zeros
    assert (constant == 0).all()


def test_float_tiff_temperatures_and_grey_rgb(tmp_path):
    kelvin = np.linspace(280, 310, 30 * 40, dtype=np.float32).reshape(30, 40)
    raw = THERMAL.load(write(tmp_path / "k.tif", kelvin), THERMAL.preprocess_config())
    np.testing.assert_allclose(raw, (kelvin - 280) / 30, atol=1e-5)
    grey = np.repeat(np.full((20, 30, 1), 102, np.uint8), 3, axis=2)  # LLVIP-style grey RGB frame
    for source in (write(tmp_path / "rgb.png", grey), grey):
        np.testing.assert_allclose(THERMAL.load(source, THERMAL.preprocess_config()), 0.4, rtol=1e-6)


def test_languagebind_three_channels_clip_normalised(tmp_path):
    cfg = THERMAL.preprocess_config({"preset": "languagebind", "size": 32, "crop_size": 32})
    x = THERMAL.process(write(tmp_path / "t.png", np.full((50, 40), 153, np.uint8)), cfg)
    assert x.shape == (3, 32, 32)
    expected = (0.6 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(x[:, 10, 20], expected, rtol=1e-4, atol=1e-4)


def test_resize_short_side_then_centre_crop(tmp_path):
    img = np.zeros((40, 80), np.uint8)
    img[:, :20] = 255  # left quarter hot: outside the centre crop of the resized 64x128 image
    cfg = THERMAL.preprocess_config({"size": 64, "crop_size": 64, "interpolation": "nearest"})
    x = THERMAL.process(write(tmp_path / "t.png", img), cfg)
    assert x.shape == (1, 64, 64) and x.max() == 0.0


def test_eval_deterministic_and_encode_every_format(tmp_path, model):
    cfg = model.preprocess_config("thermal")
    rng = np.random.default_rng(1)
    img8 = rng.integers(0, 256, (50, 70), dtype=np.uint8)
    sources = [
        write(tmp_path / "a.png", img8),
        write(tmp_path / "a.tif", img8),
        write(tmp_path / "b.png", radiometric(seed=2)),
        write(tmp_path / "b.tif", radiometric(seed=2)),
    ]
    raw = THERMAL.load(sources[2], cfg)
    torch.testing.assert_close(THERMAL.transform(raw, cfg), THERMAL.transform(raw, cfg), rtol=0, atol=0)
    assert THERMAL.transform(raw, cfg, train=True).shape == (1, 64, 64)
    emb = model.embed_sources("thermal", sources)
    assert emb.shape == (4, model.embed_dim) and torch.isfinite(emb).all()
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(emb[0], emb[1], atol=1e-5, rtol=1e-5)  # same pixels, PNG vs TIFF
    torch.testing.assert_close(emb[2], emb[3], atol=1e-5, rtol=1e-5)
    assert (emb[0] - emb[2]).abs().max() > 1e-4
