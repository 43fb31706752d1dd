"""``bindspace bench train``: training-step time and peak memory of LoRA vs full fine-tuning of one encoder.

Default: a ViT-B/16 audio encoder (width 768, depth 12, heads 12; ImageBind spectrograms, 128 mel x 204 frames, one
clip, patch 16 stride 10 -> 228 tokens), batch 16, AdamW, InfoNCE against fixed unit-norm anchor embeddings (a frozen
anchor's cost is the same for both and left out). A step is ``zero_grad + forward + loss + backward + step``.
Each variant (``full``, ``lora`` and, with ``--grad-checkpointing``, both again with checkpointing) runs in its own
subprocess, so peak memory (CUDA allocator peak, or peak RSS growth over the built model on CPU: gradients,
optimiser state and activations) is not polluted by another variant's allocations. Read the ratios; absolute CPU
times move with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

import torch

from bind.bench.common import PeakMemory, environment, time_fn, write_json


def build_encoder(
    modality: str, model: str, lora_rank: int, grad_checkpointing: bool, overrides: dict[str, Any]
) -> torch.nn.Module:
    """A :class:`~bind.model.BindModel` holding only ``modality`` from the named config (plus ``overrides``)."""
    from bind.factory import _merge, expand_config
    from bind.lora import apply_lora
    from bind.model import BindModel
    from bind.registry import model_config_dict

    raw = model_config_dict(model)
    raw.setdefault("encoders", {})
    raw["encoders"][modality] = _merge(raw["encoders"].get(modality) or {}, overrides)
    bind_model = BindModel(expand_config(raw, [modality])).train()
    if lora_rank:
        apply_lora(bind_model, modality, {"r": lora_rank})
    if grad_checkpointing:
        bind_model.encoder(modality).set_grad_checkpointing(True)
    return bind_model


def run_variant(
    modality: str,
    model: str,
    variant: str,
    batch: int,
    iters: int,
    warmup: int,
    lora_rank: int,
    overrides: dict[str, Any],
    device: torch.device,
) -> dict[str, Any]:
    """Time and measure one variant in this process."""
    from bind.bench.encoders import example_batch
    from bind.losses import contrastive_loss

    torch.manual_seed(0)
    lora, ckpt = variant.startswith("lora"), variant.endswith("+ckpt")
    bind_model = build_encoder(modality, model, lora_rank if lora else 0, ckpt, overrides).to(device)
    x = example_batch(bind_model, modality, batch).to(device)
    anchors = torch.nn.functional.normalize(torch.randn(batch, bind_model.embed_dim, device=device), dim=-1)
    params = [p for p in bind_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1)
    enc = bind_model.encoder(modality)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss, _ = contrastive_loss(enc(x), anchors, enc.get_logit_scale())
        loss.backward()
        opt.step()

    with PeakMemory(device) as mem:
        sec = time_fn(step, device, warmup=warmup, iters=iters)
    total = sum(p.numel() for p in bind_model.parameters())
    trainable = sum(p.numel() for p in params)
    return {
        "variant": variant,
        "seconds_per_step": sec,
        "samples_per_s": batch / sec,
        "peak_memory_mib": mem.peak_mib,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": 100.0 * trainable / total,
        "input_shape": list(x.shape),
    }


def _variants(args: argparse.Namespace) -> list[str]:
    base = ["full", "lora"]
    return base + [v + "+ckpt" for v in base] if args.grad_checkpointing else base


def _run(args: argparse.Namespace) -> int:
    from bind.lora import LoraSpec

    overrides = json.loads(args.overrides) if args.overrides else {}
    args.rank = args.rank or LoraSpec.from_dict({}, args.modality).r
    if args.worker:  # one variant, result as JSON on the last stdout line
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        res = run_variant(
            args.modality, args.model, args.worker, args.batch, args.iters, args.warmup, args.rank, overrides, device
        )
        print(json.dumps(res))
        return 0
    rows = []
    for variant in _variants(args):
        cmd = [
            sys.executable,
            "-m",
            "bind",
            "bench",
            "train",
            "--worker",
            variant,
            "--modality",
            args.modality,
            "--model",
            args.model,
            "--batch",
            str(args.batch),
            "--iters",
            str(args.iters),
            "--warmup",
            str(args.warmup),
            "--rank",
            str(args.rank),
            "--overrides",
            json.dumps(overrides),
        ]
        if args.device:
            cmd += ["--device", args.device]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"bench variant {variant} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    by = {r["variant"]: r for r in rows}
    ratios = {
        "lora_over_full_time": by["lora"]["seconds_per_step"] / by["full"]["seconds_per_step"],
        "lora_over_full_memory": by["lora"]["peak_memory_mib"] / max(by["full"]["peak_memory_mib"], 1e-9),
    }
    write_json(
        {
            "suite": "train",
            "modality": args.modality,
            "model": args.model,
            "batch": args.batch,
            "lora_rank": args.rank,
            "overrides": overrides,
            "env": environment(),
            "results": rows,
            "ratios": ratios,
        },
        args.json,
    )
    return 0


def add_suite(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="training step time and peak memory: LoRA vs full fine-tuning")
    p.add_argument("--modality", default="audio")
    p.add_argument("--model", default="bind-base", help="named model config (bind-base: ViT-B/16 trunks)")
    p.add_argument(
        "--overrides",
        default='{"preprocess": {"preset": "imagebind", "clips": 1}}',
        help="JSON EncoderConfig overrides for the encoder (e.g. fewer layers or a smaller width for a quick run)",
    )
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rank", type=int, default=None, help="LoRA rank (default: the plugin's, LanguageBind's rank)")
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--grad-checkpointing", action="store_true", help="also measure both with checkpointing")
    p.add_argument("--device", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="write the result JSON here")
    p.set_defaults(func=_run)
