"""Configuration dataclasses for bind models.

Every field is JSON-serialisable so that a model directory (``config.json`` + ``model.safetensors``) fully
describes the architecture, the way open_clip's and HF's configs do.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOGIT_SCALE_INIT = math.log(1 / 0.07)  # CLIP / open_clip
LOGIT_SCALE_MAX = math.log(100.0)


def logit_scale_value(log_scale, cfg: EncoderConfig):
    """``exp(log_scale)`` capped at ``cfg.logit_scale_max`` (exactly that value beyond it, as ImageBind's
    ``clip(exp(s), max=100)``); uncapped when it is ``None`` (LanguageBind's ``logit_scale.exp()``)."""
    scale = log_scale.exp()
    return scale if cfg.logit_scale_max is None else scale.clamp(max=cfg.logit_scale_max)


#: field metadata of integers that must be >= 1 (checked on the raw JSON of a saved model)
POSITIVE = {"positive": True}


@dataclass
class EncoderConfig:
    """Architecture of one modality encoder: stem -> [CLS] + positions -> transformer trunk -> head.

    ``stem`` holds modality-specific stem arguments (patch sizes, image size, vocabulary, ...) interpreted by the
    modality plugin; ``preprocess`` holds the modality's preprocessing config (``{"preset": name, **overrides}``).
    ``tower`` names a transformers model (directory or hub id) used *instead of* bind's own trunk (text only).
    """

    modality: str
    width: int = field(default=768, metadata=POSITIVE)
    depth: int = field(default=12, metadata=POSITIVE)
    heads: int = field(default=12, metadata=POSITIVE)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    fused_qkv: bool = True
    kv_bias_tokens: bool = False
    causal: bool = False
    act: str = "gelu"  # gelu | quick_gelu
    norm_eps: float = 1e-6
    ln_pre: bool = False
    num_cls_tokens: int = 1
    attention: str = "joint"  # joint | divided (space-time, video)
    drop_path: float = 0.0
    patch_dropout: float = 0.0
    pool: str = "cls"  # cls | mean | eot
    head_dropout: float = 0.0
    proj_bias: bool = False
    embed_dim: int = field(default=512, metadata=POSITIVE)
    attn_backend: str = "sdpa"
    grad_checkpointing: bool = False
    logit_scale_init: float = LOGIT_SCALE_INIT
    logit_scale_learnable: bool = True
    logit_scale_max: float | None = 100.0  # cap of exp(logit_scale) (CLIP, ImageBind); None: uncapped (LanguageBind)
    stem: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] = field(default_factory=dict)
    tower: str | None = None
    tower_pooling: str = "mean"  # mean | cls | pooler (for transformers towers)
    tower_config: dict[str, Any] | None = None  # filled when saved so the tower rebuilds offline

    def __post_init__(self) -> None:
        if self.tower is None and self.width % self.heads:
            raise ValueError(f"{self.modality}: width {self.width} is not divisible by heads {self.heads}")
        for name, allowed in (
            ("pool", ("cls", "mean", "eot")),
            ("attention", ("joint", "divided")),
            ("act", ("gelu", "quick_gelu")),
            ("tower_pooling", ("mean", "cls", "pooler")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{self.modality}: {name}={getattr(self, name)!r}, expected one of {allowed}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"EncoderConfig({d.get('modality')}): unknown fields {sorted(unknown)}")
        return cls(**d)


@dataclass
class BindConfig:
    """A whole bind model: one encoder per modality, all projecting into one ``embed_dim`` space.

    ``anchor`` is the modality that defines the space (``text`` for language-anchored models, ``image`` for the
    ImageBind-style image-anchored mode).
    """

    name: str
    embed_dim: int
    encoders: dict[str, EncoderConfig]
    anchor: str = "text"
    frozen: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for m, enc in self.encoders.items():
            if enc.modality != m:
                raise ValueError(f"encoder key {m!r} holds config for modality {enc.modality!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["encoders"] = {m: e.to_dict() for m, e in self.encoders.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BindConfig:
        d = dict(d)
        d["encoders"] = {m: EncoderConfig.from_dict({"modality": m, **e}) for m, e in d["encoders"].items()}
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> BindConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
