"""``BindModel``: one encoder per modality, all into one embedding space.

Saved HF-style as a directory holding ``config.json`` + ``model.safetensors`` (+ tokenizer files), written
atomically (a temporary directory renamed into place), so a crash mid-save never leaves a half-written model.
Loading validates the whole directory before anything is used (:func:`read_weights`): every problem is one
:class:`~bind.errors.ModelLoadError` naming the file; pickles are never read.

The model knows which encoders still hold the random weights they were built with (``untrained_modalities``;
saved as ``config.extra["untrained"]``): embedding with one logs a one-line warning, once per model.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bind.config import BindConfig, EncoderConfig
from bind.encoder import ModalityEncoder
from bind.errors import MediaError, ModelLoadError, UnknownModalityError
from bind.io import atomic_directory
from bind.precision import autocast, check_precision
from bind.registry import get_modality

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
log = logging.getLogger(__name__)


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


class SourceDataset(Dataset):
    """Item ``i``: ``(i, sample | None, error | None)``: source ``i`` of ``modality`` loaded and transformed (eval
    mode) with ``preprocess``, or taken as it is when ``preprocess`` is None (already-transformed samples). With
    ``skip_errors`` a :class:`MediaError` becomes the error string instead of propagating."""

    def __init__(self, sources: Sequence[Any], modality: str, preprocess: Any, skip_errors: bool = True) -> None:
        self.sources, self.modality, self.preprocess, self.skip_errors = (
            list(sources),
            modality,
            preprocess,
            skip_errors,
        )

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[int, Any, str | None]:
        if self.preprocess is None:
            return i, self.sources[i], None
        try:
            return i, get_modality(self.modality).process(self.sources[i], self.preprocess, train=False), None
        except MediaError as e:
            if not self.skip_errors:
                raise
            return i, None, str(e)


class SourceCollate:
    """Collates good samples with the plugin's ``collate``; returns ``(rows, batch | None, [(row, error)])``."""

    def __init__(self, modality: str) -> None:
        self.modality = modality

    def __call__(self, samples: list[tuple[int, Any, str | None]]):
        good = [(i, x) for i, x, err in samples if err is None]
        bad = [(i, err) for i, x, err in samples if err is not None]
        rows = torch.tensor([i for i, _ in good], dtype=torch.long)
        batch = get_modality(self.modality).collate([x for _, x in good]) if good else None
        return rows, batch, bad


def source_loader(
    modality: str,
    sources: Sequence[Any],
    preprocess: Any,
    batch_size: int,
    num_workers: int = 0,
    skip_errors: bool = True,
) -> DataLoader:
    """A DataLoader of ``(rows, batch, errors)`` over ``sources`` in order (:class:`SourceDataset`), what
    :meth:`BindModel.embed_sources` and the Lightning scale-out of :func:`bind.retrieval.embed.embed_items` embed."""
    ds = SourceDataset(sources, modality, preprocess, skip_errors)
    return DataLoader(ds, batch_size=batch_size, num_workers=num_workers, collate_fn=SourceCollate(modality))


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

    def __init__(self, config: BindConfig, root: str | Path | None = None, precision: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.root = Path(root) if root is not None else None
        self.precision = check_precision(precision or config.extra.get("precision"))
        for enc in config.encoders.values():
            get_modality(enc.modality).prepare_encoder_config(enc, self.root)
        self.encoders = nn.ModuleDict({m: build_encoder(c) for m, c in config.encoders.items()})
        self.freeze(config.frozen)
        if "untrained" in config.extra:
            untrained = [m for m in config.extra["untrained"] if m in self.encoders]
        else:  # freshly built: bind's own encoders and towers with a new projection hold random weights
            untrained = [
                m
                for m, e in self.encoders.items()
                if getattr(e, "tower", None) is None or isinstance(getattr(e, "proj", None), nn.Linear)
            ]
        self.mark_untrained(untrained)

    # --- weights state ----------------------------------------------------------------------------------------------
    def _fingerprint(self, modality: str) -> torch.Tensor | None:
        """A cheap fingerprint of an encoder's weights (first values of every tensor) to notice that they changed."""
        parts = [
            t.detach().reshape(-1)[:8].double().cpu()
            for t in self.encoders[modality].state_dict().values()
            if not t.is_meta
        ]
        return torch.cat(parts) if parts else None

    def mark_untrained(self, modalities: Iterable[str]) -> None:
        """Record that ``modalities`` hold random weights (until their weights change: training or loading)."""
        self._random = {m: self._fingerprint(m) for m in modalities if m in self.encoders}
        self._random = {m: f for m, f in self._random.items() if f is not None}  # meta: a converter fills them
        self._warned = False

    @property
    def untrained_modalities(self) -> list[str]:
        """Modalities whose encoders still hold the random weights they were built with (never trained or loaded)."""
        out = []
        for m, fp in list(self._random.items()):
            now = self._fingerprint(m) if m in self.encoders else None
            if now is not None and now.shape == fp.shape and torch.equal(now, fp):
                out.append(m)
            else:
                del self._random[m]  # trained or loaded since: for good
        return out

    def _warn_untrained(self, modality: str) -> None:
        if self._warned or modality not in self._random:
            return
        untrained = self.untrained_modalities
        if modality in untrained:
            self._warned = True
            log.warning(
                "model %r: the %s encoder%s never trained or loaded (random weights): embeddings, search "
                "and eval results mean nothing; train it or load a trained / converted model",
                self.config.name,
                ", ".join(untrained),
                "s were" if len(untrained) > 1 else " was",
            )

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
                f"model {self.config.name!r} has no {modality!r} encoder; it encodes {self.modalities}"
            )
        return self.encoders[modality]

    def logit_scale(self, modality: str) -> torch.Tensor:
        """The exponentiated temperature of ``modality``'s similarities (capped as its source model caps it, see
        ``EncoderConfig.logit_scale_max``), kept out of the embedding. Detached in eval mode, like :meth:`encode`."""
        scale = self.encoder(modality).get_logit_scale()
        return scale if self.training else scale.detach()

    # --- forward ---------------------------------------------------------------------------------------------------
    def encode(
        self, modality: str, x: torch.Tensor, normalize: bool = True, precision: str | None = None
    ) -> torch.Tensor:
        """Embed a batch of one modality: ``[B, *sample]`` or ``[B, clips, *sample]`` -> fp32 ``[B, D]``.

        ``precision`` overrides :attr:`precision` for this call (eval mode only; training leaves it to the caller).
        In eval mode the result carries no autograd graph (``torch.no_grad``); training (``model.train()``) calls the
        encoder with gradients.
        """
        encoder = self.encoder(modality)
        if self.training:
            return encoder(x, normalize=normalize)
        self._warn_untrained(modality)
        with torch.no_grad(), autocast(precision or self.precision, x.device if isinstance(x, torch.Tensor) else "cpu"):
            emb = encoder(x, normalize=normalize)
        if emb.dtype == torch.float32:
            return emb
        emb = emb.float()
        return F.normalize(emb, dim=-1) if normalize else emb

    def embed(self, inputs: dict[str, torch.Tensor], normalize: bool = True) -> dict[str, torch.Tensor]:
        """Embed every modality in ``inputs`` (eval mode: no gradients, see :meth:`encode`)."""
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
    def embed_sources(
        self,
        modality: str,
        sources: Sequence[Any],
        batch_size: int = 128,
        *,
        skipped: list[tuple[int, str]] | None = None,
        num_workers: int = 0,
        progress: Callable[[int], None] | None = None,
        output_device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """Preprocess and embed raw sources (paths, bytes, arrays, strings) in batches: fp32 ``[len(sources), D]``.

        ``skipped``: when given, sources that fail to decode (:class:`~bind.errors.MediaError`) are left out of the
        result and appended as ``(position, reason)``; otherwise the error propagates. ``num_workers`` decode in
        worker processes (a :class:`~torch.utils.data.DataLoader`); ``progress(n)`` is called after each batch with
        the number of sources it held; ``output_device`` gathers the embeddings there (default: the model's device).
        """
        loader = source_loader(
            modality,
            sources,
            self.preprocess_config(modality),
            batch_size,
            num_workers,
            skip_errors=skipped is not None,
        )
        return self._embed_loader(modality, loader, skipped, progress, output_device)

    @torch.no_grad()
    def embed_tensors(
        self,
        modality: str,
        samples: Sequence[torch.Tensor],
        batch_size: int = 128,
        *,
        progress: Callable[[int], None] | None = None,
        output_device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """Embed already-transformed samples (``Modality.process`` / a sample cache's output) in batches: fp32
        ``[len(samples), D]`` (``progress`` and ``output_device`` as in :meth:`embed_sources`).

        Token-id samples are embedded longest first and the rows put back in order (sentence-transformers'
        ``encode``): each batch then holds texts of about one length, so :func:`trim_padding` cuts most of the padding
        (the world demo's 4,471 distinct paraphrases: 10.4 -> 6.9 s)."""
        order = self._length_order(modality, samples)
        if order is None:
            loader = source_loader(modality, samples, None, batch_size)
            return self._embed_loader(modality, loader, None, progress, output_device)
        loader = source_loader(modality, [samples[i] for i in order], None, batch_size)
        emb = self._embed_loader(modality, loader, None, progress, output_device)
        return emb[torch.argsort(torch.as_tensor(order, device=emb.device))]

    def _length_order(self, modality: str, samples: Sequence[torch.Tensor]) -> list[int] | None:
        """Indices of token-id ``samples`` from the most tokens to the fewest (stable); None for other samples."""
        if len(samples) < 2 or not all(isinstance(s, torch.Tensor) and not s.is_floating_point() for s in samples):
            return None
        pad = self.encoder(modality).cfg.stem.get("pad_token_id")
        if pad is None:
            return None
        lengths = [int((s != pad).sum()) for s in samples]
        return sorted(range(len(samples)), key=lambda i: -lengths[i])

    @torch.no_grad()
    def embed_batch(self, modality: str, batch: Any) -> torch.Tensor:
        """Embed one collated batch (``Modality.collate``'s output) as the batched paths do: token ids lose the
        columns that are padding in every row (:func:`trim_padding`), the batch moves to the model's device, fp32
        ``[B, D]``."""
        if isinstance(batch, torch.Tensor) and not batch.is_floating_point():
            stem = self.encoder(modality).cfg.stem
            batch = trim_padding(batch, stem.get("pad_token_id"), stem.get("eot_token_id"))
        return self.encode(modality, batch.to(next(self.parameters()).device)).float()

    def _embed_loader(
        self,
        modality: str,
        loader: Iterable[tuple[torch.Tensor, Any, list[tuple[int, str]]]],
        skipped: list[tuple[int, str]] | None,
        progress: Callable[[int], None] | None,
        output_device: str | torch.device | None,
    ) -> torch.Tensor:
        """The one batched-embedding loop over :func:`source_loader`'s ``(rows, batch, errors)``."""
        out = []
        for rows, batch, errors in loader:
            if skipped is not None:
                skipped.extend(errors)
            if batch is not None:
                emb = self.embed_batch(modality, batch)
                out.append(emb if output_device is None else emb.to(output_device))
            if progress is not None:
                progress(len(rows) + len(errors))
        if out:
            return torch.cat(out)
        return torch.empty(0, self.embed_dim, device=output_device or next(self.parameters()).device)

    # --- freezing ---------------------------------------------------------------------------------------------------
    def freeze(self, modalities: Iterable[str], frozen: bool = True) -> None:
        for m in modalities:
            for p in self.encoder(m).parameters():
                p.requires_grad_(not frozen)
            if frozen and m not in self.config.frozen:
                self.config.frozen.append(m)
            if not frozen and m in self.config.frozen:
                self.config.frozen.remove(m)

    def add_encoders(self, other: BindModel, modalities: Iterable[str]) -> BindModel:
        """Take ``modalities``' encoders (and their configs) from ``other`` into this model, in place: a modality
        trained on its own against the same frozen anchor joins the space (one model to save, index and serve).

        Raises ``ValueError`` unless the two models share a frozen tower with identical weights and the embedding
        width (otherwise their embeddings are not in one space) and when an encoder still holds LoRA adapters
        (:func:`bind.lora.merge_lora` them first)."""
        modalities = list(modalities)
        for m in modalities:
            other.encoder(m)
            if any("lora_" in name for name, _ in other.encoders[m].named_parameters()):
                raise ValueError(f"the {m} encoder holds LoRA adapters: merge them first (bind.lora.merge_lora)")
        shared = [m for m in self.config.frozen if m in other.config.frozen and m not in modalities]
        if other.embed_dim != self.embed_dim or not shared:
            raise ValueError(
                f"{other.config.name!r} is not in this model's space: embedding width {other.embed_dim} vs "
                f"{self.embed_dim}, frozen towers {other.config.frozen} vs {self.config.frozen}"
            )
        for m in shared:
            mine, theirs = self.encoders[m].state_dict(), other.encoders[m].state_dict()
            if mine.keys() != theirs.keys() or not all(torch.equal(mine[k], theirs[k].to(mine[k])) for k in mine):
                raise ValueError(f"the frozen {m} towers differ: the two models were anchored to different weights")
        for m in modalities:
            self.config.encoders[m] = copy.deepcopy(other.config.encoders[m])
            self.encoders[m] = other.encoders[m]
            if m in other._random:
                self._random[m] = other._random[m]
            else:
                self._random.pop(m, None)
        return self

    # --- persistence -------------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (+ modality assets) atomically into ``directory``."""
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            config = copy.deepcopy(self.config)
            config.extra["untrained"] = self.untrained_modalities
            for m, enc in config.encoders.items():
                get_modality(m).save_assets(enc, tmp, self.root)
            config.save(tmp / CONFIG_NAME)
            safetensors.torch.save_model(self, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "bind": "1"})
        return directory

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        map_location: str | torch.device = "cpu",
        precision: str | None = None,
        *,
        allow_nonfinite: bool = False,
    ) -> BindModel:
        """Load a directory written by :meth:`save_pretrained`, validated before use.

        Everything wrong — a missing or invalid ``config.json``, a truncated / empty / non-safetensors weights file
        (a pickle is never read), a header that lies about its tensors, missing / extra / misshaped tensors, NaN or
        infinite weights (unless ``allow_nonfinite``) — raises one :class:`~bind.errors.ModelLoadError` naming the
        file. ``precision`` (default: the one saved with the model, else ``auto``) is how eval-mode encoding runs.
        """
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not directory.is_dir():
            raise ModelLoadError(
                directory, "not a directory (expected a bind model directory: config.json + model.safetensors)"
            )
        config = read_config(config_path)
        if not weights_path.is_file():
            raise ModelLoadError(
                weights_path,
                "missing: a bind model directory holds config.json and "
                "model.safetensors (save it again with save_pretrained)",
            )
        config.extra.setdefault("untrained", [])  # saved before the flag existed: loaded weights
        header = read_header(weights_path)  # cheap checks first: nothing is built for a file that is not weights
        if any(e.tower is not None for e in config.encoders.values()):
            # a tower's build imports this lazily, and with it torchaudio's module-level tensors: imported under
            # torch.device("meta") they would stay meta for the whole process (audio fbanks then fail)
            import transformers.processing_utils  # noqa: F401
        try:  # the shapes the config implies, without allocating them (a hostile config may claim huge sizes)
            with torch.device("meta"):
                expected = cls(copy.deepcopy(config), root=directory, precision=precision).state_dict()
        except Exception as e:  # noqa: BLE001 — any failure to build from an untrusted config is the config's fault
            raise ModelLoadError(config_path, f"describes no buildable model ({type(e).__name__}: {e})") from None
        check_header(weights_path, header, expected)
        try:
            model = cls(config, root=directory, precision=precision)
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(config_path, f"describes no buildable model ({type(e).__name__}: {e})") from None
        state = read_weights(weights_path, model.state_dict(), allow_nonfinite=allow_nonfinite, header=header)
        model.load_state_dict(state, strict=True)
        model.to(map_location)
        model.mark_untrained(config.extra["untrained"])
        return model.eval()


def read_config(path: Path) -> BindConfig:
    """``config.json`` of a model directory as a :class:`BindConfig` (:class:`ModelLoadError` when unusable)."""
    if not path.is_file():
        raise ModelLoadError(path, "missing (not a bind model directory: expected config.json + model.safetensors)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelLoadError(path, f"not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(path, f"expected a JSON object, got {type(raw).__name__}")
    try:
        if not isinstance(raw.get("encoders"), dict) or not raw["encoders"]:
            raise ValueError("'encoders' must be a non-empty object of modality -> encoder config")
        if not all(isinstance(e, dict) for e in raw["encoders"].values()):
            raise ValueError("every encoder config must be an object")
        for m, e in raw["encoders"].items():
            for k in (f.name for f in dataclasses.fields(EncoderConfig) if f.metadata.get("positive")):
                if k in e and (isinstance(e[k], bool) or not isinstance(e[k], int) or e[k] < 1):
                    raise ValueError(f"encoders.{m}.{k} must be a positive integer, got {e[k]!r}")
        if isinstance(raw.get("embed_dim"), bool) or not isinstance(raw.get("embed_dim"), int) or raw["embed_dim"] < 1:
            raise ValueError(f"'embed_dim' must be a positive integer, got {raw.get('embed_dim')!r}")
        if not isinstance(raw.get("extra", {}), dict) or not isinstance(raw.get("frozen", []), list):
            raise ValueError("'extra' must be an object and 'frozen' a list")
        return BindConfig.from_dict(raw)
    except Exception as e:  # noqa: BLE001 — an untrusted file: whatever the dataclasses reject
        raise ModelLoadError(path, f"not a bind model config ({type(e).__name__}: {e})") from None


def read_header(path: Path) -> dict[str, Any]:
    """The validated JSON header of a safetensors file (:class:`ModelLoadError` for anything else)."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ModelLoadError(path, f"cannot be read ({e.strerror or e})") from None
    if size == 0:
        raise ModelLoadError(path, "empty file (0 bytes): the save did not finish; save the model again")
    with open(path, "rb") as f:
        head = f.read(9)
        n = int.from_bytes(head[:8], "little")
        plausible = len(head) == 9 and n <= min(MAX_HEADER_BYTES, size - 8) and head[8:9] == b"{"
        if not plausible and (
            head[:2] == b"PK" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))
        ):
            raise ModelLoadError(
                path,
                "a PyTorch pickle / zip checkpoint named .safetensors: bind reads only "
                "safetensors and never unpickles model directories (convert the checkpoint instead)",
            )
        if size < 8:
            raise ModelLoadError(path, f"truncated: {size} bytes, shorter than a safetensors header")
        f.seek(8)
        if n > MAX_HEADER_BYTES:
            raise ModelLoadError(
                path,
                f"header length {n} bytes exceeds the {MAX_HEADER_BYTES}-byte limit "
                "(corrupt or not a safetensors file)",
            )
        if n > size - 8:
            raise ModelLoadError(
                path, f"truncated: the header claims {n} bytes, the file holds {size - 8} after the length field"
            )
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ModelLoadError(path, f"corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ModelLoadError(path, f"corrupt safetensors header (a JSON {type(header).__name__}, not an object)")
    data = size - 8 - n
    for key, info in header.items():
        if key == "__metadata__":
            continue
        ok = (
            isinstance(info, dict)
            and info.get("dtype") in _DTYPES
            and isinstance(info.get("shape"), list)
            and all(isinstance(d, int) and d >= 0 for d in info["shape"])
            and isinstance(info.get("data_offsets"), list)
            and len(info["data_offsets"]) == 2
            and all(isinstance(o, int) for o in info["data_offsets"])
        )
        if not ok:
            raise ModelLoadError(
                path,
                f"corrupt safetensors header: entry {key!r} is not {{dtype, shape, data_offsets}} of a supported type",
            )
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= data:
            raise ModelLoadError(
                path,
                f"tensor {key!r}: data offsets {begin}..{end} lie outside the {data} data "
                "bytes (truncated or corrupt file)",
            )
        want = math.prod(info["shape"]) * _DTYPES[info["dtype"]].itemsize
        if end - begin != want:
            raise ModelLoadError(
                path,
                f"tensor {key!r}: {end - begin} data bytes for shape {info['shape']} {info['dtype']} ({want} expected)",
            )
    return header


def check_header(path: Path, header: dict[str, Any], expected: dict[str, torch.Tensor]) -> None:
    """The tensors a safetensors header lists must be exactly ``expected``'s (names, shapes, kinds of dtype)."""
    names = set(header) - {"__metadata__"}
    missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
    problems = []
    if missing:
        problems.append(
            f"missing {len(missing)} tensors the config needs ({', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''})"
        )
    if extra:
        problems.append(
            f"{len(extra)} tensors the config has no place for ({', '.join(extra[:5])}"
            f"{' ...' if len(extra) > 5 else ''})"
        )
    shapes = [
        f"{k} {header[k]['shape']} (config: {list(expected[k].shape)})"
        for k in sorted(names & set(expected))
        if list(expected[k].shape) != header[k]["shape"]
    ]
    if shapes:
        problems.append(f"misshaped tensors: {', '.join(shapes[:5])}{' ...' if len(shapes) > 5 else ''}")
    kinds = [
        k
        for k in sorted(names & set(expected))
        if _DTYPES[header[k]["dtype"]].is_floating_point != expected[k].is_floating_point()
    ]
    if kinds:
        problems.append(f"tensors of the wrong kind of dtype: {', '.join(kinds[:5])}")
    if problems:
        raise ModelLoadError(path, "does not match config.json: " + "; ".join(problems))


def read_weights(
    path: str | Path,
    expected: dict[str, torch.Tensor],
    *,
    allow_nonfinite: bool = False,
    header: dict[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors``, validated against ``expected`` (a model's state dict) before use.

    Raises :class:`~bind.errors.ModelLoadError` naming the file for anything that is not exactly the model's
    tensors (names, shapes, kinds of dtype), for files that are not safetensors and for NaN / inf values
    (``allow_nonfinite=True`` accepts those).
    """
    path = Path(path)
    check_header(path, read_header(path) if header is None else header, expected)
    try:
        state = safetensors.torch.load_file(str(path))
    except Exception as e:  # noqa: BLE001 — safetensors raises its own (Rust) error types
        raise ModelLoadError(path, f"not a readable safetensors file ({type(e).__name__}: {e})") from None
    if not allow_nonfinite:
        bad = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            raise ModelLoadError(
                path,
                f"non-finite (NaN / inf) weights in {len(bad)} tensors ({', '.join(bad[:5])}"
                f"{' ...' if len(bad) > 5 else ''}); a diverged or corrupt model — pass "
                "allow_nonfinite=True to load it anyway",
            )
    return {k: t.to(expected[k].dtype) if t.dtype != expected[k].dtype else t for k, t in state.items()}
