"""``bindspace bench video-memory``: forward time and peak memory of a video encoder against the number of frames.

A ViT-B/16 video encoder (the ``video`` entry of ``--model``, default ``bind-base``) with joint space-time attention
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
import subprocess
import sys
from typing import Any

import torch

from bind.bench.common import PeakMemory, environment, temporal_modality, time_fn, write_json

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_video_encoder(
    model: str,
    image_size: int,
    frames: int,
    attention: str,
    backend: str,
    temporal_patch: int | None = None,
    patch_size: int | None = None,
):
    """The ``video`` encoder of a named model at ``image_size`` pixels, fresh weights (seed 0)."""
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
        "preprocess": {"size": image_size, "crop_size": image_size, "frames_per_clip": frames},
    }
    m = temporal_modality()
    cfg = expand_config(model_config_dict(model), [m], overrides).encoders[m]
    get_modality(m).prepare_encoder_config(cfg)
    torch.manual_seed(0)
    return ModalityEncoder(cfg).eval()


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One frame count: peak memory of the first forward, then the median forward time."""
    device, dtype = torch.device(spec["device"]), DTYPES[spec["dtype"]]
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    enc = build_video_encoder(
        spec["model"],
        spec["image_size"],
        spec["frames"],
        spec["attention"],
        spec["backend"],
        spec.get("temporal_patch"),
        spec.get("patch_size"),
    ).to(device)
    cfg = enc.cfg
    x = torch.randn(1, 3, spec["frames"], spec["image_size"], spec["image_size"], device=device).to(dtype)
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
    tp, grid = int(cfg.stem["temporal_patch"]), spec["image_size"] // int(cfg.stem["patch_size"])
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


def _measure_in_subprocess(spec: dict[str, Any]) -> dict[str, Any]:
    code = (
        "import json, sys; from bind.bench.video_memory import measure; "
        "print(json.dumps(measure(json.loads(sys.argv[1]))))"
    )
    # glibc keeps freed heap memory mapped, so RSS would under-report a later peak; a fixed mmap threshold makes
    # every large tensor its own mapping, returned to the OS when freed (RSS then tracks live memory)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {
            "frames": spec["frames"],
            "error": (out.stderr.strip().splitlines() or ["?"])[-1],
            "returncode": out.returncode,
        }
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run(args: argparse.Namespace) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    frames = sorted(set(args.frames))
    base = {
        "model": args.model,
        "image_size": args.image_size,
        "attention": args.attention,
        "backend": args.backend,
        "device": str(device),
        "dtype": args.dtype,
        "iters": args.iters,
        "warmup": args.warmup,
        "threads": args.threads,
        "temporal_patch": args.temporal_patch,
        "patch_size": args.patch_size,
    }
    rows = []
    for t in frames:
        spec = {**base, "frames": t}
        rows.append(measure(spec) if device.type == "cuda" else _measure_in_subprocess(spec))
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
    write_json(
        {
            "suite": "video-memory",
            "config": {k: v for k, v in base.items() if k != "device"},
            "device": str(device),
            "env": environment(),
            "results": rows,
            "summary": summary,
        },
        args.json,
    )
    return 0 if len(ok) == len(rows) else 1


def add_suite(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("video-memory", help="video encoder forward time and peak memory vs frame count")
    p.add_argument("--model", default="bind-base", help="named model whose video encoder is measured")
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--attention", default="joint", choices=["joint", "divided"])
    p.add_argument("--backend", default="sdpa", choices=["sdpa", "math", "xformers"])
    p.add_argument("--temporal-patch", type=int, default=None, help="override the model's temporal patch")
    p.add_argument("--patch-size", type=int, default=None, help="override the model's spatial patch")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", default=None, help="write the result JSON here")
    p.set_defaults(func=_run)
