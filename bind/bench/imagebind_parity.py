"""``bindspace bench imagebind-parity``: the converted ImageBind audio encoder vs a plain ``nn.MultiheadAttention``
implementation of the same weights (ImageBind-Huge audio dims: 768 / 12 / 12, key/value bias tokens, 16x16 patches
stride 10 over 128 x 204 fbank frames -> 228 + 1 tokens).

The reference (:class:`bind.checkpoints.imagebind_reference.ImageBindAudioReference`) restates ImageBind's audio path
with the published module names; its state dict is converted by :func:`bind.checkpoints.convert_imagebind_state_dict`
(random weights: the published ones are never bundled).
Reported: median seconds per batch (implementations interleaved per iteration, so load drift on a shared machine hits
all alike), the speed ratio reference / bind (one run), max |difference| of the outputs, peak memory of the first call.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, Literal

import torch

from bind.bench.common import PeakMemory, environment, resolve_device, suite_command, time_fn
from bind.checkpoints.imagebind_reference import DEPTH, FRAMES, HEADS, MEL, WIDTH, ImageBindAudioReference


def run_parity(
    batch: int = 4,
    device: str | None = None,
    backends: Sequence[Literal["sdpa", "math", "xformers"]] = ("sdpa", "math"),
    iters: int = 3,
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32",
    width: int = WIDTH,
    depth: int = DEPTH,
    heads: int = HEADS,
) -> dict[str, Any]:
    """Time reference and converted encoders on the same random fbank batch; outputs compared in ``dtype``.

    Args:
        batch: clips per forward
        device: torch device (default: CUDA where there is one, else the CPU)
        backends: bind's attention backends, one row each
        iters: timed rounds (interleaved, median)
        dtype: precision of both implementations
        width: trunk width (smaller for a smoke test; default ImageBind-Huge's)
        depth: trunk depth
        heads: attention heads
    """
    import bind
    from bind.checkpoints import convert_imagebind_state_dict

    dev = resolve_device(device)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    torch.manual_seed(0)
    ref, m = ImageBindAudioReference(width, depth, heads).eval(), ImageBindAudioReference.modality
    model = bind.create_model("imagebind-huge", modalities=[m], width=width, depth=depth, heads=heads)
    convert_imagebind_state_dict(ref.state_dict(), model, origin=f"random ImageBind-Huge {m} weights")
    ref, model = ref.to(dev, dt), model.to(dev, dt).eval()
    x = torch.randn(batch, 1, MEL, FRAMES, device=dev, dtype=dt)
    scale = model.logit_scale(m)

    def bind_fn(backend):
        def run():
            model.encoder(m).trunk.set_backend(backend)
            return model.encode(m, x) * scale

        return run

    impls = {"reference nn.MultiheadAttention": lambda: ref(x), **{f"bind ({b})": bind_fn(b) for b in backends}}
    outputs, memory, times = {}, {}, {name: [] for name in impls}
    with torch.inference_mode():
        for name, fn in impls.items():  # first call: output, warm-up, peak memory
            with PeakMemory(dev) as mem:
                outputs[name] = fn()
            memory[name] = mem.peak_mib
        for _ in range(iters):  # interleaved, so load drift on a shared machine hits every implementation alike
            for name, fn in impls.items():
                times[name].append(time_fn(fn, dev, warmup=0, iters=1))
    want = outputs["reference nn.MultiheadAttention"].float()
    ref_sec = sorted(times["reference nn.MultiheadAttention"])[iters // 2]
    rows = []
    for name in impls:
        sec = sorted(times[name])[iters // 2]
        row = {"impl": name, "seconds_per_batch": sec, "peak_memory_mib": memory[name], "samples_per_s": batch / sec}
        if name != "reference nn.MultiheadAttention":
            diff = (outputs[name].float() - want).abs().max().item()
            row.update(
                speedup_vs_reference=ref_sec / sec, max_abs_diff=diff, max_abs_diff_unit_embedding=diff / float(scale)
            )
        rows.append(row)
    return {
        "suite": "imagebind-parity",
        "encoder": f"ImageBind-Huge {m} ({width}/{depth}/{heads}, kv bias tokens)",
        "input_shape": list(x.shape),
        "dtype": dtype,
        "device": str(dev),
        "env": environment(),
        "results": rows,
    }


def add_suite(sub: argparse._SubParsersAction) -> None:
    help = f"converted ImageBind {ImageBindAudioReference.modality} encoder vs nn.MultiheadAttention reference"
    suite_command(sub, "imagebind-parity", run_parity, help)
