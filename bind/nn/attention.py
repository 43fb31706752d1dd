"""Multi-head attention with interchangeable backends.

Backends compute the same function on the same weights:

* ``sdpa``     — :func:`torch.nn.functional.scaled_dot_product_attention` (default; flash / memory-efficient
  kernels where torch has them, CPU and GPU). One exception, measured (``bindspace bench attention``): training in
  reduced precision on a CPU with short sequences, where torch's flash backward is slow, runs SDPA's math kernel —
  in bf16 computing in bf16 as autocast would (torch's ``allow_fp16_bf16_reduction_math_sdp`` for the call; by
  default the kernel takes q, k, v and every score matrix to fp32 and back: 1.5x slower), up to
  :data:`CPU_BF16_MAX_KEYS` keys; in fp16 in fp32 (an fp16 score can overflow), up to :data:`CPU_MATH_MAX_KEYS`.
* ``xformers`` — ``xformers.ops.memory_efficient_attention`` (CUDA only; Rabe & Staats 2021, "Self-attention Does
  Not Need O(n^2) Memory"), with block-diagonal masks for packed variable-length sequences.
* ``math``     — the explicit softmax(QK^T/sqrt(d))V reference, used by parity tests.

Masks use one convention everywhere: boolean, ``True`` = may attend. ``key_padding_mask`` is ``[B, Lk]`` with
``True`` marking *padding* (the ``nn.MultiheadAttention`` convention).
Key/value bias tokens (``add_bias_kv`` in ``nn.MultiheadAttention``, used by ImageBind) append one learned key and
value that every query may attend to.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from bind.errors import BackendError

BACKENDS = ("sdpa", "xformers", "math")
#: up to this many keys, bf16 training on a CPU runs SDPA's math kernel in bf16 instead of torch's flash kernel, whose
#: CPU backward is slow in torch 2.10. Forward + backward (``bindspace bench attention``: batch 64, 3 heads of 32)
#: against flash at 64, 128, 160, 192, 256 and 384 keys: 0.25x, 0.31x, 0.40x, 0.59x, 0.62x, 1.3x; the math kernel
#: computing in fp32 (torch's default, and bind's choice before) 0.35x, 0.6x, 0.75x, 1.25x, 1.8x, 2.2x. Forward
#: alone, and in fp32, flash is faster at every length
CPU_BF16_MAX_KEYS = 256
#: the same for fp16, which runs the math kernel in fp32 there (an fp16 score can overflow): up to 160 keys
CPU_MATH_MAX_KEYS = 160


@functools.cache
def _xformers_status():
    """``(xformers.ops, None)`` where xformers' kernels load, else ``(None, why not)``. An xformers built for another
    torch imports but cannot load its CUDA library, and then has no operator for any input."""
    try:
        import xformers  # noqa: PLC0415
        import xformers.ops as xops  # noqa: PLC0415
    except Exception as e:  # noqa: BLE001 — any import failure means "not available"
        return None, f"xformers is not importable ({type(e).__name__}: {e}); pip install 'bind[xformers]'"
    if not getattr(xformers, "_has_cpp_library", True):
        why = " ".join(str(getattr(xformers._cpp_lib, "_cpp_library_load_exception", "")).split())
        return None, (
            f"xformers {getattr(xformers, '__version__', '?')} cannot load its CUDA kernels under torch "
            f"{torch.__version__} ({why}); install the xformers build for this torch (bind pins the pair in "
            "constraints.txt)"
        )
    return xops, None


def _xformers_ops():
    return _xformers_status()[0]


def xformers_available() -> bool:
    return _xformers_ops() is not None and torch.cuda.is_available()


def unavailable_backends() -> dict[str, str]:
    """Backends this machine cannot run, each with the reason (``bindspace info`` prints them)."""
    xops, why = _xformers_status()
    if xops is None:
        return {"xformers": why}
    return {} if torch.cuda.is_available() else {"xformers": "needs CUDA; this machine has no CUDA device"}


def available_backends() -> list[str]:
    """Backends usable on this machine (``xformers`` needs CUDA and an xformers whose kernels load)."""
    return [b for b in BACKENDS if b != "xformers" or xformers_available()]


def build_mask(
    batch: int,
    lq: int,
    lk: int,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
    extra_keys: int = 0,
    device: torch.device | None = None,
) -> torch.Tensor | None:
    """Combine causal / padding / explicit masks into one boolean ``[B, 1, Lq, Lk + extra_keys]`` mask (True=attend).

    ``extra_keys`` columns (key/value bias tokens) are appended at the end and always attendable.
    Returns ``None`` when nothing is masked.
    """
    if not causal and key_padding_mask is None and attn_mask is None:
        return None
    mask = torch.ones(batch, 1, lq, lk, dtype=torch.bool, device=device)
    if causal:
        mask = mask & torch.ones(lq, lk, dtype=torch.bool, device=device).tril(diagonal=lk - lq)
    if key_padding_mask is not None:
        mask = mask & ~key_padding_mask.bool()[:, None, None, :]
    if attn_mask is not None:
        am = attn_mask if attn_mask.dtype == torch.bool else attn_mask > float("-inf")
        mask = mask & (am if am.dim() == 4 else am.reshape(-1, 1, lq, lk) if am.dim() == 3 else am[None, None])
    if extra_keys:
        mask = torch.cat([mask, mask.new_ones(batch, 1, lq, extra_keys)], dim=-1)
    return mask


def _math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float):
    """softmax(QK^T / sqrt(Dh)) V, the softmax in fp32; a query row with no key to attend to gives zeros, as SDPA's
    kernels do."""
    attn = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if mask is not None:
        attn = attn.masked_fill(~mask, float("-inf"))
    attn = attn.float().softmax(dim=-1)
    if mask is not None:
        attn = attn.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
    attn = attn.to(q.dtype)
    if dropout:
        attn = F.dropout(attn, p=dropout)
    return attn @ v


def _xformers(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float, causal_only: bool
):
    xops, why = _xformers_status()
    if xops is None:
        raise BackendError(f"attention backend 'xformers': {why}; or use backend='sdpa'")
    if not q.is_cuda:
        raise BackendError("attention backend 'xformers' needs CUDA tensors; use backend='sdpa' on CPU")
    # xformers layout is [B, L, H, Dh]
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    bias = None
    if causal_only:
        bias = xops.LowerTriangularMask()
    elif mask is not None:
        b, h, lq, lk = q.shape[0], q.shape[2], q.shape[1], k.shape[1]
        pad = (lk + 7) // 8 * 8  # xformers wants the bias' last dim 8-aligned in memory
        storage = torch.zeros(b, h, lq, pad, dtype=q.dtype, device=q.device)
        bias = storage[..., :lk]
        bias.masked_fill_(~mask.expand(b, h, lq, lk), float("-inf"))
    out = xops.memory_efficient_attention(q, k, v, attn_bias=bias, p=dropout)
    return out.transpose(1, 2)


@contextlib.contextmanager
def _bf16_math_kernel() -> Iterator[None]:
    """SDPA's math kernel computing in bf16 (torch's global ``allow_fp16_bf16_reduction_math_sdp``, set for the call
    and restored after)."""
    allowed = torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed()
    torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(True)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(allowed)


def _cpu_training_kernel(q: torch.Tensor, k: torch.Tensor) -> contextlib.AbstractContextManager:
    """SDPA's math kernel for reduced-precision training on a CPU with few enough keys (:data:`CPU_BF16_MAX_KEYS`,
    :data:`CPU_MATH_MAX_KEYS`); otherwise torch's own choice."""
    if q.device.type == "cpu" and q.requires_grad and torch.is_grad_enabled():
        if q.dtype == torch.bfloat16 and k.shape[-2] <= CPU_BF16_MAX_KEYS:
            return _bf16_math_kernel()
        if q.dtype == torch.float16 and k.shape[-2] <= CPU_MATH_MAX_KEYS:
            return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    backend: str = "sdpa",
    dropout: float = 0.0,
    causal_only: bool = False,
) -> torch.Tensor:
    """Scaled dot-product attention on ``[B, H, L, Dh]`` tensors with a boolean mask (True = attend).

    ``causal_only`` says the mask is exactly a square lower-triangular mask, letting fused kernels use their
    native causal path.
    """
    if backend == "sdpa":
        with _cpu_training_kernel(q, k):
            if causal_only and q.shape[-2] == k.shape[-2]:
                return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    if backend == "math":
        if causal_only and mask is None:
            lq, lk = q.shape[-2], k.shape[-2]
            mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(diagonal=lk - lq)
        return _math(q, k, v, mask, dropout)
    if backend == "xformers":
        return _xformers(q, k, v, mask, dropout, causal_only and q.shape[-2] == k.shape[-2])
    raise ValueError(f"unknown attention backend {backend!r}; expected one of {BACKENDS}")


class Attention(nn.Module):
    """Multi-head self-attention (``qkv`` fused or ``q/k/v`` separate, optional key/value bias tokens)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        qkv_bias: bool = True,
        fused_qkv: bool = True,
        kv_bias_tokens: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        backend: str = "sdpa",
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        if backend not in BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; expected one of {BACKENDS}")
        self.heads, self.head_dim, self.backend, self.attn_drop = heads, dim // heads, backend, attn_drop
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        else:
            self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.bias_k = nn.Parameter(torch.zeros(1, 1, dim)) if kv_bias_tokens else None
        self.bias_v = nn.Parameter(torch.zeros(1, 1, dim)) if kv_bias_tokens else None
        if kv_bias_tokens:
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self,
        x: torch.Tensor,
        *,
        causal: bool = False,
        key_padding_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, n, d = x.shape
        if self.fused_qkv:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        extra = 0
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(b, 1, d).to(k.dtype)], dim=1)
            v = torch.cat([v, self.bias_v.expand(b, 1, d).to(v.dtype)], dim=1)
            extra = 1
        q, k, v = (t.reshape(b, -1, self.heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        causal_only = causal and key_padding_mask is None and attn_mask is None and extra == 0
        mask = (
            None
            if causal_only
            else build_mask(
                b,
                n,
                n,
                causal=causal,
                key_padding_mask=key_padding_mask,
                attn_mask=attn_mask,
                extra_keys=extra,
                device=x.device,
            )
        )
        out = attention(
            q,
            k,
            v,
            mask,
            backend=self.backend,
            dropout=self.attn_drop if self.training else 0.0,
            causal_only=causal_only,
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, d)))
