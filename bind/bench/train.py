"""``bindspace bench train``: training-step time and peak memory of LoRA vs full fine-tuning of one encoder.

Default: the ViT-B/16 encoder (width 768, depth 12, heads 12) of the plugin a vision tower serves (224-pixel images,
197 tokens; ``--modality audio --overrides '{"preprocess": {"preset": "imagebind", "clips": 1}}'``: ImageBind's
128 mel x 204 frame spectrograms, 228 tokens), batch 16, AdamW, InfoNCE against fixed unit-norm anchor embeddings (a
frozen anchor's cost is the same for both and left out). A step is ``zero_grad + forward + loss + backward + step``.
Each variant (``full``, ``lora`` and, with ``--grad-checkpointing``, both again with checkpointing) runs in its own
subprocess, so peak memory (CUDA allocator peak, or peak RSS growth over the built model on CPU: gradients,
optimiser state and activations) is not polluted by another variant's allocations. Read the ratios; absolute CPU
times move with the machine's load.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from bind.bench.common import (
    PeakMemory,
    environment,
    measure_in_subprocess,
    resolve_device,
    suite_command,
    time_fn,
    vision_modality,
)


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


def measure_variant(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_variant` from a JSON spec (its keyword arguments; ``device`` a string)."""
    return run_variant(**{**spec, "device": torch.device(spec["device"])})


def run_train_bench(
    modality: str | None = None,
    model: str = "bind-base",
    overrides: dict[str, Any] | None = None,
    batch: int = 16,
    rank: int | None = None,
    iters: int = 2,
    warmup: int = 1,
    grad_checkpointing: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Run the suite and return its JSON-ready result (see the module docstring); each variant in a subprocess.

    Args:
        modality: the encoder trained (default: the modality of the plugin whose tower is 'vision')
        model: named model config (bind-base: ViT-B/16 trunks)
        overrides: EncoderConfig overrides for the encoder (e.g. fewer layers or a smaller width for a quick run)
        batch: items per step
        rank: LoRA rank (default: the plugin's, LanguageBind's rank)
        iters: timed steps (median)
        warmup: steps before timing
        grad_checkpointing: also measure both with gradient checkpointing
        device: torch device (default: CUDA where there is one, else the CPU)
    """
    from bind.lora import LoraSpec

    modality = modality or vision_modality()
    rank = rank or LoraSpec.from_dict({}, modality).r
    spec = dict(modality=modality, model=model, batch=batch, iters=iters, warmup=warmup, lora_rank=rank)
    spec.update(overrides=overrides or {}, device=str(resolve_device(device)))
    variants = ["full", "lora"] + (["full+ckpt", "lora+ckpt"] if grad_checkpointing else [])
    rows = []
    for variant in variants:
        row = measure_in_subprocess("bind.bench.train:measure_variant", {**spec, "variant": variant})
        if "error" in row:
            raise RuntimeError(f"bench variant {variant} failed: {row['error']}")
        rows.append(row)
    by = {r["variant"]: r for r in rows}
    ratios = {
        "lora_over_full_time": by["lora"]["seconds_per_step"] / by["full"]["seconds_per_step"],
        "lora_over_full_memory": by["lora"]["peak_memory_mib"] / max(by["full"]["peak_memory_mib"], 1e-9),
    }
    return {
        "suite": "train",
        "modality": modality,
        "model": model,
        "batch": batch,
        "lora_rank": rank,
        "overrides": overrides or {},
        "env": environment(),
        "results": rows,
        "ratios": ratios,
    }


def add_suite(sub: argparse._SubParsersAction) -> None:
    suite_command(sub, "train", run_train_bench, "training step time and peak memory: LoRA vs full fine-tuning")
