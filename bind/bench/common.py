"""Measurement helpers shared by benchmark suites: timing, FLOPs, peak FLOP/s, peak memory, JSON output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux) and the widest SIMD torch dispatches to."""
    name = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    return f"{name} ({torch.backends.cpu.get_cpu_capability()})"


def environment() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_name(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def suite_command(
    sub: argparse._SubParsersAction,
    name: str,
    run: Callable[..., dict[str, Any]],
    help: str,
    table: Callable[[dict[str, Any]], str] | None = None,
) -> argparse.ArgumentParser:
    """``bindspace bench NAME``: one option per parameter of ``run`` (:func:`bind.cli.add_options`) and ``--json
    OUT``. The command prints the result JSON (and ``table(result)`` on stderr), writes it to OUT, and exits 1 when
    the result says ``"failed": true``."""
    from bind.cli import add_options, option_values

    p = sub.add_parser(name, help=help, description=help)
    add_options(p, run)
    p.add_argument("--json", default=None, help="write the result JSON here")

    def command(args: argparse.Namespace) -> int:
        result = run(**option_values(run, args))
        write_json(result, args.json)
        if table is not None:
            print(table(result), file=sys.stderr)
        return 1 if result.get("failed") else 0

    p.set_defaults(func=command)
    return p


def measure_in_subprocess(function: str, spec: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """``module:function(spec)`` run in a fresh Python process (so one measurement's allocations and thread pools
    never touch another's); its JSON result, or ``{"error": last stderr line, "returncode": ...}``."""
    module, name = function.split(":")
    code = f"import json, sys; from {module} import {name}; print(json.dumps({name}(json.loads(sys.argv[1]))))"
    out = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1], "returncode": out.returncode}
    return json.loads(out.stdout.strip().splitlines()[-1])


def resolve_device(device: str | None) -> torch.device:
    """``device``, or CUDA where there is one, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def write_json(result: dict[str, Any], path: str | Path | None) -> None:
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], device: torch.device, warmup: int = 1, iters: int = 3) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call, counted by :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls, convs, SDPA)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def peak_matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, iters: int = 5) -> float:
    """Achievable FLOP/s of a large square matmul on ``device``, measured now (the MFU denominator)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sec = time_fn(lambda: a @ b, device, warmup=2, iters=iters)
    return 2 * n**3 / sec


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or peak process RSS above the start (sampled every 2 ms)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_bytes = device, 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            import psutil

            self._proc = psutil.Process()
            self._base = self._proc.memory_info().rss
            self._max = self._base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, self._proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()
            self._max = max(self._max, self._proc.memory_info().rss)
            self.peak_bytes = self._max - self._base

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


def _installed(test: Callable[[Any], bool], what: str) -> str:
    from bind.registry import find_modality

    name = find_modality(test)
    if name is None:
        raise ValueError(f"no installed modality plugin {what}")
    return name


def vision_modality() -> str:
    """The modality a pretrained ViT serves: the first plugin whose ``tower`` is ``"vision"``."""
    return _installed(lambda p: p.tower == "vision", "is served by a vision tower (tower = 'vision')")


def temporal_modality() -> str:
    """The first modality whose stem has positions over time (its ``StemConfig`` has ``num_frames``): video."""
    return _installed(
        lambda p: "num_frames" in {f.name for f in dataclasses.fields(p.StemConfig)},
        "with positions over time (StemConfig.num_frames)",
    )
