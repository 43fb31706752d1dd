"""Build the model a training run starts from: frozen anchor tower(s) + the modality encoders to train.

* **Language-anchored** (``anchor: text``, LanguageBind): each trained modality is paired with captions embedded by a
  frozen text tower (bind's own text encoder, CLIP text with projection, or any ``AutoModel`` with mean pooling).
* **Image-anchored** (``anchor: image``, ImageBind): each trained modality is paired with the image of the same
  sample, embedded by a frozen image tower (e.g. CLIP vision); a frozen text tower can ride along for evaluation.

The anchor tower defines the space: its output width becomes ``embed_dim``. Trained encoders may start from a
pretrained ViT (:mod:`bind.init`) and carry LoRA adapters (:mod:`bind.lora`).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from bind.config import BindConfig
from bind.factory import _merge, expand_config
from bind.model import CONFIG_NAME, BindModel
from bind.registry import list_modalities, model_config_dict
from bind.towers import resolve_tower

log = logging.getLogger("bind.train")


def tower_entry(modality: str, tower: str) -> tuple[dict[str, Any], int]:
    """The encoder entry of a transformers tower and the width of its output space."""
    path = resolve_tower(tower)
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(
            f"{modality} tower {tower!r}: no transformers config.json in {path} (towers load "
            "offline from model directories)"
        )
    hf = json.loads(cfg_file.read_text())
    is_clip = hf.get("model_type") in ("clip", "clip_text_model", "clip_vision_model")
    sub = hf.get("text_config" if modality == "text" else "vision_config", {}) if hf.get("model_type") == "clip" else hf
    if is_clip:
        dim = int(hf.get("projection_dim") or sub.get("projection_dim") or 512)
    else:
        dim = int(sub.get("hidden_size") or hf.get("hidden_size"))
    entry: dict[str, Any] = {
        "tower": tower,
        "tower_pooling": "pooler" if is_clip else ("mean" if modality == "text" else "cls"),
    }
    if modality == "text":
        ctx = int(sub.get("max_position_embeddings") or 77)
        entry["preprocess"] = {"tokenizer": tower, "context_length": min(ctx, 77)}
    return entry, dim


def check_modality_names(modalities: list[str], anchor: str, *named: dict[str, Any] | None) -> None:
    """One-line error for a modality name no plugin registers (``model.modalities``, ``model.anchor`` or a key of
    ``towers`` / ``encoders`` / ``init_from`` / ``lora``), with the closest known name."""
    import difflib

    from bind.registry import list_modalities

    known = sorted(list_modalities())
    keys = ("model.modalities", "model.anchor", "model.towers", "model.encoders", "model.init_from", "model.lora")
    for key, names in zip(keys, [modalities, [anchor], *[list(n or {}) for n in named]]):
        for m in names:
            if m not in known:
                close = difflib.get_close_matches(str(m), known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"{key}: unknown modality {m!r}; {hint}known modalities: {', '.join(known)}")


def build_train_model(
    model: str = "bind-minilm-tiny",
    modalities: list[str] | None = None,
    anchor: str = "text",
    towers: dict[str, str] | None = None,
    encoders: dict[str, dict[str, Any]] | None = None,
    init_from: dict[str, str] | None = None,
    init_channels: str = "mean",
    init_temporal: str = "average",
    init_heads: int | None = None,
    lora: dict[str, dict[str, Any] | None] | None = None,
    logit_scale_init: float | None = None,
    grad_checkpointing: bool = False,
) -> BindModel:
    """A :class:`~bind.model.BindModel` with a frozen ``anchor`` (and any other ``towers``) and trainable
    ``modalities``.

    ``model``: a named config (``bind.list_models()``) giving architecture defaults — trained modalities it lacks get
    their plugin's defaults — or a saved model directory to continue from. ``encoders``: per-modality
    :class:`~bind.config.EncoderConfig` overrides (``patch_dropout``, ``depth``, ``stem``, ...). ``towers``:
    ``{modality: transformers directory / hub id / "minilm"}``. ``init_from``: ``{modality: pretrained ViT}``.
    ``lora``: ``{modality: LoraSpec fields}`` (``{}`` for LanguageBind's defaults).
    """
    from bind.init import init_encoder_from_vit, read_vit_weights, vit_encoder_overrides
    from bind.lora import apply_lora

    modalities = list(modalities or [])
    if not modalities:
        names = [m for m in list_modalities() if m != anchor]
        raise ValueError(
            f"model.modalities: no modality to train; set it, e.g. --model.modalities '[{names[0]}]' "
            f"(installed: {', '.join(names)})"
        )
    check_modality_names(modalities, anchor, towers, encoders, init_from, lora)
    if anchor in modalities:
        raise ValueError(f"the anchor {anchor!r} is frozen; it cannot also be trained")
    towers, encoders, init_from = dict(towers or {}), dict(encoders or {}), dict(init_from or {})
    frozen = sorted({anchor, *towers} - set(modalities))
    wanted = [*modalities, *frozen]
    if (Path(model) / CONFIG_NAME).is_file():
        if towers or init_from or encoders:
            raise ValueError(f"{model} is a saved model: towers / init_from / encoders apply to named configs only")
        bind_model = BindModel.from_pretrained(model)
        missing = [m for m in wanted if m not in bind_model.modalities]
        if missing:
            raise ValueError(f"{model} has no encoder for {missing}; it has {bind_model.modalities}")
        bind_model.train()
    else:
        raw = model_config_dict(model)
        entries = raw.setdefault("encoders", {})
        for m in wanted:
            entries.setdefault(m, {})
        for m, tower in towers.items():
            entry, dim = tower_entry(m, tower)
            entries[m] = entry
            if m == anchor:
                raw["embed_dim"] = dim
        weights = {m: read_vit_weights(src, heads=init_heads) for m, src in init_from.items()}
        for m, w in weights.items():
            entries[m] = _merge(entries[m] or {}, vit_encoder_overrides(w))
        for m, over in encoders.items():
            if m not in wanted:
                raise ValueError(f"encoder overrides for {m!r}, which is neither trained nor a tower ({wanted})")
            entries[m] = _merge(entries[m] or {}, over)
        for m in modalities:
            if logit_scale_init is not None and "logit_scale_init" not in encoders.get(m, {}):
                entries[m] = _merge(entries[m] or {}, {"logit_scale_init": logit_scale_init})
        cfg: BindConfig = expand_config(raw, wanted)
        cfg.frozen = []
        bind_model = BindModel(copy.deepcopy(cfg))
        for m, w in weights.items():
            report = init_encoder_from_vit(
                bind_model.encoder(m), w, channel_init=init_channels, temporal_init=init_temporal
            )
            log.info(
                "%s initialised from %s: %d tensors loaded; adapted: %s; skipped: %s",
                m,
                w.source,
                report.loaded,
                report.adapted or "-",
                report.skipped or "-",
            )
    bind_model.freeze(frozen)
    bind_model.freeze(modalities, frozen=False)
    for m, spec in (lora or {}).items():
        if m not in modalities:
            raise ValueError(f"LoRA for {m!r}, which is not trained ({modalities})")
        apply_lora(bind_model, m, spec or {})
    if grad_checkpointing:
        for m in modalities:
            bind_model.encoder(m).set_grad_checkpointing(True)
    return bind_model
