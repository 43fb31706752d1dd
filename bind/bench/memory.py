"""``bindspace bench memory``: forward time and peak memory of a video encoder against the number of frames.

A ViT-B/16 video encoder (``--modality``, default: the plugin whose stem has positions over time, of ``--model``,
default ``bind-base``) with joint space-time attention
sends all ``T/temporal_patch x N`` tokens through one attention call per layer. With a memory-efficient attention
backend (``sdpa``'s flash / memory-efficient kernels, or ``xformers``) the ``L x L`` score matrix is never
materialised, so peak activation memory grows about linearly with the token count (goal: at most 10x from 8 to
64 frames) while time grows with the quadratic attention FLOPs. ``naive_scores_mib`` reports what one layer's score
matrix would take (``heads x L^2`` floats), for contrast.

Batch 1, one clip ``[1, 3, T, S, S]``, ``torch.inference_mode``. On CUDA the peak is the allocator's
``max_memory_allocated`` above the weights and input; on CPU it is the growth of process RSS during one forward (after
``--warmup`` forwards, at least one), each frame count in a fresh subprocess with glibc's mmap threshold fixed at
1 MiB, so every large tensor is unmapped when freed and RSS follows live memory (this adds page-fault time to CPU
timings). Timing: median of ``--iters`` calls. Machines are shared: read ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, Literal

import torch

from bind.bench.common import (
    PeakMemory,
    environment,
    measure_in_subprocess,
    resolve_device,
    suite_command,
    temporal_modality,
    time_fn,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_temporal_encoder(
    model: str,
    size: int,
    frames: int,
    attention: str,
    backend: str,
    temporal_patch: int | None = None,
    patch_size: int | None = None,
    modality: str | None = None,
):
    """The encoder of ``modality`` (default: the temporal plugin's) of a named model at ``size`` pixels and ``frames``
    frames, fresh weights (seed 0)."""
    from bind.encoder import ModalityEncoder
    from bind.factory import expand_config
    from bind.registry import get_modality, model_config_dict

    stem: dict[str, Any] = {"num_frames": frames}
    if temporal_patch:
        stem["temporal_patch"] = temporal_patch
    if patch_size:
        stem["patch_size"] = patch_size
    overrides = {
        "attention": attention,
        "attn_backend": backend,
        "stem": stem,
        "preprocess": {"size": size, "crop_size": size, "frames_per_clip": frames},
    }
    m = modality or temporal_modality()
    cfg = expand_config(model_config_dict(model), [m], overrides).encoders[m]
    get_modality(m).prepare_encoder_config(cfg)
    torch.manual_seed(0)
    return ModalityEncoder(cfg).eval()


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One frame count: peak memory of the first forward, then the median forward time."""
    device, dtype = torch.device(spec["device"]), DTYPES[spec["dtype"]]
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    enc = build_temporal_encoder(
        spec["model"],
        spec["size"],
        spec["frames"],
        spec["attention"],
        spec["backend"],
        spec.get("temporal_patch"),
        spec.get("patch_size"),
        spec.get("modality"),
    ).to(device)
    cfg = enc.cfg
    x = torch.randn(1, 3, spec["frames"], spec["size"], spec["size"], device=device).to(dtype)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def run():
        with torch.inference_mode(), autocast:
            return enc(x)

    for _ in range(max(spec["warmup"], 1)):  # kernels, thread pools and workspaces exist before the measured call
        run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    with PeakMemory(device) as mem:
        run()
    sec = time_fn(run, device, warmup=0, iters=spec["iters"])
    tp, grid = int(cfg.stem["temporal_patch"]), spec["size"] // int(cfg.stem["patch_size"])
    steps, n_cls = -(-spec["frames"] // tp), cfg.num_cls_tokens
    if cfg.attention == "joint":  # one attention over every token
        total = per_attention = steps * grid * grid + n_cls
        scores = per_attention**2
    else:  # spatial attention per frame (the temporal one is over `steps` tokens)
        per_attention = grid * grid + n_cls
        total, scores = steps * per_attention, steps * per_attention**2
    return {
        "frames": spec["frames"],
        "temporal_steps": steps,
        "tokens": total,
        "tokens_per_attention": per_attention,
        "seconds": sec,
        "peak_memory_mib": mem.peak_mib,
        "naive_scores_mib": cfg.heads * scores * (torch.finfo(dtype).bits // 8) / 2**20,
        "params_m": sum(p.numel() for p in enc.parameters()) / 1e6,
    }


def run_memory_bench(
    modality: str | None = None,
    model: str = "bind-base",
    frames: Sequence[int] = (8, 16, 32, 64),
    size: int = 224,
    attention: Literal["joint", "divided"] = "joint",
    backend: Literal["sdpa", "math", "xformers"] = "sdpa",
    temporal_patch: int | None = None,
    patch_size: int | None = None,
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32",
    device: str | None = None,
    threads: int | None = None,
    iters: int = 3,
    warmup: int = 1,
) -> dict[str, Any]:
    """Run the suite and return its JSON-ready result (see the module docstring); ``failed`` when a frame count did.

    Args:
        modality: the encoder measured (default: the plugin whose stem has positions over time)
        model: named model whose encoder is measured
        frames: frame counts, one row each
        size: frame side in pixels
        attention: joint space-time or divided (TimeSformer) attention
        backend: attention backend
        temporal_patch: override the model's temporal patch
        patch_size: override the model's spatial patch
        dtype: autocast precision of the forward
        device: torch device (default: CUDA where there is one, else the CPU)
        threads: torch threads (CPU)
        iters: timed forwards per frame count (median)
        warmup: forwards before measuring
    """
    if not frames or min(frames) < 1 or size < 1:
        raise ValueError(f"frame counts must be >= 1 and --size >= 1 (got {list(frames)}, {size})")
    dev = resolve_device(device)
    base = {
        "modality": modality or temporal_modality(),
        "model": model,
        "size": size,
        "attention": attention,
        "backend": backend,
        "device": str(dev),
        "dtype": dtype,
        "iters": iters,
        "warmup": warmup,
        "threads": threads,
        "temporal_patch": temporal_patch,
        "patch_size": patch_size,
    }
    # on CPU each frame count runs in a fresh process: glibc keeps freed heap memory mapped, so RSS would under-report
    # a later peak; a fixed mmap threshold makes every large tensor its own mapping, returned to the OS when freed
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    rows = []
    for t in sorted(set(frames)):
        spec = {**base, "frames": t}
        row = measure(spec) if dev.type == "cuda" else measure_in_subprocess("bind.bench.memory:measure", spec, env)
        rows.append({"frames": t, **row})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    ok = [r for r in rows if "error" not in r]
    summary: dict[str, Any] = {}
    if len(ok) >= 2:
        first, last = ok[0], ok[-1]
        summary = {
            "frames": f"{first['frames']} -> {last['frames']}",
            "frames_ratio": last["frames"] / first["frames"],
            "tokens_ratio": last["tokens"] / first["tokens"],
            "peak_memory_ratio": last["peak_memory_mib"] / max(first["peak_memory_mib"], 1e-9),
            "time_ratio": last["seconds"] / first["seconds"],
        }
        if first["frames"] == 8 and last["frames"] == 64:
            summary["goal_peak_memory_ratio_le_10"] = summary["peak_memory_ratio"] <= 10
    return {
        "suite": "memory",
        "config": {k: v for k, v in base.items() if k != "device"},
        "device": str(dev),
        "env": environment(),
        "results": rows,
        "summary": summary,
        "failed": len(ok) < len(rows),
    }


def add_suite(sub: argparse._SubParsersAction) -> None:
    suite_command(
        sub, "memory", run_memory_bench, "forward time and peak memory of an encoder with frames vs their number"
    )
