"""Attention backends agree on the same weights; masks, key/value bias tokens and causal masks behave."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bind.errors import BackendError
from bind.nn.attention import Attention, attention, available_backends, build_mask
from bind.nn.transformer import Transformer


def _pair(**kw):
    torch.manual_seed(0)
    a = Attention(32, 4, backend="sdpa", **kw)
    b = Attention(32, 4, backend="math", **kw)
    b.load_state_dict(a.state_dict())
    return a.eval(), b.eval()


@pytest.mark.parametrize("fused_qkv", [True, False])
@pytest.mark.parametrize("kv_bias_tokens", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [False, True])
def test_sdpa_matches_math(fused_qkv, kv_bias_tokens, causal, padding):
    a, b = _pair(fused_qkv=fused_qkv, kv_bias_tokens=kv_bias_tokens)
    x = torch.randn(3, 9, 32)
    pad = None
    if padding:
        pad = torch.zeros(3, 9, dtype=torch.bool)
        pad[0, 6:] = True
        pad[2, 3:] = True
    ya = a(x, causal=causal, key_padding_mask=pad)
    yb = b(x, causal=causal, key_padding_mask=pad)
    assert torch.isfinite(ya).all()
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=0)


def test_math_equals_explicit_softmax_reference():
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))
    ref = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, -1) @ v
    torch.testing.assert_close(attention(q, k, v, backend="math"), ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(attention(q, k, v, backend="sdpa"), ref, atol=1e-5, rtol=0)


def test_matches_nn_multihead_attention_with_bias_kv_and_padding():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, bias=True, add_bias_kv=True, batch_first=True).eval()
    ours = Attention(32, 4, kv_bias_tokens=True).eval()
    ours.qkv.weight.data.copy_(mha.in_proj_weight)
    ours.qkv.bias.data.copy_(mha.in_proj_bias)
    ours.bias_k.data.copy_(mha.bias_k.transpose(0, 1))
    ours.bias_v.data.copy_(mha.bias_v.transpose(0, 1))
    ours.proj.load_state_dict(mha.out_proj.state_dict())
    x = torch.randn(2, 7, 32)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 4:] = True
    causal = torch.ones(7, 7, dtype=torch.bool).triu(1)  # nn.MultiheadAttention: True = masked
    ref, _ = mha(x, x, x, key_padding_mask=pad, attn_mask=causal, need_weights=False)
    for backend in ("sdpa", "math"):
        ours.backend = backend
        torch.testing.assert_close(ours(x, causal=True, key_padding_mask=pad), ref, atol=1e-5, rtol=0)


def test_causal_mask_blocks_future_tokens():
    a, _ = _pair()
    x = torch.randn(1, 6, 32)
    y1 = a(x, causal=True)
    x2 = x.clone()
    x2[:, 4:] += 10.0
    y2 = a(x2, causal=True)
    torch.testing.assert_close(y1[:, :4], y2[:, :4])
    assert not torch.allclose(y1[:, 4:], y2[:, 4:])


def test_padding_mask_ignores_padded_keys():
    a, _ = _pair()
    x = torch.randn(1, 6, 32)
    pad = torch.tensor([[False] * 4 + [True] * 2])
    x2 = x.clone()
    x2[:, 4:] = torch.randn(1, 2, 32)
    torch.testing.assert_close(a(x, key_padding_mask=pad)[:, :4], a(x2, key_padding_mask=pad)[:, :4])


def test_build_mask_shapes_and_extra_keys():
    pad = torch.tensor([[False, False, True]])
    m = build_mask(1, 3, 3, causal=True, key_padding_mask=pad, extra_keys=1)
    assert m.shape == (1, 1, 3, 4)
    assert m[0, 0, :, -1].all()  # bias token always attendable
    assert not m[0, 0, 0, 1] and not m[0, 0, 2, 2]
    assert build_mask(2, 3, 3) is None


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown attention backend"):
        Attention(32, 4, backend="flash9")


def test_xformers_backend_refuses_cpu_tensors():
    a = Attention(32, 4, backend="xformers")
    with pytest.raises(RuntimeError, match="xformers"):
        a(torch.randn(1, 4, 32))


def test_xformers_built_for_another_torch_is_unavailable_with_the_reason(monkeypatch):
    """An xformers wheel built for another torch imports, but its CUDA library does not load and it then has no
    operator for any input: it is not offered as a backend, and asking for it says why in one line."""
    import importlib
    import sys
    import types

    attn = importlib.import_module("bind.nn.attention")
    fake = types.ModuleType("xformers")
    fake.__version__ = "0.0.35"
    fake._has_cpp_library = False
    fake._cpp_lib = types.SimpleNamespace(
        _cpp_library_load_exception=OSError(
            "xFormers can't load C++/CUDA extensions. xFormers was built for:\n"
            "    PyTorch 2.10.0+cu128 with CUDA 1208 (you have 2.11.0+cu130)"
        )
    )
    fake.ops = types.ModuleType("xformers.ops")
    monkeypatch.setitem(sys.modules, "xformers", fake)
    monkeypatch.setitem(sys.modules, "xformers.ops", fake.ops)
    attn._xformers_status.cache_clear()
    try:
        assert "xformers" not in available_backends()
        with pytest.raises(BackendError) as e:
            Attention(32, 4, backend="xformers")(torch.randn(1, 4, 32))
    finally:
        attn._xformers_status.cache_clear()
    msg = str(e.value)
    assert "\n" not in msg and "xformers 0.0.35 cannot load its CUDA kernels" in msg and "built for" in msg
    assert "PyTorch 2.10.0+cu128" in msg and "backend='sdpa'" in msg


@pytest.mark.cuda
@pytest.mark.skipif("xformers" not in available_backends(), reason="needs CUDA and xformers")
@pytest.mark.parametrize("causal,padding,kv", [(False, False, False), (True, False, False), (False, True, True)])
def test_xformers_matches_sdpa_on_cuda(causal, padding, kv):
    torch.manual_seed(0)
    a = Attention(64, 4, backend="sdpa", kv_bias_tokens=kv).cuda().eval()
    b = Attention(64, 4, backend="xformers", kv_bias_tokens=kv).cuda().eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 37, 64, device="cuda")
    pad = None
    if padding:
        pad = torch.zeros(2, 37, dtype=torch.bool, device="cuda")
        pad[1, 20:] = True
    torch.testing.assert_close(
        a(x, causal=causal, key_padding_mask=pad), b(x, causal=causal, key_padding_mask=pad), atol=2e-5, rtol=0
    )
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ya, yb = a(x, causal=causal, key_padding_mask=pad), b(x, causal=causal, key_padding_mask=pad)
    torch.testing.assert_close(ya.float(), yb.float(), atol=2e-2, rtol=0)


@pytest.mark.parametrize("divided", [False, True])
def test_gradient_checkpointing_gives_same_gradients(divided):
    torch.manual_seed(0)
    t1 = Transformer(32, 2, 4, divided=divided, num_frames=3)
    t2 = Transformer(32, 2, 4, divided=divided, num_frames=3, grad_checkpointing=True)
    t2.load_state_dict(t1.state_dict())
    x = torch.randn(2, 3, 5, 32) if divided else torch.randn(2, 5, 32)
    for t in (t1, t2):
        t.train()
        F.mse_loss(t(x), torch.ones_like(x)).backward()
    for (n, p1), p2 in zip(t1.named_parameters(), t2.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, atol=1e-6, rtol=0, msg=n)


def _sdpa_kernels(fn) -> set[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages() if "flash_attention" in e.key or e.key == "aten::_softmax"}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("length", [16, 512])
def test_reduced_precision_cpu_training_avoids_the_flash_kernel_on_short_sequences(dtype, length):
    """torch's CPU flash backward in bf16 costs up to 4x SDPA's math kernel in bf16 on short sequences
    (``bindspace bench attention``): there, and only there, ``sdpa`` trains with the math kernel — same values."""
    from bind.nn.attention import CPU_BF16_MAX_KEYS

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, length, 16, dtype=dtype, requires_grad=True) for _ in range(3))

    def train_step():
        attention(q, k, v).float().sum().backward()

    kernels = _sdpa_kernels(train_step)
    expect_math = dtype == torch.bfloat16 and length <= CPU_BF16_MAX_KEYS
    assert any("flash" in name for name in kernels) != expect_math, kernels
    with torch.no_grad():  # inference keeps the flash kernel (faster forward at every length)
        assert any("flash" in name for name in _sdpa_kernels(lambda: attention(q, k, v)))
    ref = _math_reference(q.detach().float(), k.detach().float(), v.detach().float())
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    assert torch.allclose(attention(q, k, v).detach().float(), ref, atol=tol)


@pytest.mark.parametrize("masked", [False, True])
def test_reduced_precision_cpu_training_runs_sdpas_math_kernel_bf16_in_bf16(masked):
    """Short sequences train through SDPA's math kernel: bf16 computing in bf16 (torch's reduced-precision flag, set
    for the call only: 1.5x faster than in fp32), fp16 in fp32 (an fp16 score can overflow) — to the bit, gradients
    included; both close to an fp32 reference; a query with no key to attend to gives zeros."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    q32, k32, v32 = (torch.randn(2, 3, 33, 16) for _ in range(3))
    mask = torch.rand(2, 1, 33, 33) > 0.3 if masked else None
    if masked:
        mask[0, 0, 5] = False
    before = torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed()
    for dtype in (torch.bfloat16, torch.float16):
        runs = []
        for reference in (True, False):
            q, k, v = (t.to(dtype).requires_grad_() for t in (q32, k32, v32))
            if reference:
                torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(dtype == torch.bfloat16)
                with sdpa_kernel(SDPBackend.MATH):
                    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(before)
            else:
                out = attention(q, k, v, mask)
            out.float().square().sum().backward()
            runs.append((out.detach(), q.grad, k.grad, v.grad))
        assert all(torch.equal(a, b) for a, b in zip(*runs)), dtype
        assert torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed() == before  # the flag is put back
        assert torch.allclose(runs[1][0].float(), _math_reference(q32, k32, v32, mask), atol=3e-2), dtype
        if masked:
            assert not runs[1][0][0, :, 5].any() and torch.isfinite(runs[1][1]).all()


def test_math_backend_gives_zeros_for_a_query_with_no_key():
    q, k, v = (torch.randn(1, 2, 4, 8) for _ in range(3))
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    mask[0, 0, 2] = False
    out = attention(q, k, v, mask, backend="math")
    assert not out[0, :, 2].any() and torch.isfinite(out).all()
    torch.testing.assert_close(out, _math_reference(q, k, v, mask))


def _math_reference(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1).nan_to_num(0.0) @ v
