"""Batched embedding of raw sources of any modality, on one process or scaled out with Lightning.

``source -plugin.load/transform-> tensor -plugin.collate-> batch -model.embed_batch-> [B, D]``, run by
:meth:`bind.BindModel.embed_sources` over a :func:`bind.model.source_loader` (worker processes decode media).
Sources that fail to decode (:class:`bind.errors.MediaError`) are skipped and listed, never fatal.

Scale-out: with ``devices`` set, a :class:`lightning.LightningModule` wrapper runs ``trainer.predict`` (DDP over
devices and nodes; Lightning shards the data with an unrepeated distributed sampler); each rank writes its own
shard (``shard-<rank>.safetensors`` + JSON), and rank 0 merges them in source order once every rank is done.
The shard directory must be visible to rank 0 (a shared file system for multi-node runs).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from bind.errors import BindError
from bind.io import atomic_path, write_text
from bind.model import source_loader
from bind.retrieval.model_info import ModelInfo

#: (id, source) pairs; ``source`` is whatever the modality plugin's ``load`` accepts (path, bytes, str, array)
Items = Sequence[tuple[str, Any]]


def describe_source(source: Any) -> str:
    """A JSON-friendly description of a source (its path, the text itself, or a placeholder for bytes/arrays)."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if hasattr(source, "shape"):
        return f"<array {tuple(source.shape)}>"
    return repr(source)[:200]


@dataclass
class EmbeddingSet:
    """Embeddings ``[N, D]`` (float32, unit-norm) of one modality with their ids and sources, the model identity,
    the sources that were skipped (``{"id", "source", "reason"}``) and, for each embedding, the position of its
    source in the input list (``rows``)."""

    embeddings: torch.Tensor
    ids: list[str]
    sources: list[str]
    modality: str
    model: ModelInfo
    skipped: list[dict[str, str]] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def sidecar(path: str | Path) -> Path:
        return Path(path).with_suffix(".json")

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.safetensors`` or ``.npz``: the ``embeddings`` array) and its JSON sidecar
        (``path`` with ``.json``: ids, sources, modality, model, skipped)."""
        path = Path(path)
        if path.suffix not in (".safetensors", ".npz"):
            raise ValueError(f"{path}: embeddings are written as .safetensors or .npz, got {path.suffix!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "modality": self.modality,
            "model": self.model.to_dict(),
            "count": len(self.ids),
            "dim": int(self.embeddings.shape[1]),
            "ids": self.ids,
            "sources": self.sources,
            "skipped": self.skipped,
            "rows": self.rows,
            "format": path.suffix[1:],
        }
        emb = self.embeddings.detach().to("cpu", torch.float32).contiguous()
        with atomic_path(path) as tmp:
            if path.suffix == ".npz":
                with open(tmp, "wb") as f:
                    np.savez(f, embeddings=emb.numpy())
            else:
                safetensors.torch.save_file({"embeddings": emb}, str(tmp), metadata={"modality": self.modality})
        write_text(self.sidecar(path), json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingSet:
        """Read what :meth:`save` wrote."""
        path = Path(path)
        side = cls.sidecar(path)
        if not path.is_file() or not side.is_file():
            raise FileNotFoundError(f"{path}: embeddings file or its sidecar {side.name} not found")
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
            ids, sources, modality = meta["ids"], meta["sources"], meta["modality"]
            model = ModelInfo.from_dict(meta["model"])
            if not (isinstance(ids, list) and isinstance(sources, list) and isinstance(modality, str)):
                raise TypeError("'ids' and 'sources' must be lists, 'modality' a string")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            what = f"missing key {e.args[0]!r}" if isinstance(e, KeyError) else (str(e).splitlines() or [""])[0]
            raise BindError(
                f"{side}: not a bind embeddings sidecar ({what or type(e).__name__}); write it with `bindspace embed`"
            ) from None
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as f:
                    emb = torch.from_numpy(f["embeddings"].copy())
            else:
                emb = safetensors.torch.load_file(str(path))["embeddings"]
        except Exception as e:  # noqa: BLE001 - numpy / safetensors raise many types for a malformed file
            raise BindError(f"{path}: not a readable embeddings file ({type(e).__name__}: {str(e)[:200]})") from None
        if emb.ndim != 2 or emb.shape != (len(ids), model.embed_dim) or not torch.isfinite(emb).all():
            raise BindError(
                f"{path}: embeddings of shape {tuple(emb.shape)} do not match the {len(ids)} ids of "
                f"dimension {model.embed_dim} in {side.name} (or hold NaN/inf)"
            )
        return cls(
            emb.float(),
            [str(i) for i in ids],
            [str(x) for x in sources],
            modality,
            model,
            meta.get("skipped", []),
            meta.get("rows", []),
        )


def _assemble(
    items: Items, modality: str, info: ModelInfo, rows: torch.Tensor, emb: torch.Tensor, bad: list[tuple[int, str]]
) -> EmbeddingSet:
    """Order embeddings by source row (dropping duplicate rows) and list skipped sources."""
    rows, first = _unique_rows(rows)
    emb = emb[first]
    bad_rows = {i: err for i, err in bad}
    missing = set(range(len(items))) - set(rows.tolist()) - set(bad_rows)
    if missing:
        raise RuntimeError(f"embedding lost {len(missing)} sources (rows {sorted(missing)[:10]}...)")
    return EmbeddingSet(
        emb.float(),
        [str(items[i][0]) for i in rows.tolist()],
        [describe_source(items[i][1]) for i in rows.tolist()],
        modality,
        info,
        [
            {"id": str(items[i][0]), "source": describe_source(items[i][1]), "reason": err}
            for i, err in sorted(bad_rows.items())
        ],
        rows.tolist(),
    )


def _unique_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(rows, stable=True)
    rows_sorted = rows[order]
    keep = torch.ones_like(rows_sorted, dtype=torch.bool)
    keep[1:] = rows_sorted[1:] != rows_sorted[:-1]
    return rows_sorted[keep], order[keep]


def embed_items(
    model,
    modality: str,
    items: Items,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = False,
    model_info: ModelInfo | None = None,
    devices: int | str | None = None,
    strategy: str = "auto",
    accelerator: str = "auto",
    num_nodes: int = 1,
    shard_dir: str | Path | None = None,
) -> EmbeddingSet | None:
    """Embed ``(id, source)`` items of ``modality`` with ``model`` (eval mode), skipping undecodable sources.

    With ``devices`` set the work runs through Lightning ``trainer.predict`` (``strategy="ddp"`` for several
    devices or nodes); then only global rank 0 returns the merged :class:`EmbeddingSet`, other ranks return None.
    """
    model.encoder(modality)  # a clear error if the model has no such encoder
    info = model_info or ModelInfo.of(model)
    if devices is not None:
        return _embed_lightning(
            model,
            modality,
            items,
            batch_size,
            num_workers,
            progress,
            info,
            devices,
            strategy,
            accelerator,
            num_nodes,
            shard_dir,
        )
    was_training = model.training
    model.eval()
    skipped: list[tuple[int, str]] = []
    bar = _progress(len(items), f"embed {modality}", progress)
    try:
        emb = model.embed_sources(
            modality,
            [s for _, s in items],
            batch_size,
            skipped=skipped,
            num_workers=num_workers,
            progress=None if bar is None else bar.update,
            output_device="cpu",
        )
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    bad_rows = {i for i, _ in skipped}
    rows = torch.tensor([i for i in range(len(items)) if i not in bad_rows], dtype=torch.long)
    return _assemble(items, modality, info, rows, emb, skipped)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True)


# --- Lightning scale-out --------------------------------------------------------------------------------------------
def _embed_lightning(
    model,
    modality: str,
    items: Items,
    batch_size: int,
    num_workers: int,
    progress: bool,
    info: ModelInfo,
    devices: int | str,
    strategy: str,
    accelerator: str,
    num_nodes: int,
    shard_dir: str | Path | None,
) -> EmbeddingSet | None:
    import lightning as L

    from bind.retrieval.distributed import EmbedPredictModule, ShardWriter

    if shard_dir is None:  # the same on every rank of one node
        key = hashlib.sha1(f"{modality}|{info.fingerprint}|{len(items)}|{items[:1]}|{items[-1:]}".encode())
        shard_dir = Path(tempfile.gettempdir()) / f"bind-embed-{key.hexdigest()[:16]}"
    writer = ShardWriter(Path(shard_dir), items, modality, info)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=num_nodes,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        callbacks=[writer],
        default_root_dir=str(shard_dir),
    )
    loader = source_loader(modality, [s for _, s in items], model.preprocess_config(modality), batch_size, num_workers)
    trainer.predict(EmbedPredictModule(model, modality), dataloaders=loader, return_predictions=False)
    return writer.result if trainer.is_global_zero else None


def merge_shards(shard_dir: Path, items: Items, modality: str, info: ModelInfo, world_size: int) -> EmbeddingSet:
    """Merge the ``world_size`` shards in ``shard_dir`` into one :class:`EmbeddingSet` in source order."""
    files = sorted(shard_dir.glob("shard-*.safetensors"))
    if len(files) != world_size:
        raise RuntimeError(
            f"{shard_dir}: expected {world_size} embedding shards, found {len(files)} "
            "(for multi-node runs the shard directory must be on a shared file system)"
        )
    rows, emb, bad = [], [], []
    for f in files:
        t = safetensors.torch.load_file(str(f))
        rows.append(t["rows"])
        emb.append(t["embeddings"])
        bad.extend((int(i), str(e)) for i, e in json.loads(f.with_suffix(".json").read_text())["errors"])
    return _assemble(items, modality, info, torch.cat(rows), torch.cat(emb), bad)
