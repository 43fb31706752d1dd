"""``bindspace bench encoders``: forward throughput, FLOPs per sample, achieved GFLOP/s, MFU and peak memory.

MFU = achieved FLOP/s / the FLOP/s of a large matmul measured in the same run on the same device (so it reads
"fraction of what this machine's GEMM reaches now", not of a datasheet number).
"""

from __future__ import annotations

import argparse
from typing import Any, Literal

import torch

from bind.bench.common import (
    PeakMemory,
    count_flops,
    environment,
    peak_matmul_flops,
    resolve_device,
    suite_command,
    time_fn,
    vision_modality,
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


def run_encoders_bench(
    model: str = "bind-base",
    model_dir: str | None = None,
    modality: str | None = None,
    batch: int = 32,
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32",
    backend: Literal["sdpa", "math", "xformers"] = "sdpa",
    device: str | None = None,
    iters: int = 3,
) -> dict[str, Any]:
    """Run the suite and return its JSON-ready result (see the module docstring).

    Args:
        model: named model config
        model_dir: a saved / converted model directory instead of ``model``
        modality: the encoder measured (default: the modality of the plugin whose tower is 'vision')
        batch: inputs per forward
        dtype: autocast precision of the forward
        backend: attention backend of the encoder's trunk
        device: torch device (default: CUDA where there is one, else the CPU)
        iters: timed forwards (median)
    """
    import bind

    modality = modality or vision_modality()
    if model_dir:
        bind_model = bind.load_model(model_dir)
        for enc in bind_model.encoders.values():
            if hasattr(enc, "trunk"):
                enc.trunk.set_backend(backend)
    else:
        bind_model = bind.load_model(model, modalities=[modality], attn_backend=backend)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    res = bench_encoder(bind_model, modality, batch, resolve_device(device), dt, iters=iters)
    return {"suite": "encoders", "model": model_dir or model, "backend": backend, "env": environment(), "result": res}


def add_suite(sub: argparse._SubParsersAction) -> None:
    suite_command(sub, "encoders", run_encoders_bench, "encoder forward throughput, FLOPs, MFU, peak memory")
