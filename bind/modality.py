"""The modality plugin contract.

A plugin (one file in ``modalities/``) subclasses :class:`Modality` and is registered with
:func:`bind.registry.register_modality`. It owns everything modality-specific:

* ``Preprocess`` — a dataclass holding every preprocessing constant, with named ``presets``
  (``imagebind``, ``languagebind``, ...);
* ``load(source, cfg)`` — real decoding of a path / bytes / array into a raw object, raising
  :class:`bind.errors.MediaError` naming the source, the modality and the reason;
* ``transform(raw, cfg, train)`` — raw -> tensor, deterministic when ``train`` is False;
* ``stem(encoder_cfg)`` — an ``nn.Module`` turning a batch into tokens ``[B, L, width]`` (or ``[B, T, N, width]`` for
  divided space-time attention), positional embeddings included, or a :class:`bind.nn.stems.StemOutput` adding a
  padding mask, a pooling index or the time steps of the tokens (the encoder's ``TokenLayout``);
* ``encoder_defaults`` — defaults for the :class:`bind.config.EncoderConfig` of this modality;
* ``StemConfig`` — a dataclass of the stem settings (the encoder config's ``stem: {...}``), validated like
  ``Preprocess``: :meth:`Modality.stem_config` rejects unknown keys naming the modality and the known ones;
* ``extensions`` (file suffixes ``load`` accepts; :meth:`Modality.find_files` scans a directory with them),
  ``webdataset_keys`` (shard member keys, preferred first), ``zeroshot_templates`` (prompts with ``{}`` for the
  class name), ``tower`` (the kind of pretrained transformers tower that can serve the modality: ``"text"``,
  ``"vision"`` or None), ``lora_rank`` (default rank of LoRA adapters) and ``order`` (its place in listings);
* ``sample_formats`` + ``write_sample(fmt, directory, index, rng)`` — synthetic sample files of each format the
  plugin reads (what ``bindspace bench data`` measures); optional.

Plugins are found without being listed anywhere: every module of the top-level ``modalities`` package and every
entry point of the group ``bind.modalities`` (see :mod:`bind.registry`).

Data path: ``source -load-> raw -transform-> tensor -collate-> batch -BindModel.embed-> [B, D]``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from bind.config import EncoderConfig
from bind.errors import InputError, MediaError

if TYPE_CHECKING:
    import numpy as np

#: errors that say the code is wrong, not the sample: never turned into a skipped sample
CODE_ERRORS = (NameError, ImportError, NotImplementedError, AssertionError, MemoryError)


@dataclasses.dataclass
class NoStemConfig:
    """Stem settings of a plugin that takes none."""


class Modality:
    """Base class of modality plugins. Subclasses set the class variables and implement the four methods."""

    name: ClassVar[str]
    Preprocess: ClassVar[type]
    StemConfig: ClassVar[type] = NoStemConfig
    #: file suffixes (lower case, with the dot) that ``load`` reads, e.g. ``(".png", ".jpg")``
    extensions: ClassVar[tuple[str, ...]] = ()
    #: webdataset member keys of this modality in preference order (``write_shards`` writes the one matching the
    #: file's suffix, else the first); double extensions (``"depth.png"``) tell modalities sharing a suffix apart
    webdataset_keys: ClassVar[tuple[str, ...]] = ()
    #: default zero-shot prompt templates, ``{}`` standing for the class name
    zeroshot_templates: ClassVar[tuple[str, ...]] = ("a {}.", "{}", "a photo of a {}.")
    #: kind of pretrained transformers tower that can serve this modality (``"text"``, ``"vision"``) or None
    tower: ClassVar[str | None] = None
    #: place in :func:`bind.list_modalities` (lower first, then by name)
    order: ClassVar[int] = 100
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    default_preset: ClassVar[str | None] = None
    encoder_defaults: ClassVar[dict[str, Any]] = {}
    #: default LoRA rank of this modality's adapters (LanguageBind's published rank); None: ``LoraSpec``'s default
    lora_rank: ClassVar[int | None] = None
    #: number of dims of one transformed sample (image: 3 for [C, H, W]); a batch has one more, and a batch of
    #: several clips per sample has two more ([B, clips, ...]: embeddings are averaged over clips).
    sample_ndim: ClassVar[int]
    #: floating inputs (True) or integer token ids (False)
    float_input: ClassVar[bool] = True
    #: formats :meth:`write_sample` writes (``bindspace bench data`` measures each), e.g. ``("png16", "npy")``
    sample_formats: ClassVar[tuple[str, ...]] = ()

    # --- preprocessing ------------------------------------------------------------------------------------------
    def preprocess_config(self, spec: dict[str, Any] | Any | None = None, **overrides: Any):
        """Build the ``Preprocess`` dataclass from ``{"preset": name, **fields}`` (or pass one through)."""
        if isinstance(spec, self.Preprocess):
            return dataclasses.replace(spec, **overrides) if overrides else spec
        spec = {**(spec or {}), **overrides}
        preset = spec.pop("preset", self.default_preset)
        base: dict[str, Any] = {}
        if preset is not None:
            if preset not in self.presets:
                raise ValueError(f"{self.name}: unknown preprocessing preset {preset!r}; known: {sorted(self.presets)}")
            base = dict(self.presets[preset])
        return _dataclass_from(
            self.Preprocess, {**base, **spec}, f"{self.name}: unknown preprocessing fields", check=spec
        )

    def find_files(self, directory: str | os.PathLike) -> list[Path]:
        """Files under ``directory`` (recursively, sorted) whose suffix is one of :attr:`extensions`; links leading
        outside the directory are left out."""
        root = Path(directory)
        if not root.is_dir():
            raise InputError(f"{self.name}: {root} is not a directory")
        inside = root.resolve()
        return sorted(
            p
            for p in root.rglob("*")
            if p.suffix.lower() in self.extensions and p.is_file() and p.resolve().is_relative_to(inside)
        )

    def stem_config(self, cfg: EncoderConfig):
        """The typed ``StemConfig`` of an encoder config's ``stem`` dict (unknown keys: one-line ``ValueError``)."""
        return _dataclass_from(self.StemConfig, cfg.stem, f"{self.name}: unknown stem settings")

    def load(self, source: Any, cfg: Any) -> Any:
        raise NotImplementedError

    def transform(self, raw: Any, cfg: Any, train: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def process(self, source: Any, cfg: Any, train: bool = False) -> torch.Tensor:
        """``transform(load(source))``; whatever a decoder raises (``OSError``, PIL's ``DecompressionBombError``,
        ``ValueError``, a library's own error) comes out as :class:`MediaError` naming the source and modality, so
        every caller's per-sample skip policy sees one type: a sample never stops a whole run. Only errors that
        cannot come from the data (:data:`CODE_ERRORS`: a missing import, an unimplemented method) propagate."""
        try:
            return self.transform(self.load(source, cfg), cfg, train)
        except MediaError:
            raise
        except CODE_ERRORS:
            raise
        except Exception as e:  # noqa: BLE001 - the per-sample policy: any decoder failure is a bad sample
            reason = str(e).splitlines()[0] if str(e) else ""
            raise MediaError(source, self.name, f"{type(e).__name__}: {reason}".rstrip(": ")) from e

    def collate(self, items: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(items)

    def augment(self, x: torch.Tensor, cfg: Any) -> torch.Tensor:
        """A training augmentation of a collated batch, applied by the trainer to every training batch: it also
        reaches samples a :class:`~bind.data.dataset.SampleCache` decoded once in eval mode, which per-sample
        ``transform(train=True)`` augmentations never see. Draws from torch's global RNG (seeded per step). Default:
        a random shift of up to ``cfg.train_shift`` pixels (:func:`bind.data.augment.random_shift`) when the
        ``Preprocess`` has that field, else ``x`` as it is."""
        from bind.data.augment import random_shift

        shift = getattr(cfg, "train_shift", 0)
        if shift < 0:
            raise ValueError(f"{self.name}: preprocess train_shift must be >= 0 pixels, got {shift}")
        return random_shift(x, shift)

    # --- hooks -----------------------------------------------------------------------------------------------------
    def prepare_encoder_config(self, cfg: EncoderConfig, root=None) -> None:
        """Fill derived encoder fields (e.g. vocabulary size from the tokenizer) before the encoder is built.

        ``root`` is the model directory when loading a saved model (for assets stored with it).
        """

    def save_assets(self, cfg: EncoderConfig, directory, root=None) -> None:
        """Copy assets the encoder needs (e.g. tokenizer files) into a model directory being saved, rewriting
        ``cfg`` to point at them relative to the directory."""

    # --- model side -----------------------------------------------------------------------------------------------
    def stem(self, cfg: EncoderConfig) -> nn.Module:
        raise NotImplementedError

    def expected_shape(self, cfg: EncoderConfig) -> str:
        """Human-readable per-sample shape, e.g. ``"[3, H, W]"``, used in error messages."""
        return f"{self.sample_ndim}-d sample"

    def check_input(self, x: torch.Tensor, cfg: EncoderConfig) -> None:
        """Raise :class:`InputError` naming the modality and the expected shape when ``x`` cannot be encoded."""
        expect = f"[B, {self.expected_shape(cfg)[1:]} or [B, clips, {self.expected_shape(cfg)[1:]}"
        if not isinstance(x, torch.Tensor):
            raise InputError(f"{self.name}: expected a torch.Tensor {expect}, got {type(x).__name__}")
        if x.dim() not in (self.sample_ndim + 1, self.sample_ndim + 2):
            raise InputError(f"{self.name}: expected a tensor of shape {expect}, got {tuple(x.shape)}")
        if self.float_input and not x.is_floating_point():
            raise InputError(f"{self.name}: expected a floating-point tensor {expect}, got dtype {x.dtype}")
        if not self.float_input and x.is_floating_point():
            raise InputError(f"{self.name}: expected integer token ids {expect}, got dtype {x.dtype}")
        chans = self.channels(cfg)
        if chans is not None and x.shape[-self.sample_ndim] != chans:
            raise InputError(f"{self.name}: expected {chans} channels in {expect}, got shape {tuple(x.shape)}")

    def channels(self, cfg: EncoderConfig) -> int | None:
        """Channel count expected at dim ``-sample_ndim`` (None when not applicable)."""
        return None

    # --- presentation ---------------------------------------------------------------------------------------------
    def preview(self, source: Any, cfg: Any) -> dict[str, Any] | None:
        """How the results page (``bindspace serve``) shows an item of this modality; None (the default) gives a
        generic card (id, modality, file name). A dict may hold:

        * ``picture`` — bytes of a small still (PNG/JPEG): a thumbnail, poster frame, spectrogram, colour map or plot
          (helpers in :mod:`bind.preview`), with ``picture_mime`` (default ``"image/png"``);
        * ``play`` — ``"audio"`` or ``"video"``: the page plays the original file (served by item id) inline;
        * ``text`` — text to show on the card (a caption, a transcript).

        ``source`` is what :meth:`load` accepts and ``cfg`` this modality's ``Preprocess``; decoding failures raise
        like :meth:`load` (the page then shows the error text on the card)."""
        return None

    # --- synthetic samples ------------------------------------------------------------------------------------------
    def write_sample(self, fmt: str, directory: Path, index: int, rng: np.random.Generator) -> Any:
        """Write sample ``index`` of format ``fmt`` (one of :attr:`sample_formats`: realistic content, real encoding)
        under ``directory``, drawing from ``rng``; returns a source :meth:`load` accepts (a path, or a string)."""
        raise NotImplementedError(f"{self.name}: the plugin writes no synthetic samples (Modality.write_sample)")


def _dataclass_from(cls: type, values: dict[str, Any], what: str, check: dict[str, Any] | None = None):
    """``cls(**values)``, refusing keys of ``check`` (default: ``values``) that are not fields of ``cls``."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values if check is None else check) - fields
    if unknown:
        raise ValueError(f"{what} {sorted(unknown)}; known: {sorted(fields)}")
    return cls(**values)
