"""Small pictures of decoded media for the results page (``bindspace serve``): what plugins' ``preview`` methods use.

A plugin's :meth:`bind.modality.Modality.preview` returns a dict (see there); these helpers turn decoded arrays into
the PNG bytes it holds: :func:`thumbnail` (an RGB image), :func:`colour_map` (a 2-D scalar field such as depth or
temperature, through a matplotlib colour map), :func:`line_plot` (a few channels of a 1-D signal, e.g. IMU).
Pure numpy + Pillow (matplotlib only for its colour tables): a preview costs milliseconds.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

#: longest side of a preview image, in pixels
PREVIEW_SIZE = 256
#: line colours of :func:`line_plot` (matplotlib's tab10)
LINE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def thumbnail(image: Image.Image | np.ndarray, size: int = PREVIEW_SIZE, upscale: bool = True) -> bytes:
    """PNG of ``image`` (PIL or ``[H, W(, 3)]`` uint8) with its longest side ``size`` (small images are enlarged with
    nearest-neighbour sampling when ``upscale``, so a 64-pixel picture stays crisp)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image))
    image = image.convert("RGB")
    scale = size / max(image.size)
    if scale < 1 or (upscale and scale >= 2):
        scale = scale if scale < 1 else float(int(scale))
        resample = Image.Resampling.BILINEAR if scale < 1 else Image.Resampling.NEAREST
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
    return png_bytes(image)


def colour_map(
    values: np.ndarray,
    cmap: str = "viridis",
    size: int = PREVIEW_SIZE,
    invert: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
) -> bytes:
    """PNG of a 2-D field through a matplotlib colour map, scaled to its finite range (or ``vmin``/``vmax``); NaN
    (missing) pixels are black. ``invert`` maps high values to the low end (near depth bright)."""
    from matplotlib import colormaps

    a = np.asarray(values, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"colour_map: expected a 2-D array, got shape {a.shape}")
    finite = np.isfinite(a)
    lo = float(np.min(a[finite])) if vmin is None and finite.any() else float(vmin or 0.0)
    hi = float(np.max(a[finite])) if vmax is None and finite.any() else float(vmax if vmax is not None else 1.0)
    unit = np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    if invert:
        unit = 1.0 - unit
    rgb = (colormaps[cmap](np.where(finite, unit, 0.0))[..., :3] * 255).astype(np.uint8)
    rgb[~finite] = 0
    return thumbnail(rgb, size)


def line_plot(
    series: np.ndarray,
    labels: Sequence[str] | None = None,
    width: int = 2 * PREVIEW_SIZE,
    height: int = PREVIEW_SIZE,
    groups: Sequence[Sequence[int]] | None = None,
) -> bytes:
    """PNG line plot of ``series [C, N]``: one coloured line per channel, a legend of ``labels``. ``groups`` splits
    the channels into panels sharing a y range (e.g. accelerometer / gyroscope), each scaled to its own range."""
    s = np.nan_to_num(np.asarray(series, dtype=np.float64))
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"line_plot: expected [channels, samples>=2], got shape {s.shape}")
    groups = [list(g) for g in groups] if groups else [list(range(s.shape[0]))]
    labels = list(labels) if labels else [str(i) for i in range(s.shape[0])]
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    legend_h, pad = 14, 4
    panel_h = (height - legend_h) / len(groups)
    # a few thousand points per line are plenty for a 512-pixel plot
    step = max(1, s.shape[1] // (4 * width))
    x = np.linspace(pad, width - pad, len(range(0, s.shape[1], step)))
    for gi, chans in enumerate(groups):
        top = legend_h + gi * panel_h
        lo, hi = float(s[chans].min()), float(s[chans].max())
        span = hi - lo if hi > lo else 1.0
        draw.rectangle([0, top, width - 1, top + panel_h - 1], outline="#cccccc")
        for c in chans:
            y = top + pad + (1 - (s[c, ::step] - lo) / span) * (panel_h - 2 * pad)
            draw.line(list(zip(x.tolist(), y.tolist())), fill=LINE_COLOURS[c % len(LINE_COLOURS)], width=1)
    cursor = pad
    for c, name in enumerate(labels):
        colour = LINE_COLOURS[c % len(LINE_COLOURS)]
        draw.line([cursor, legend_h / 2, cursor + 10, legend_h / 2], fill=colour, width=2)
        draw.text((cursor + 13, 1), name, fill="black")
        cursor += 16 + int(draw.textlength(name)) + 8
    return png_bytes(img)
