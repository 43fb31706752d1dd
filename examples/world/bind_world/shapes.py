"""A tiny generated dataset: coloured shapes on noisy backgrounds, captioned by what each modality can see.

For tests, examples and benchmarks that need paired data a model can actually learn from in seconds on a CPU.
Images are captioned by colour and shape (``"a red circle"``: 4 colours x 3 shapes = 12 captions). With
``depth=True`` each sample also gets a 16-bit depth PNG (millimetres: the shape at 1 m or 2 m before a 3 m
background) and a depth-specific caption (``captions.depth``: ``"a near circle on the left"``: 3 shapes x near/far
x left/right = 12 captions) — colour is invisible in depth, distance is invisible in colour. Written as PNGs plus a
JSONL manifest (:mod:`bind.data.manifest` format).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bind.data.manifest import write_manifest

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle")


def _draw(img: Image.Image, shape: str, cx: float, cy: float, r: float, fill) -> None:
    draw = ImageDraw.Draw(img)
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)


def draw_shape(
    colour: str, shape: str, size: int, rng: np.random.Generator, place: tuple[float, float, float] | None = None
) -> Image.Image:
    """One ``size`` x ``size`` RGB image of a ``colour`` ``shape`` at a random place and scale (or ``place`` =
    ``(cx, cy, radius)``)."""
    img = Image.fromarray(rng.integers(90, 150, (size, size, 3), dtype=np.uint8))
    if place is None:
        r = rng.uniform(0.25, 0.4) * size
        place = (*rng.uniform(r, size - r, 2), r)
    _draw(img, shape, *place, fill=COLOURS[colour])
    return img


def draw_depth(
    shape: str, size: int, place: tuple[float, float, float], distance_mm: int, background_mm: int = 3000
) -> Image.Image:
    """A 16-bit depth map (millimetres) of ``shape`` at ``distance_mm`` before a flat background."""
    img = Image.new("I", (size, size), background_mm)
    _draw(img, shape, *place, fill=distance_mm)
    return Image.fromarray(np.asarray(img).astype(np.uint16))


def write_shapes_dataset(
    root: str | Path,
    *,
    train: int = 96,
    val: int = 48,
    size: int = 32,
    seed: int = 0,
    name: str = "manifest.jsonl",
    depth: bool = False,
) -> Path:
    """Write ``root/media/*.png`` and ``root/<name>`` with ``train`` + ``val`` samples (and depth maps with their
    own captions when ``depth``); returns the manifest path."""
    root = Path(root)
    (root / "media").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = [(c, s) for c in COLOURS for s in SHAPES]
    rows = []
    for i in range(train + val):
        colour, shape = classes[i % len(classes)]
        rel = f"media/s{i:05d}.png"
        r = rng.uniform(0.2, 0.3) * size
        side = "left" if (i // len(classes)) % 2 == 0 else "right"
        cx = rng.uniform(r, size / 2 - 1) if side == "left" else rng.uniform(size / 2 + 1, size - r)
        place = (cx, rng.uniform(r, size - r), r)
        draw_shape(colour, shape, size, rng, place).save(root / rel)
        row = {
            "id": f"s{i:05d}",
            "split": "train" if i < train else "val",
            "text": f"a {colour} {shape}",
            "image": rel,
            "factors": {"colour": colour, "shape": shape, "side": side},
        }
        if depth:
            near = bool(rng.integers(0, 2))
            draw_depth(shape, size, place, 1000 if near else 2000).save(root / f"media/s{i:05d}.depth.png")
            row["depth"] = f"media/s{i:05d}.depth.png"
            row["captions"] = {"depth": f"a {'near' if near else 'far'} {shape} on the {side}"}
            row["factors"]["distance"] = "near" if near else "far"
        rows.append(row)
    return write_manifest(root / name, rows)


if __name__ == "__main__":  # python -m bind_world.shapes OUT_DIR [TRAIN VAL SIZE]
    import sys

    args = sys.argv[1:]
    if not args:
        sys.exit("usage: python -m bind_world.shapes OUT_DIR [TRAIN VAL SIZE]")
    nums = [int(a) for a in args[1:4]]
    kw = dict(zip(("train", "val", "size"), nums))
    print(write_shapes_dataset(args[0], **kw))
