"""``bindspace bench imagebind-parity``: the converted ImageBind audio encoder vs a plain ``nn.MultiheadAttention``
implementation of the same weights (ImageBind-Huge audio dims: 768 / 12 / 12, key/value bias tokens, 16x16 patches
stride 10 over 128 x 204 fbank frames -> 228 + 1 tokens).

The reference restates ImageBind's audio path (facebookresearch/ImageBind: ``AudioPreprocessor`` +
``PatchEmbedGeneric``, ``SimpleTransformer`` of ``BlockWithMasking`` with ``nn.MultiheadAttention(add_bias_kv=True)``,
sequence-first, LayerNorm + CLS + Linear head, ``Normalize`` + fixed ``LearnableLogitScaling(20)``) with the published
module names, so its state dict has the published key layout; it is converted by
:func:`bind.checkpoints.convert_imagebind_state_dict` (random weights: the published ones are never bundled).
Reported: median seconds per batch (implementations interleaved per iteration, so load drift on a shared machine hits
all alike), the speed ratio reference / bind (one run), max |difference| of the outputs, peak memory of the first call.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

from bind.bench.common import PeakMemory, environment, time_fn, write_json

WIDTH, DEPTH, HEADS, OUT, MEL, FRAMES = 768, 12, 12, 1024, 128, 204


class _Stem(nn.Module):  # PatchEmbedGeneric([Conv2d], norm_layer=LayerNorm)
    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, width, 16, 10, bias=False)
        self.norm_layer = nn.LayerNorm(width)


class _PosHelper(nn.Module):
    def __init__(self, tokens: int, width: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, width) * width**-0.5)


class _Pre(nn.Module):  # AudioPreprocessor
    def __init__(self, width: int, mel: int, frames: int) -> None:
        super().__init__()
        self.rgbt_stem = _Stem(width)
        n = ((mel - 16) // 10 + 1) * ((frames - 16) // 10 + 1)
        self.pos_embedding_helper = _PosHelper(n + 1, width)
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * width**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.rgbt_stem.norm_layer(self.rgbt_stem.proj(x).flatten(2).transpose(1, 2))
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        return t + self.pos_embedding_helper.pos_embed


class _Mlp(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):  # BlockWithMasking
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, bias=True, add_bias_kv=True)
        self.norm_1, self.norm_2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
        self.mlp = _Mlp(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=None)[0]
        return x + self.mlp(self.norm_2(x))


class _Trunk(nn.Module):  # SimpleTransformer (sequence-first, no pre-LN for audio)
    def __init__(self, width: int, depth: int, heads: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[_Block(width, heads) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.transpose(0, 1)).transpose(0, 1)


class _Scale(nn.Module):  # LearnableLogitScaling(20, learnable=False)
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("log_logit_scale", torch.tensor(math.log(20.0)))


class ImageBindAudioReference(nn.Module):
    """ImageBind's audio encoder, plain PyTorch, published key names (``modality_*.audio.*``)."""

    def __init__(
        self,
        width: int = WIDTH,
        depth: int = DEPTH,
        heads: int = HEADS,
        out: int = OUT,
        mel: int = MEL,
        frames: int = FRAMES,
    ) -> None:
        super().__init__()
        self.modality_preprocessors = nn.ModuleDict({"audio": _Pre(width, mel, frames)})
        self.modality_trunks = nn.ModuleDict({"audio": _Trunk(width, depth, heads)})
        self.modality_heads = nn.ModuleDict(
            {"audio": nn.Sequential(nn.LayerNorm(width, eps=1e-6), nn.Identity(), nn.Linear(width, out, bias=False))}
        )
        self.modality_postprocessors = nn.ModuleDict({"audio": nn.Sequential(nn.Identity(), _Scale())})
        with torch.no_grad():
            for blk in self.modality_trunks["audio"].blocks:
                nn.init.normal_(blk.attn.bias_k, std=0.02)
                nn.init.normal_(blk.attn.bias_v, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.modality_trunks["audio"](self.modality_preprocessors["audio"](x))
        head = self.modality_heads["audio"]
        emb = F.normalize(head[2](head[0](tokens)[:, 0]), dim=-1)
        return emb * self.modality_postprocessors["audio"][1].log_logit_scale.exp().clamp(max=100)


def run_parity(
    batch: int = 4,
    device: str | None = None,
    backends: tuple[str, ...] = ("sdpa", "math"),
    iters: int = 3,
    dtype: str = "fp32",
    width: int = WIDTH,
    depth: int = DEPTH,
    heads: int = HEADS,
) -> dict:
    """Time reference and converted encoders on the same random fbank batch; outputs compared in ``dtype``.

    ``width`` / ``depth`` / ``heads`` shrink the trunk (smoke tests); the defaults are ImageBind-Huge's audio trunk.
    """
    import bind
    from bind.checkpoints import convert_imagebind_state_dict

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    torch.manual_seed(0)
    ref = ImageBindAudioReference(width, depth, heads).eval()
    model = bind.create_model("imagebind-huge", modalities=["audio"], width=width, depth=depth, heads=heads)
    convert_imagebind_state_dict(ref.state_dict(), model, origin="random ImageBind-Huge audio weights")
    ref, model = ref.to(dev, dt), model.to(dev, dt).eval()
    x = torch.randn(batch, 1, MEL, FRAMES, device=dev, dtype=dt)
    scale = model.logit_scale("audio")

    def bind_fn(backend):
        def run():
            model.encoder("audio").trunk.set_backend(backend)
            return model.encode("audio", x) * scale

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
        "encoder": f"ImageBind-Huge audio ({width}/{depth}/{heads}, kv bias tokens)",
        "input_shape": list(x.shape),
        "dtype": dtype,
        "device": str(dev),
        "env": environment(),
        "results": rows,
    }


def _run(args: argparse.Namespace) -> int:
    write_json(run_parity(args.batch, args.device, tuple(args.backends), args.iters, args.dtype), args.json)
    return 0


def add_suite(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("imagebind-parity", help="converted ImageBind audio encoder vs nn.MultiheadAttention reference")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--device", default=None)
    p.add_argument("--backends", nargs="+", default=["sdpa", "math"], choices=["sdpa", "math", "xformers"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--json", default=None, help="write the result JSON here")
    p.set_defaults(func=_run)
