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

Each plugin writes its own samples (``Modality.sample_formats`` / ``write_sample``); a modality whose plugin writes
none or fails is listed under ``skipped`` with the reason. Machines are shared: compare rows of one run, not across
runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bind.bench.common import environment, suite_command

Source = Any


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
    loader_workers: Sequence[int] = (2,),
    batch: int = 8,
    threads: int = 1,
    directory: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the suite and return its JSON-ready result (see the module docstring).

    Args:
        model: named model whose preprocessing is measured
        modalities: only these modalities (default: every registered one)
        items: items timed per format and worker setting
        files: distinct sample files per format
        loader_workers: DataLoader worker counts measured besides the single process (none: only that)
        batch: DataLoader batch size
        threads: torch threads of the single-process measurement
        directory: where to write the temporary sample files
        seed: seed of the sample files
    """
    from bind.registry import get_modality, list_modalities

    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    env = environment()
    registered = list_modalities()
    wanted = modalities or registered
    skipped = [
        {"modality": m, "reason": f"plugin not registered (modalities/{m}.py not present)"}
        for m in modalities or ()
        if m not in registered
    ]
    wanted = [m for m in wanted if m in registered]
    if not wanted:
        raise ValueError(f"no registered modality among {list(modalities or [])} (registered: {registered})")
    results = []
    with tempfile.TemporaryDirectory(prefix="bind-bench-data-", dir=directory) as tmp:
        cfgs = preprocess_configs(model, wanted)
        for m in wanted:
            plugin, (cfg, origin) = get_modality(m), cfgs[m]
            if not plugin.sample_formats:
                skipped.append({"modality": m, "reason": "the plugin writes no samples (Modality.sample_formats)"})
            for fmt in plugin.sample_formats:
                rng = np.random.default_rng(seed)
                d = Path(tmp) / m
                d.mkdir(exist_ok=True)
                try:
                    sources = [plugin.write_sample(fmt, d, i, rng) for i in range(files)]
                except Exception as e:  # a missing encoder library (e.g. libx264) must not stop the other rows
                    skipped.append({"modality": m, "format": fmt, "reason": f"cannot write samples: {e}"})
                    continue
                size = float(np.mean([p.stat().st_size if isinstance(p, Path) else len(str(p)) for p in sources]))
                row = {"modality": m, "format": fmt, "preprocess": origin, "source_bytes": size}
                try:
                    results.append({**row, **measure_single(plugin, cfg, sources, items)})
                    for w in loader_workers:
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


def add_suite(sub: argparse._SubParsersAction) -> None:
    suite_command(
        sub, "data", run_data_bench, "decode + preprocess items/s per modality and format, per worker", format_table
    )
