"""``bindspace bench encoders``: forward throughput, FLOPs per sample, achieved GFLOP/s, MFU and peak memory.

MFU = achieved FLOP/s / the FLOP/s of a large matmul measured in the same run on the same device (so it reads
"fraction of what this machine's GEMM reaches now", not of a datasheet number).
"""

from __future__ import annotations

import argparse

import torch

from bind.bench.common import (
    PeakMemory,
    count_flops,
    environment,
    peak_matmul_flops,
    time_fn,
    vision_modality,
    write_json,
)


def example_batch(model, modality: str, batch: int) -> torch.Tensor:
    """A random input batch of the shape ``modality``'s encoder expects at its configured preprocessing."""
    from bind.registry import get_modality

    plugin = get_modality(modality)
    enc = model.encoder(modality)
    if hasattr(plugin, "example_input"):
        return plugin.example_input(enc.cfg, batch)
    if modality == "text":
        ctx = enc.cfg.preprocess.get("context_length", 77)
        return torch.randint(1, 1000, (batch, ctx))
    size = int(enc.cfg.preprocess.get("crop_size", 224))
    return torch.randn(batch, plugin.channels(enc.cfg) or 3, size, size)


def bench_encoder(
    model, modality: str, batch: int, device: torch.device, dtype: torch.dtype, iters: int = 3, warmup: int = 1
) -> dict:
    enc = model.encoder(modality).to(device).eval()
    x = example_batch(model, modality, batch).to(device)
    if x.is_floating_point():
        x = x.to(dtype)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def run():
        with torch.inference_mode(), autocast:
            return enc(x)

    flops = count_flops(run)
    with PeakMemory(device) as mem:
        sec = time_fn(run, device, warmup=warmup, iters=iters)
    peak = peak_matmul_flops(device, dtype)
    achieved = flops / sec
    return {
        "modality": modality,
        "batch": batch,
        "input_shape": list(x.shape),
        "dtype": str(dtype).replace("torch.", ""),
        "params_m": sum(p.numel() for p in enc.parameters()) / 1e6,
        "seconds_per_batch": sec,
        "samples_per_s": batch / sec,
        "gflops_per_sample": flops / batch / 1e9,
        "achieved_gflops_per_s": achieved / 1e9,
        "peak_matmul_gflops_per_s": peak / 1e9,
        "mfu": achieved / peak,
        "peak_memory_mib": mem.peak_mib,
    }


def _run(args: argparse.Namespace) -> int:
    import bind

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    args.modality = args.modality or vision_modality()
    model = (
        bind.load_model(args.model, modalities=[args.modality], attn_backend=args.backend)
        if not args.model_dir
        else bind.load_model(args.model_dir)
    )
    if args.model_dir:
        for enc in model.encoders.values():
            if hasattr(enc, "trunk"):
                enc.trunk.set_backend(args.backend)
    res = bench_encoder(model, args.modality, args.batch, device, dtype, iters=args.iters)
    write_json(
        {
            "suite": "encoders",
            "model": args.model_dir or args.model,
            "backend": args.backend,
            "env": environment(),
            "result": res,
        },
        args.json,
    )
    return 0


def add_suite(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encoders", help="encoder forward throughput, FLOPs, MFU, peak memory")
    p.add_argument("--model", default="bind-base", help="named model config")
    p.add_argument("--model-dir", default=None, help="a saved / converted model directory instead of --model")
    p.add_argument("--modality", default=None, help="default: the modality of the plugin whose tower is 'vision'")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--backend", default="sdpa", choices=["sdpa", "math", "xformers"])
    p.add_argument("--device", default=None)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--json", default=None, help="write the result JSON here")
    p.set_defaults(func=_run)
