"""``bindspace bench data``: decode + preprocess throughput (items/s) per modality and file format, per worker.

For every registered modality (``bind.list_modalities()``) the suite writes its own sample files into a temporary
directory (real encoded media: JPEG / PNG images, 16-bit PNG and ``.npy`` depth, 8-bit PNG and 16-bit TIFF thermal,
CSV and ``.npy`` IMU, H.264 MP4 video, WAV / FLAC audio, text strings), then measures with the preprocessing of a
named model (``--model``; the plugin's default preset for modalities the model lacks):

* ``workers: 1`` — one process, ``--threads`` torch threads: ``load`` and ``transform`` timed separately over
  ``--items`` items (cycling through ``--files`` distinct files per format);
* ``workers: N`` (``--loader-workers``) — a ``torch.utils.data.DataLoader`` with N worker processes and batches of
  ``--batch`` (the plugin's ``collate``); timed from the first batch on (worker start-up reported apart), with
  ``items_per_s_per_worker = items_per_s / N``.

A modality without a sample generator here (a third-party plugin) or whose plugin fails is listed under
``skipped`` with the reason. Machines are shared: compare rows of one run, not across runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bind.bench.common import environment, write_json

Source = Any
#: modality -> {format name: writer(directory, index, rng) -> source}
SampleWriter = Callable[[Path, int, np.random.Generator], Source]


# --- sample media ---------------------------------------------------------------------------------------------------
def _scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random field in [0, 1] (so compressed formats see realistic, not noise-like, content)."""
    coarse = rng.random((h // 16 + 2, w // 16 + 2))
    ys, xs = np.linspace(0, coarse.shape[0] - 1.001, h), np.linspace(0, coarse.shape[1] - 1.001, w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    c = coarse
    return (
        (1 - fy) * (1 - fx) * c[y0][:, x0]
        + (1 - fy) * fx * c[y0][:, x0 + 1]
        + fy * (1 - fx) * c[y0 + 1][:, x0]
        + fy * fx * c[y0 + 1][:, x0 + 1]
    )


def _save_image(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


def _image(ext: str) -> SampleWriter:
    def write(d: Path, i: int, rng: np.random.Generator) -> Path:
        rgb = np.stack([_scene(rng, 480, 640) for _ in range(3)], -1)
        return _save_image(d / f"image_{i}.{ext}", (rgb * 255).astype(np.uint8))

    return write


def _depth_png(d: Path, i: int, rng: np.random.Generator) -> Path:
    mm = (500 + 7500 * _scene(rng, 480, 640)).astype(np.uint16)
    mm[rng.random(mm.shape) < 0.05] = 0  # sensor dropouts
    return _save_image(d / f"depth_{i}.png", mm)


def _depth_npy(d: Path, i: int, rng: np.random.Generator) -> Path:
    np.save(d / f"depth_{i}.npy", (0.5 + 7.5 * _scene(rng, 480, 640)).astype(np.float32))
    return d / f"depth_{i}.npy"


def _thermal_png8(d: Path, i: int, rng: np.random.Generator) -> Path:
    return _save_image(d / f"thermal_{i}.png", (255 * _scene(rng, 512, 640)).astype(np.uint8))


def _thermal_tiff16(d: Path, i: int, rng: np.random.Generator) -> Path:
    return _save_image(d / f"thermal_{i}.tif", (7000 + 900 * _scene(rng, 512, 640)).astype(np.uint16))


def _imu_signal(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    t = np.arange(n)[:, None] / rate
    phase = rng.random((1, 6)) * 6.28
    base = np.array([0.0, 0.0, 9.81, 0.0, 0.0, 0.0])
    return base + np.sin(2 * np.pi * 1.7 * t + phase) + 0.05 * rng.standard_normal((n, 6))


def _imu_csv(d: Path, i: int, rng: np.random.Generator) -> Path:
    rate, n = 400.0, 4800  # 12 s at 400 Hz with timestamps: resampled to 200 Hz
    rows = np.column_stack([np.arange(n) / rate, _imu_signal(rng, n, rate)])
    path = d / f"imu_{i}.csv"
    np.savetxt(
        path, rows, delimiter=",", fmt="%.6f", comments="", header="timestamp,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z"
    )
    return path


def _imu_npy(d: Path, i: int, rng: np.random.Generator) -> Path:
    np.save(d / f"imu_{i}.npy", _imu_signal(rng, 2400, 200.0).T.astype(np.float32))  # [6, N] at 200 Hz
    return d / f"imu_{i}.npy"


def _video_mp4(d: Path, i: int, rng: np.random.Generator) -> Path:
    import av

    path, fps, n = d / f"video_{i}.mp4", 24, 72  # 3 s of 320x240 H.264
    base = (np.stack([_scene(rng, 240, 336) for _ in range(3)], -1) * 255).astype(np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for t in range(n):
            shift = t % 16  # a slow pan
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, shift : shift + 320]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _audio(ext: str) -> SampleWriter:
    def write(d: Path, i: int, rng: np.random.Generator) -> Path:
        import soundfile as sf

        sr, seconds = 44100, 5.0  # CD-rate stereo: the plugin resamples to 16 kHz mono
        t = np.arange(int(sr * seconds)) / sr
        wave = 0.3 * np.sin(2 * np.pi * (220 + 220 * rng.random()) * t) + 0.05 * rng.standard_normal(len(t))
        path = d / f"audio_{i}.{ext}"
        sf.write(str(path), np.stack([wave, wave[::-1]], -1).astype(np.float32), sr)
        return path

    return write


def _text(d: Path, i: int, rng: np.random.Generator) -> str:
    words = "a dog runs across the wet grass while a red kite circles over the old stone bridge at dusk".split()
    return " ".join(rng.choice(words, size=int(rng.integers(8, 24))))


SAMPLE_WRITERS: dict[str, dict[str, SampleWriter]] = {
    "text": {"str": _text},
    "image": {"jpg": _image("jpg"), "png": _image("png")},
    "video": {"mp4": _video_mp4},
    "audio": {"wav": _audio("wav"), "flac": _audio("flac")},
    "depth": {"png16": _depth_png, "npy": _depth_npy},
    "thermal": {"png8": _thermal_png8, "tiff16": _thermal_tiff16},
    "imu": {"csv": _imu_csv, "npy": _imu_npy},
}


# --- measurement -----------------------------------------------------------------------------------------------------
class _SourceDataset(torch.utils.data.Dataset):
    def __init__(self, plugin, cfg, sources: list[Source], items: int) -> None:
        self.plugin, self.cfg, self.sources, self.items = plugin, cfg, sources, items

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.plugin.process(self.sources[i % len(self.sources)], self.cfg)


def measure_single(plugin, cfg, sources: list[Source], items: int) -> dict[str, Any]:
    """One process: seconds spent in ``load`` and in ``transform`` over ``items`` items (after one warm-up item)."""
    plugin.transform(plugin.load(sources[0], cfg), cfg)
    load_s = transform_s = 0.0
    shape = None
    for i in range(items):
        t0 = time.perf_counter()
        raw = plugin.load(sources[i % len(sources)], cfg)
        t1 = time.perf_counter()
        x = plugin.transform(raw, cfg)
        transform_s += time.perf_counter() - t1
        load_s += t1 - t0
        shape = list(x.shape)
    total = load_s + transform_s
    return {
        "workers": 1,
        "mode": "single-process",
        "items": items,
        "seconds": total,
        "items_per_s": items / total,
        "items_per_s_per_worker": items / total,
        "ms_per_item": 1e3 * total / items,
        "load_ms_per_item": 1e3 * load_s / items,
        "transform_ms_per_item": 1e3 * transform_s / items,
        "sample_shape": shape,
    }


def measure_loader(plugin, cfg, sources: list[Source], items: int, workers: int, batch: int) -> dict[str, Any]:
    """A DataLoader with ``workers`` processes; throughput counted from the first batch (start-up apart)."""
    loader = torch.utils.data.DataLoader(
        _SourceDataset(plugin, cfg, sources, items + batch),
        batch_size=batch,
        num_workers=workers,
        collate_fn=plugin.collate,
    )
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    t1 = time.perf_counter()
    n = sum(len(b) for b in it)
    sec = time.perf_counter() - t1
    return {
        "workers": workers,
        "mode": "dataloader",
        "batch": batch,
        "items": n,
        "seconds": sec,
        "items_per_s": n / sec,
        "items_per_s_per_worker": n / sec / workers,
        "ms_per_item": 1e3 * sec / n,
        "startup_s": t1 - t0,
    }


def preprocess_configs(model: str, modalities: list[str]) -> dict[str, tuple[Any, str]]:
    """``{modality: (Preprocess, where it came from)}`` from the named model, else the plugin's default preset."""
    from bind.factory import expand_config
    from bind.registry import get_modality, model_config_dict

    raw = model_config_dict(model)
    out = {}
    for m in modalities:
        plugin = get_modality(m)
        if m in raw.get("encoders", {}):
            enc = expand_config(raw, [m]).encoders[m]
            out[m] = (plugin.preprocess_config(enc.preprocess), f"{model}:{enc.preprocess.get('preset', 'default')}")
        else:
            out[m] = (plugin.preprocess_config(None), f"default preset {plugin.default_preset}")
    return out


def run_data_bench(
    model: str = "bind-base",
    modalities: list[str] | None = None,
    items: int = 32,
    files: int = 4,
    loader_workers: list[int] | None = None,
    batch: int = 8,
    threads: int = 1,
    directory: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the suite and return its JSON-ready result (see the module docstring)."""
    from bind.registry import get_modality, list_modalities

    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    env = environment()
    registered = list_modalities()
    wanted = modalities or registered
    skipped = [
        {"modality": m, "reason": f"plugin not registered (modalities/{m}.py not present)"}
        for m in (modalities or SAMPLE_WRITERS)
        if m not in registered
    ]
    wanted = [m for m in wanted if m in registered]
    results = []
    with tempfile.TemporaryDirectory(prefix="bind-bench-data-", dir=directory) as tmp:
        cfgs = preprocess_configs(model, wanted)
        for m in wanted:
            writers = SAMPLE_WRITERS.get(m)
            if not writers:
                skipped.append({"modality": m, "reason": "no sample generator for this modality in bind.bench.data"})
                continue
            plugin, (cfg, origin) = get_modality(m), cfgs[m]
            for fmt, writer in writers.items():
                rng = np.random.default_rng(seed)
                d = Path(tmp) / m
                d.mkdir(exist_ok=True)
                try:
                    sources = [writer(d, i, rng) for i in range(files)]
                except Exception as e:  # a missing encoder library (e.g. libx264) must not stop the other rows
                    skipped.append({"modality": m, "format": fmt, "reason": f"cannot write samples: {e}"})
                    continue
                size = float(np.mean([p.stat().st_size if isinstance(p, Path) else len(str(p)) for p in sources]))
                row = {"modality": m, "format": fmt, "preprocess": origin, "source_bytes": size}
                try:
                    results.append({**row, **measure_single(plugin, cfg, sources, items)})
                    for w in loader_workers or []:
                        results.append({**row, **measure_loader(plugin, cfg, sources, items, w, batch)})
                except Exception as e:  # report a failing plugin and go on with the others
                    skipped.append({"modality": m, "format": fmt, "reason": f"{type(e).__name__}: {e}"})
    torch.set_num_threads(threads_before)
    return {
        "suite": "data",
        "model": model,
        "items": items,
        "files_per_format": files,
        "threads": threads,
        "env": env,
        "results": results,
        "skipped": skipped,
    }


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of the result rows (also printed to stderr by the CLI)."""
    lines = [
        f"{'modality':9} {'format':7} {'workers':>7} {'items/s':>9} {'/worker':>9} {'load ms':>8} "
        f"{'xform ms':>8}  shape"
    ]
    for r in result["results"]:
        load = f"{r['load_ms_per_item']:8.2f}" if "load_ms_per_item" in r else f"{'':8}"
        xform = f"{r['transform_ms_per_item']:8.2f}" if "transform_ms_per_item" in r else f"{'':8}"
        lines.append(
            f"{r['modality']:9} {r['format']:7} {r['workers']:>7} {r['items_per_s']:9.1f} "
            f"{r['items_per_s_per_worker']:9.1f} {load} {xform}  {r.get('sample_shape', '')}"
        )
    lines += [
        f"skipped {s['modality']}{'/' + s['format'] if 'format' in s else ''}: {s['reason']}" for s in result["skipped"]
    ]
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    result = run_data_bench(
        args.model,
        args.modality or None,
        args.items,
        args.files,
        args.loader_workers,
        args.batch,
        args.threads,
        args.dir,
    )
    write_json(result, args.json)
    print(format_table(result), file=sys.stderr)
    return 0


def add_suite(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="decode + preprocess items/s per modality and format, per worker")
    p.add_argument("--model", default="bind-base", help="named model whose preprocessing is measured")
    p.add_argument("--modality", action="append", help="only this modality (repeatable; default: all registered)")
    p.add_argument("--items", type=int, default=32, help="items timed per format and worker setting")
    p.add_argument("--files", type=int, default=4, help="distinct sample files per format")
    p.add_argument(
        "--loader-workers",
        type=int,
        nargs="*",
        default=[2],
        help="DataLoader worker counts to measure besides the single process (none: only single)",
    )
    p.add_argument("--batch", type=int, default=8, help="DataLoader batch size")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the single-process measurement")
    p.add_argument("--dir", default=None, help="where to write the temporary sample files")
    p.add_argument("--json", default=None, help="write the result JSON here")
    p.set_defaults(func=_run)
