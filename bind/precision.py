"""Precision policy: ``auto`` runs inference under bf16 autocast where the hardware has fast bf16, fp32 elsewhere.

* CUDA: bf16 when ``torch.cuda.is_bf16_supported()`` (Ampere and newer).
* CPU: bf16 only with native bf16 dot products (AVX-512-BF16 or AMX tiles, as torch's own CPU dispatch reports them).
  Without them oneDNN emulates bf16 and a matmul runs ~400x *slower* than fp32 (measured on an AVX2 EPYC:
  0.33 vs 137 GFLOP/s), so ``auto`` must not guess from "the CPU can store bf16".
* ``BIND_PRECISION=fp32|bf16`` in the environment overrides what ``auto`` resolves to (tests pin fp32 with it).

Explicit ``fp32`` / ``bf16`` always win. Embeddings are returned as fp32 and re-normalised whatever ran inside
(:meth:`bind.model.BindModel.encode`); training maps the same names to Lightning's ``32-true`` / ``bf16-mixed``.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch

PRECISIONS = ("auto", "fp32", "bf16")
ENV_VAR = "BIND_PRECISION"
LIGHTNING = {"fp32": "32-true", "bf16": "bf16-mixed"}


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX-512-BF16 or AMX), i.e. faster than fp32."""
    cpu = getattr(torch._C, "_cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return bool(cpu is not None and any(getattr(cpu, c, lambda: False)() for c in checks))


def bf16_fast(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 autocast is expected to beat fp32 on ``device``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False


def check_precision(precision: str | None) -> str:
    """``precision`` validated (None means ``auto``)."""
    precision = precision or "auto"
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {PRECISIONS}")
    return precision


def resolve_precision(precision: str | None = "auto", device: torch.device | str = "cpu") -> str:
    """``fp32`` or ``bf16``: what ``precision`` means on ``device`` (``auto``: the environment, then the hardware)."""
    precision = check_precision(precision)
    if precision != "auto":
        return precision
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env and env != "auto":
        if env not in ("fp32", "bf16"):
            raise ValueError(f"{ENV_VAR}={env!r}: expected auto, fp32 or bf16")
        return env
    return "bf16" if bf16_fast(device) else "fp32"


def autocast(precision: str | None, device: torch.device | str) -> contextlib.AbstractContextManager:
    """A bf16 autocast context when ``precision`` resolves to bf16 on ``device``, else a no-op."""
    device = torch.device(device)
    if resolve_precision(precision, device) == "bf16" and device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lightning_precision(precision: str | None = "auto", device: str = "auto") -> str:
    """Lightning's ``Trainer(precision=...)`` for a bind precision; Lightning's own names pass through unchanged."""
    if precision not in (None, *PRECISIONS):
        return str(precision)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return LIGHTNING[resolve_precision(precision, device)]
