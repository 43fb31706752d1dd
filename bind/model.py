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
    def embed_sources(self, modality: str, sources: Sequence[Any]) -> torch.Tensor:
        """Preprocess and embed raw sources in eval mode: ``[len(sources), D]``."""
        device = next(self.parameters()).device
        return self.encode(modality, self.prepare(modality, sources).to(device))

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
