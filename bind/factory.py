"""``create_model`` / ``load_model``: named configs -> :class:`BindModel` (open_clip's factory, in small)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch

from bind.config import BindConfig, EncoderConfig
from bind.errors import ModelLoadError
from bind.model import BindModel
from bind.precision import check_precision
from bind.registry import get_modality, model_config_dict

_CONVERTERS: dict[str, Any] = {}


def register_converter(fmt: str, fn) -> None:
    """Register ``fn(model, checkpoint_path) -> None`` loading a published checkpoint format into a model."""
    _CONVERTERS[fmt] = fn


def model_config(name_or_path: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The raw config dict of a named model (``bind.list_models()``), of a ``.yaml`` / ``.json`` file, or a dict."""
    if isinstance(name_or_path, dict):
        return copy.deepcopy(name_or_path)
    path = Path(name_or_path)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.is_file():
        import yaml

        if not path.is_file():
            raise FileNotFoundError(f"{path}: model config file not found")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a YAML / JSON model config ({' '.join(str(e).split())})") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("encoders"), dict) or "embed_dim" not in raw:
            raise ValueError(
                f"{path}: a model config needs 'embed_dim' and an 'encoders' mapping (see configs/models/*.yaml)"
            )
        raw.setdefault("name", path.stem)
        return raw
    return model_config_dict(str(name_or_path))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def expand_config(
    raw: dict[str, Any], modalities: list[str] | None = None, encoder_overrides: dict[str, Any] | None = None
) -> BindConfig:
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
        merged = _merge(
            _merge(dict(plugin.encoder_defaults), {k: v for k, v in shared.items() if k in field_names}), entry or {}
        )
        merged = _merge(merged, encoder_overrides or {})
        merged.setdefault("embed_dim", embed_dim)
        encoders[m] = EncoderConfig.from_dict({**merged, "modality": m})
    return BindConfig(
        name=raw["name"],
        embed_dim=embed_dim,
        encoders=encoders,
        anchor=raw.get("anchor", "text"),
        frozen=[m for m in raw.get("frozen", []) if m in encoders],
        extra=raw.get("extra", {}),
    )


def named_config(
    name: str, modalities: list[str] | None = None, encoders: dict[str, dict[str, Any]] | None = None
) -> BindConfig:
    """The expanded config of a named model (``bind.list_models()``), with per-modality ``encoders`` overrides merged
    into its entries (as ``bind.train.fit(encoders=...)`` merges them), without building the model."""
    raw = model_config_dict(name)
    for m, over in (encoders or {}).items():
        raw["encoders"][m] = _merge(raw["encoders"].get(m) or {}, over)
    return expand_config(raw, modalities)


def create_model(
    name: str | Path,
    *,
    modalities: list[str] | None = None,
    pretrained: str | None = None,
    precision: str | None = None,
    **encoder_overrides: Any,
) -> BindModel:
    """Build a named model (``bind.list_models()``) with fresh weights.

    ``modalities`` selects a subset of its encoders; keyword arguments override every encoder's config
    (e.g. ``attn_backend="math"``, ``grad_checkpointing=True``). ``pretrained`` loads a published checkpoint through
    the converter named in the config's ``checkpoint_format``. ``precision``: how eval-mode encoding runs
    (``auto`` = bf16 autocast where the hardware multiplies bf16 natively, see :mod:`bind.precision`); default
    ``auto``, and ``fp32`` for a converted checkpoint (the precision its parity with the reference holds at).
    ``name`` may also be the path of a ``.yaml`` / ``.json`` model config.

    A model built without ``pretrained`` has random weights: embedding with it logs a one-line warning until it is
    trained or loaded (:attr:`BindModel.untrained_modalities`).
    """
    raw = model_config(name)
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
    model.config.extra["precision"] = model.precision = check_precision(precision or "fp32")
    model.mark_untrained([])
    return model.eval()


def load_model(
    name_or_dir: str | Path,
    *,
    checkpoint: str | None = None,
    map_location: str = "cpu",
    precision: str | None = None,
    allow_nonfinite: bool = False,
    **kwargs: Any,
) -> BindModel:
    """A saved model directory (``config.json`` + ``model.safetensors``), or a named model (optionally with a
    published ``checkpoint`` converted on the fly).

    ``precision``: ``auto`` | ``fp32`` | ``bf16`` (:mod:`bind.precision`); default: the one saved with the model
    (``fp32`` for converted checkpoints, whose parity with the reference holds in fp32), else ``auto``. A model
    directory is validated before use: any problem raises one :class:`~bind.errors.ModelLoadError` naming the file;
    NaN / inf weights are refused unless ``allow_nonfinite``.
    """
    path = Path(name_or_dir)
    if path.is_dir():
        if checkpoint is not None:
            raise ValueError("checkpoint= applies to named models, not to saved model directories")
        return BindModel.from_pretrained(
            path, map_location=map_location, precision=precision, allow_nonfinite=allow_nonfinite
        )
    if path.exists():
        raise ModelLoadError(
            path,
            "a file, not a bind model directory (config.json + model.safetensors); a "
            "published checkpoint goes to load_model(NAME, checkpoint=PATH) or bindspace convert",
        )
    if path.suffix.lower() not in (".yaml", ".yml", ".json") and (path.is_absolute() or len(path.parts) > 1):
        raise ModelLoadError(path, "no such model directory")
    return create_model(name_or_dir, pretrained=checkpoint, precision=precision, **kwargs)
