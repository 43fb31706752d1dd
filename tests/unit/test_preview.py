"""``bind.preview``: the pictures plugins hand to the results page are real PNGs of the right size and colours."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bind.preview import colour_map, line_plot, thumbnail


def _png(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    return np.asarray(img.convert("RGB"))


def test_thumbnail_scales_to_the_preview_size():
    small = np.zeros((32, 64, 3), np.uint8)
    small[:, :32] = 255
    a = _png(thumbnail(small, size=256))
    assert a.shape == (128, 256, 3) and a[:, :128].min() == 255 and a[:, 128:].max() == 0  # nearest: crisp halves
    assert _png(thumbnail(np.zeros((1000, 500, 3), np.uint8), size=256)).shape == (256, 128, 3)


def test_colour_map_range_invert_and_missing_pixels():
    depth = np.array([[1.0, 2.0], [3.0, np.nan]], np.float32)
    a = _png(colour_map(depth, "gray", size=2))
    assert a[0, 0, 0] == 0 and a[1, 0, 0] == 255 and a[1, 1].tolist() == [0, 0, 0]  # NaN is black
    b = _png(colour_map(depth, "gray", size=2, invert=True))
    assert b[0, 0, 0] == 255 and b[1, 0, 0] == 0
    with pytest.raises(ValueError, match="2-D"):
        colour_map(np.zeros((2, 2, 2)))


def test_line_plot_draws_every_channel():
    t = np.linspace(0, 6.28, 400)
    series = np.stack([np.sin(t + k) for k in range(6)])
    a = _png(line_plot(series, [f"c{k}" for k in range(6)], width=300, height=160, groups=[(0, 1, 2), (3, 4, 5)]))
    assert a.shape == (160, 300, 3)
    colours = {tuple(c) for c in a.reshape(-1, 3)}
    for hex_colour in ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"):
        assert tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)) in colours
    with pytest.raises(ValueError, match="channels"):
        line_plot(np.zeros(10))
