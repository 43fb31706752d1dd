"""LoRA adapters on encoder trunks (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") via peft.

LanguageBind (Zhu et al. 2024) trains every modality encoder from a CLIP ViT with LoRA on the attention projections
(alpha 16, dropout 0, rank 16 for video / audio, 2 for depth / thermal), keeping the stem, head and temperature fully
trainable. Here:

* :func:`apply_lora` injects peft LoRA layers (``peft.inject_adapter_in_model``) into one modality's trunk (bind's
  :class:`~bind.nn.transformer.Transformer`, or a transformers tower), freezes the trunk's base weights and leaves
  the parts named in ``LoraSpec.trainable`` (stem, CLS token, head, logit scale, ...) trainable;
* :func:`save_adapters` / :func:`load_adapters` store only what was trained (LoRA matrices + those parts) as
  ``adapter_model.safetensors`` + ``adapter_config.json``, apart from the base model;
* :func:`merge_lora` folds ``W + (alpha / r) B A`` into the base weights and removes the peft wrappers, giving a
  plain :class:`~bind.model.BindModel` that ``save_pretrained`` / ``load_model`` handle;
* :func:`trainable_report` counts trainable / total parameters per modality.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from bind.io import atomic_directory
from bind.registry import get_modality, list_modalities

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
#: attention projections of bind's blocks (fused ``qkv`` or separate ``q/k/v_proj``, output ``proj``)
ATTENTION_TARGETS = ("qkv", "q_proj", "k_proj", "v_proj", "proj")
MLP_TARGETS = ("fc1", "fc2")


@dataclass
class LoraSpec:
    """LoRA hyper-parameters of one modality encoder.

    ``targets``: module-name suffixes inside the trunk that get adapters (attention by default, as LanguageBind;
    add ``fc1``/``fc2`` for the MLP). ``trainable``: name prefixes of encoder parameters outside the trunk that stay
    fully trainable. ``trunk_trainable``: trunk modules trained in full, matched by name component (the temporal
    layers of divided space-time video trunks, which a pretrained image ViT does not have).
    """

    r: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ATTENTION_TARGETS
    trainable: tuple[str, ...] = ("stem", "cls_token", "ln_pre", "head", "logit_scale", "proj")
    trunk_trainable: tuple[str, ...] = ("temporal_embedding", "temporal_norm", "temporal_attn")
    extra: dict[str, Any] = field(default_factory=dict)  # further peft.LoraConfig arguments

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        self.targets, self.trainable = tuple(self.targets), tuple(self.trainable)
        self.trunk_trainable = tuple(self.trunk_trainable)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["targets"], d["trainable"] = list(self.targets), list(self.trainable)
        d["trunk_trainable"] = list(self.trunk_trainable)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | LoraSpec | None, modality: str | None = None) -> LoraSpec:
        if isinstance(d, LoraSpec):
            return d
        d = dict(d or {})
        if "rank" in d:
            d["r"] = d.pop("rank")
        if "r" not in d and modality in list_modalities() and get_modality(modality).lora_rank is not None:
            d["r"] = get_modality(modality).lora_rank  # the plugin's default (LanguageBind's published rank)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"LoRA spec{f' of {modality}' if modality else ''}: unknown fields {sorted(unknown)}; "
                f"known: {sorted(known)}"
            )
        return cls(**d)


def _trunk(encoder: nn.Module) -> tuple[str, nn.Module]:
    for name in ("trunk", "tower"):
        if isinstance(getattr(encoder, name, None), nn.Module):
            return name, getattr(encoder, name)
    raise TypeError(f"{type(encoder).__name__} has neither a bind trunk nor a transformers tower to adapt")


def lora_specs(model: nn.Module) -> dict[str, LoraSpec]:
    """The LoRA spec of every modality of ``model`` that currently carries adapters."""
    return dict(getattr(model, "_lora_specs", {}))


def apply_lora(model: nn.Module, modality: str, spec: LoraSpec | dict[str, Any] | None = None) -> LoraSpec:
    """Inject LoRA adapters into ``modality``'s trunk of a :class:`~bind.model.BindModel` (in place).

    Afterwards only the adapters and the encoder parameters whose names start with one of ``spec.trainable`` (and
    that lie outside the trunk) require gradients. Returns the spec used.
    """
    from peft import LoraConfig, inject_adapter_in_model

    spec = LoraSpec.from_dict(spec, modality)
    if modality in lora_specs(model):
        raise ValueError(f"{modality}: LoRA adapters are already applied")
    encoder = model.encoder(modality)
    trunk_name, trunk = _trunk(encoder)
    present = {n.rsplit(".", 1)[-1] for n, m in trunk.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    targets = [t for t in spec.targets if t in present]
    if not targets:
        raise ValueError(
            f"{modality}: none of the LoRA targets {list(spec.targets)} is a layer of its {trunk_name} "
            f"(its linear layers: {sorted(present)})"
        )
    config = LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets, bias="none", **spec.extra
    )
    inject_adapter_in_model(config, trunk, adapter_name="default")
    for name, p in encoder.named_parameters():
        if name.startswith(trunk_name + "."):
            parts = name.split(".")
            train = "lora_" in name or any(t in parts for t in spec.trunk_trainable)
        else:
            train = any(name == t or name.startswith(t + ".") for t in spec.trainable)
        p.requires_grad_(train)
    if modality in model.config.frozen:
        model.config.frozen.remove(modality)
    specs = lora_specs(model)
    specs[modality] = spec
    model._lora_specs = specs
    return spec


def _is_lora_layer(module: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return isinstance(module, LoraLayer)


def merge_lora(model: nn.Module, modalities: list[str] | None = None) -> nn.Module:
    """Fold the adapters of ``modalities`` (default: all) into their base weights and drop the peft wrappers.

    The result is a plain :class:`~bind.model.BindModel` whose state dict matches its config again (so
    ``save_pretrained`` / ``from_pretrained`` work). Every parameter of a merged encoder becomes trainable again.
    """
    specs = lora_specs(model)
    for m in list(modalities or specs):
        if m not in specs:
            raise ValueError(f"{m}: no LoRA adapters to merge (adapted: {sorted(specs)})")
        _, trunk = _trunk(model.encoder(m))
        for name, module in list(trunk.named_modules()):
            if not _is_lora_layer(module):
                continue
            module.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            setattr(trunk.get_submodule(parent_name) if parent_name else trunk, child, module.get_base_layer())
        for p in model.encoder(m).parameters():
            p.requires_grad_(True)
        del specs[m]
    model._lora_specs = specs
    return model


def adapter_state_dict(model: nn.Module, modalities: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Every trainable tensor of the adapted modalities (LoRA matrices + trainable stem / head / scale)."""
    specs = lora_specs(model)
    out = {}
    for m in modalities or list(specs):
        prefix = f"encoders.{m}."
        for name, p in model.encoder(m).named_parameters():
            if p.requires_grad:
                out[prefix + name] = p.detach().cpu().contiguous()
    return out


def save_adapters(model: nn.Module, directory: str | Path, modalities: list[str] | None = None) -> Path:
    """Write the adapters (and trained non-trunk parts) of ``modalities`` into ``directory`` atomically."""
    specs = lora_specs(model)
    modalities = list(modalities or specs)
    if not modalities:
        raise ValueError("the model carries no LoRA adapters to save")
    with atomic_directory(directory) as tmp:
        meta = {
            "format": "bind-lora",
            "version": 1,
            "base_model": model.config.name,
            "embed_dim": model.config.embed_dim,
            "modalities": {m: specs[m].to_dict() for m in modalities},
        }
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2, sort_keys=True))
        safetensors.torch.save_file(
            adapter_state_dict(model, modalities), str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt", "bind": "lora"}
        )
    return directory


def load_adapters(model: nn.Module, directory: str | Path) -> nn.Module:
    """Apply the adapters saved by :func:`save_adapters` to a base ``model`` (in place; returns it).

    Every saved tensor must find a parameter of the same shape (no silent partial loads).
    """
    directory = Path(directory)
    cfg_path, weights = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    if not cfg_path.is_file() or not weights.is_file():
        raise FileNotFoundError(f"{directory}: not an adapter directory (needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    meta = json.loads(cfg_path.read_text())
    if meta.get("embed_dim") not in (None, model.config.embed_dim):
        raise ValueError(
            f"{directory}: adapters for a {meta['embed_dim']}-d space, the model embeds into {model.config.embed_dim}-d"
        )
    for m, spec in meta["modalities"].items():
        if m not in lora_specs(model):
            apply_lora(model, m, LoraSpec.from_dict(spec, m))
    state = safetensors.torch.load_file(str(weights))
    params = dict(model.named_parameters())
    missing = sorted(k for k in state if k not in params)
    if missing:
        raise RuntimeError(f"{weights}: tensors without a matching parameter in the model: {missing[:5]}")
    with torch.no_grad():
        for k, v in state.items():
            if params[k].shape != v.shape:
                raise RuntimeError(f"{weights}: {k} has shape {tuple(v.shape)}, the model {tuple(params[k].shape)}")
            params[k].copy_(v)
    return model


def trainable_report(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per modality: ``trainable`` / ``total`` parameters and ``percent``, the same for the trunk alone, and the
    number of LoRA parameters."""
    report = {}
    for m in model.modalities:
        enc = model.encoder(m)
        try:
            trunk_name, _ = _trunk(enc)
        except TypeError:
            trunk_name = None
        tot = tr = ttot = ttr = lora = 0
        for name, p in enc.named_parameters():
            n = p.numel()
            tot += n
            tr += n if p.requires_grad else 0
            lora += n if "lora_" in name else 0
            if trunk_name and name.startswith(trunk_name + "."):
                ttot += n
                ttr += n if p.requires_grad else 0
        report[m] = {
            "trainable": tr,
            "total": tot,
            "percent": 100.0 * tr / max(tot, 1),
            "trunk_trainable": ttr,
            "trunk_total": ttot,
            "trunk_percent": 100.0 * ttr / max(ttot, 1),
            "lora": lora,
        }
    return report


def format_trainable_report(report: dict[str, dict[str, float]]) -> str:
    """A small text table of :func:`trainable_report`."""
    lines = [f"{'modality':<10}{'trainable':>14}{'total':>14}{'%':>8}{'trunk %':>10}{'lora':>12}"]
    for m, r in report.items():
        lines.append(
            f"{m:<10}{r['trainable']:>14,}{r['total']:>14,}{r['percent']:>8.2f}{r['trunk_percent']:>10.2f}"
            f"{r['lora']:>12,}"
        )
    return "\n".join(lines)
