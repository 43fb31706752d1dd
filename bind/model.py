"""``BindModel``: one encoder per modality, all into one embedding space.

Saved HF-style as a directory holding ``config.json`` + ``model.safetensors`` (+ tokenizer files), written
atomically (a temporary directory renamed into place), so a crash mid-save never leaves a half-written model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from bind.config import BindConfig, EncoderConfig
from bind.encoder import ModalityEncoder
from bind.errors import UnknownModalityError
from bind.io import atomic_directory
from bind.precision import autocast, check_precision
from bind.registry import get_modality

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


def trim_padding(ids: torch.Tensor, pad_id: int | None, eot_id: int | None = None) -> torch.Tensor:
    """Drop the trailing columns of ``ids [B, L]`` that are padding in every row (keeping one when padding is the
    end-of-text token). Exact for mean pooling over the attention mask and for causal towers with EOT pooling, and
    much cheaper for short captions padded to the context length."""
    if pad_id is None or ids.dim() != 2 or ids.shape[1] == 0:
        return ids
    used = (ids != pad_id).any(0).nonzero()
    keep = int(used[-1]) + 1 if used.numel() else 1
    if eot_id is not None and eot_id == pad_id:
        keep += 1
    return ids[:, : min(keep, ids.shape[1])]


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    """A :class:`ModalityEncoder`, or a transformers tower when ``cfg.tower`` is set."""
    if cfg.tower is not None:
        from bind.towers import build_tower

        return build_tower(cfg)
    return ModalityEncoder(cfg)


class BindModel(nn.Module):
    """Encoders by modality; ``embed({modality: batch}) -> {modality: [B, D]}`` (unit-norm).

    Logit scales stay beside the embeddings: ``model.logit_scale("audio")``. ``precision`` (``auto`` | ``fp32`` |
    ``bf16``, :mod:`bind.precision`) is how eval-mode encoding runs; in train mode the caller (Lightning's precision
    plugin) decides. Embeddings always come back fp32.
    """

    def __init__(self, config: BindConfig, root: str | Path | None = None, precision: str = "auto") -> None:
        super().__init__()
        self.config = config
        self.root = Path(root) if root is not None else None
        self.precision = check_precision(precision)
        for enc in config.encoders.values():
            get_modality(enc.modality).prepare_encoder_config(enc, self.root)
        self.encoders = nn.ModuleDict({m: build_encoder(c) for m, c in config.encoders.items()})
        self.freeze(config.frozen)

    # --- introspection --------------------------------------------------------------------------------------------
    @property
    def modalities(self) -> list[str]:
        return list(self.encoders.keys())

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def encoder(self, modality: str) -> nn.Module:
        if modality not in self.encoders:
            raise UnknownModalityError(
                f"model {self.config.name!r} has no {modality!r} encoder; it encodes {self.modalities}")
        return self.encoders[modality]

    def logit_scale(self, modality: str) -> torch.Tensor:
        """The (clamped, exponentiated) temperature of ``modality``'s similarities, kept out of the embedding."""
        return self.encoder(modality).get_logit_scale()

    # --- forward ---------------------------------------------------------------------------------------------------
    def encode(self, modality: str, x: torch.Tensor, normalize: bool = True,
               precision: str | None = None) -> torch.Tensor:
        """Embed a batch of one modality: ``[B, *sample]`` or ``[B, clips, *sample]`` -> fp32 ``[B, D]``.

        ``precision`` overrides :attr:`precision` for this call (eval mode only; training leaves it to the caller).
        """
        encoder = self.encoder(modality)
        if self.training:
            return encoder(x, normalize=normalize)
        with autocast(precision or self.precision, x.device if isinstance(x, torch.Tensor) else "cpu"):
            emb = encoder(x, normalize=normalize)
        if emb.dtype == torch.float32:
            return emb
        emb = emb.float()
        return F.normalize(emb, dim=-1) if normalize else emb

    def embed(self, inputs: dict[str, torch.Tensor], normalize: bool = True) -> dict[str, torch.Tensor]:
        """Embed every modality in ``inputs``."""
        return {m: self.encode(m, x, normalize=normalize) for m, x in inputs.items()}

    forward = embed

    def compile_encoders(self, modalities: Iterable[str] | None = None, **compile_kwargs: Any) -> BindModel:
        """``torch.compile`` the encoders of ``modalities`` (default: all) in place; weights and state-dict keys are
        unchanged. The first call of each input shape pays the compilation (tens of seconds on a CPU): worth it for
        long embedding runs, measured by ``bindspace bench compare``."""
        for m in modalities or self.modalities:
            self.encoder(m).compile(**compile_kwargs)
        return self

    # --- preprocessing ---------------------------------------------------------------------------------------------
    def preprocess_config(self, modality: str):
        enc = self.encoder(modality).cfg
        return get_modality(modality).preprocess_config(enc.preprocess)

    def prepare(self, modality: str, sources: Sequence[Any], train: bool = False) -> torch.Tensor:
        """Load + transform + collate raw sources (paths, bytes, arrays, strings) into a batch for ``modality``."""
        plugin, cfg = get_modality(modality), self.preprocess_config(modality)
        return plugin.collate([plugin.process(s, cfg, train=train) for s in sources])

    @torch.no_grad()
    def embed_sources(self, modality: str, sources: Sequence[Any], batch_size: int = 128) -> torch.Tensor:
        """Preprocess and embed raw sources (paths, bytes, arrays, strings) in batches: fp32 ``[len(sources), D]``."""
        plugin, cfg = get_modality(modality), self.preprocess_config(modality)
        return self._embed_batches(modality, [sources[i:i + batch_size] for i in range(0, len(sources), batch_size)],
                                   lambda chunk: [plugin.process(s, cfg) for s in chunk])

    @torch.no_grad()
    def embed_tensors(self, modality: str, samples: Sequence[torch.Tensor], batch_size: int = 128) -> torch.Tensor:
        """Embed already-transformed samples (``Modality.process`` / a sample cache's output) in batches: fp32
        ``[len(samples), D]``."""
        return self._embed_batches(modality, [samples[i:i + batch_size] for i in range(0, len(samples), batch_size)],
                                   list)

    def _embed_batches(self, modality: str, chunks: Sequence[Sequence[Any]], transform: Any) -> torch.Tensor:
        """The one batched-embedding path: transform each chunk, collate, trim token padding, encode."""
        plugin, device = get_modality(modality), next(self.parameters()).device
        stem = self.encoder(modality).cfg.stem
        out = []
        for chunk in chunks:
            x = plugin.collate(transform(chunk))
            if isinstance(x, torch.Tensor) and not x.is_floating_point():  # token ids: drop all-padding columns
                x = trim_padding(x, stem.get("pad_token_id"), stem.get("eot_token_id"))
            out.append(self.encode(modality, x.to(device)).float())
        return torch.cat(out) if out else torch.empty(0, self.embed_dim, device=device)

    # --- freezing ---------------------------------------------------------------------------------------------------
    def freeze(self, modalities: Iterable[str], frozen: bool = True) -> None:
        for m in modalities:
            for p in self.encoder(m).parameters():
                p.requires_grad_(not frozen)
            if frozen and m not in self.config.frozen:
                self.config.frozen.append(m)
            if not frozen and m in self.config.frozen:
                self.config.frozen.remove(m)

    # --- persistence -------------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (+ modality assets) atomically into ``directory``."""
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            config = copy.deepcopy(self.config)
            for m, enc in config.encoders.items():
                get_modality(m).save_assets(enc, tmp, self.root)
            config.save(tmp / CONFIG_NAME)
            safetensors.torch.save_model(self, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "bind": "1"})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu",
                        precision: str = "auto") -> BindModel:
        """Load a directory written by :meth:`save_pretrained`; every key must match (no silent partial loads)."""
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{directory}: no {CONFIG_NAME} (not a bind model directory)")
        if not (directory / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"{directory}: no {WEIGHTS_NAME}")
        model = cls(BindConfig.load(directory / CONFIG_NAME), root=directory, precision=precision)
        missing, unexpected = safetensors.torch.load_model(model, str(directory / WEIGHTS_NAME), strict=False,
                                                           device=str(map_location))
        if missing or unexpected:
            raise RuntimeError(f"{directory / WEIGHTS_NAME} does not match its config: missing {sorted(missing)}, "
                               f"unexpected {sorted(unexpected)}")
        return model.eval()
