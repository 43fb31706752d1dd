"""``bindspace bench attention``: forward and forward + backward time of scaled dot-product attention per sequence
length, for torch's flash kernel, torch's math kernel and what ``bind``'s ``sdpa`` backend picks
(:func:`bind.nn.attention.attention`: in CPU training, the math kernel computing in bf16 for bf16 up to
:data:`~bind.nn.attention.CPU_BF16_MAX_KEYS` keys, in fp32 for fp16 up to
:data:`~bind.nn.attention.CPU_MATH_MAX_KEYS`). The measurement behind that choice; read the ratios.
"""

from __future__ import annotations

import argparse
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from bind.bench.common import environment, resolve_device, suite_command, time_fn

#: "flash": torch's flash kernel, or its memory-efficient one where flash cannot run (fp32 on CUDA)
FUSED = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]


def _step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backward: bool, kernel: str):
    from bind.nn.attention import attention

    def run():
        x = [t.detach().requires_grad_(backward) for t in (q, k, v)]
        if kernel == "bind":
            out = attention(*x)
        else:
            with sdpa_kernel(FUSED if kernel == "flash" else [SDPBackend.MATH]):
                out = F.scaled_dot_product_attention(*x)
        if backward:
            out.float().sum().backward()

    return run


def run_attention_bench(
    lengths: list[int] = [64, 128, 256, 512],  # noqa: B006 - read only
    batch: int = 64,
    heads: int = 3,
    head_dim: int = 32,
    dtype: Literal["fp32", "bf16", "fp16"] = "bf16",
    device: str | None = None,
    iters: int = 5,
) -> dict[str, Any]:
    """Run the suite and return its JSON-ready result (see the module docstring).

    Args:
        lengths: sequence lengths (queries = keys)
        batch: sequences per call
        heads: attention heads
        head_dim: width per head
        dtype: precision of q, k, v
        device: torch device (default: CUDA where there is one, else the CPU)
        iters: timed calls (median)
    """
    if not lengths or min(lengths) < 1 or min(batch, heads, head_dim, iters) < 1:
        raise ValueError(
            f"bench attention: lengths must be one or more values >= 1 and batch, heads, head_dim, iters >= 1; got "
            f"lengths {lengths}, batch {batch}, heads {heads}, head_dim {head_dim}, iters {iters}"
        )
    dev = resolve_device(device)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    rows = []
    for n in lengths:
        q, k, v = (torch.randn(batch, heads, n, head_dim, device=dev, dtype=dt) for _ in range(3))
        row: dict[str, Any] = {"length": n}
        for backward in (False, True):
            phase = "forward_backward" if backward else "forward"
            sec = {kernel: time_fn(_step(q, k, v, backward, kernel), dev, iters=iters) for kernel in ("flash", "math")}
            sec["bind"] = time_fn(_step(q, k, v, backward, "bind"), dev, iters=iters)
            row[phase] = {f"{kernel}_ms": round(s * 1e3, 3) for kernel, s in sec.items()}
            row[phase]["math_over_flash"] = round(sec["math"] / sec["flash"], 3)
        rows.append(row)
    spec = dict(batch=batch, heads=heads, head_dim=head_dim, dtype=dtype, device=str(dev))
    return {"suite": "attention", **spec, "env": environment(), "result": rows}


def table(result: dict[str, Any]) -> str:
    lines = [f"{'length':>7} {'phase':<17} {'flash ms':>9} {'math ms':>9} {'bind ms':>9} {'math/flash':>10}"]
    for row in result["result"]:
        for phase in ("forward", "forward_backward"):
            r = row[phase]
            lines.append(
                f"{row['length']:>7} {phase:<17} {r['flash_ms']:>9.2f} {r['math_ms']:>9.2f} {r['bind_ms']:>9.2f} "
                f"{r['math_over_flash']:>10.2f}"
            )
    return "\n".join(lines)


def add_suite(sub: argparse._SubParsersAction) -> None:
    suite_command(sub, "attention", run_attention_bench, "SDPA flash vs math kernel time per length", table)
