"""``create_model`` / ``load_model``: named configs -> :class:`BindModel` (open_clip's factory, in small)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch

from bind.config import BindConfig, EncoderConfig
from bind.model import CONFIG_NAME, BindModel
from bind.registry import get_modality, model_config_dict

_CONVERTERS: dict[str, Any] = {}


def register_converter(fmt: str, fn) -> None:
    """Register ``fn(model, checkpoint_path) -> None`` loading a published checkpoint format into a model."""
    _CONVERTERS[fmt] = fn


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def expand_config(raw: dict[str, Any], modalities: list[str] | None = None,
                  encoder_overrides: dict[str, Any] | None = None) -> BindConfig:
    """Expand a named-config dict: EncoderConfig defaults < plugin defaults < ``defaults`` < per-encoder entry."""
    raw = copy.deepcopy(raw)
    embed_dim = raw["embed_dim"]
    shared = raw.get("defaults", {})
    entries: dict[str, dict[str, Any]] = raw.get("encoders", {})
    if modalities is not None:
        unknown = set(modalities) - set(entries)
        if unknown:
            raise ValueError(f"model {raw['name']!r} has no encoder for {sorted(unknown)}; it has {sorted(entries)}")
        entries = {m: entries[m] for m in modalities}
    field_names = {f.name for f in dataclasses.fields(EncoderConfig)}
    encoders = {}
    for m, entry in entries.items():
        plugin = get_modality(m)
        merged = _merge(_merge(dict(plugin.encoder_defaults), {k: v for k, v in shared.items() if k in field_names}),
                        entry or {})
        merged = _merge(merged, encoder_overrides or {})
        merged.setdefault("embed_dim", embed_dim)
        encoders[m] = EncoderConfig.from_dict({**merged, "modality": m})
    return BindConfig(name=raw["name"], embed_dim=embed_dim, encoders=encoders, anchor=raw.get("anchor", "text"),
                      frozen=[m for m in raw.get("frozen", []) if m in encoders], extra=raw.get("extra", {}))


def named_config(name: str, modalities: list[str] | None = None,
                 encoders: dict[str, dict[str, Any]] | None = None) -> BindConfig:
    """The expanded config of a named model (``bind.list_models()``), with per-modality ``encoders`` overrides merged
    into its entries (as ``bind.train.fit(encoders=...)`` merges them), without building the model."""
    raw = model_config_dict(name)
    for m, over in (encoders or {}).items():
        raw["encoders"][m] = _merge(raw["encoders"].get(m) or {}, over)
    return expand_config(raw, modalities)


def create_model(name: str, *, modalities: list[str] | None = None, pretrained: str | None = None,
                 precision: str = "auto", **encoder_overrides: Any) -> BindModel:
    """Build a named model (``bind.list_models()``) with fresh weights.

    ``modalities`` selects a subset of its encoders; keyword arguments override every encoder's config
    (e.g. ``attn_backend="math"``, ``grad_checkpointing=True``). ``pretrained`` loads a published checkpoint through
    the converter named in the config's ``checkpoint_format``. ``precision``: how eval-mode encoding runs
    (``auto`` = bf16 autocast where the hardware multiplies bf16 natively, see :mod:`bind.precision`).
    """
    raw = model_config_dict(name)
    if pretrained is None:
        return BindModel(expand_config(raw, modalities, encoder_overrides), precision=precision).eval()
    fmt = raw.get("checkpoint_format")
    if fmt is None:
        raise ValueError(f"model {name!r} has no checkpoint_format: nothing can load {pretrained!r} into it")
    if fmt not in _CONVERTERS:
        import bind.checkpoints  # noqa: F401  — registers the converters
    with torch.device("meta"):  # every weight comes from the checkpoint: skip random init (converters assign)
        model = BindModel(expand_config(raw, modalities, encoder_overrides), precision=precision)
    _CONVERTERS[fmt](model, pretrained)
    unset = [k for k, t in model.state_dict().items() if t.is_meta]
    if unset:
        raise RuntimeError(f"converter {fmt!r} left {len(unset)} tensors unloaded, e.g. {unset[:5]}")
    return model.eval()


def load_model(name_or_dir: str | Path, *, checkpoint: str | None = None, map_location: str = "cpu",
               precision: str = "auto", **kwargs: Any) -> BindModel:
    """A saved model directory (``config.json`` + ``model.safetensors``), or a named model (optionally with a
    published ``checkpoint`` converted on the fly). ``precision``: ``auto`` | ``fp32`` | ``bf16``
    (:mod:`bind.precision`)."""
    path = Path(name_or_dir)
    if (path / CONFIG_NAME).is_file():
        if checkpoint is not None:
            raise ValueError("checkpoint= applies to named models, not to saved model directories")
        return BindModel.from_pretrained(path, map_location=map_location, precision=precision)
    if path.exists():
        raise FileNotFoundError(f"{path}: not a bind model directory (no {CONFIG_NAME})")
    return create_model(str(name_or_dir), pretrained=checkpoint, precision=precision, **kwargs)
