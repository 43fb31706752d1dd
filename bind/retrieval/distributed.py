"""Lightning pieces of :func:`bind.retrieval.embed.embed_items`'s scale-out path: a ``LightningModule`` whose
``predict_step`` embeds a batch (:meth:`bind.BindModel.embed_batch`, as the one-process path does), and a prediction
writer that writes one shard per rank and merges them on rank 0.

Imported only when ``devices`` is given (Lightning is heavy to import).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import safetensors.torch
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from bind.io import atomic_path, write_text
from bind.retrieval.embed import EmbeddingSet, Items, merge_shards
from bind.retrieval.model_info import ModelInfo


class EmbedPredictModule(L.LightningModule):
    """``predict_step``: a DataLoader batch ``(rows, batch, errors)`` -> ``{"rows", "embeddings", "errors"}``."""

    def __init__(self, model, modality: str) -> None:
        super().__init__()
        self.model, self.modality = model, modality

    def predict_step(self, batch, batch_idx: int) -> dict[str, Any]:
        rows, x, errors = batch
        emb = torch.zeros(0, self.model.embed_dim) if x is None else self.model.embed_batch(self.modality, x).cpu()
        return {"rows": rows.cpu(), "embeddings": emb, "errors": errors}


class ShardWriter(BasePredictionWriter):
    """Each rank writes ``shard-<rank>.safetensors`` (+ ``.json`` with skipped sources) when its predictions are
    done; after a barrier, global rank 0 merges every shard into :attr:`result` and removes the shard directory."""

    def __init__(self, shard_dir: Path, items: Items, modality: str, info: ModelInfo) -> None:
        super().__init__(write_interval="batch")
        self.shard_dir, self.items, self.modality, self.info = shard_dir, items, modality, info
        self.rows: list[torch.Tensor] = []
        self.embeddings: list[torch.Tensor] = []
        self.errors: list[tuple[int, str]] = []
        self.result: EmbeddingSet | None = None

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self.rows.append(prediction["rows"])
        self.embeddings.append(prediction["embeddings"])
        self.errors.extend(prediction["errors"])

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        rank, world = trainer.global_rank, trainer.world_size
        if rank == 0 and self.shard_dir.exists():
            shutil.rmtree(self.shard_dir, ignore_errors=True)
        trainer.strategy.barrier("bind-embed-clean")
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        rows = torch.cat(self.rows) if self.rows else torch.zeros(0, dtype=torch.long)
        emb = torch.cat(self.embeddings) if self.embeddings else torch.zeros(0, self.info.embed_dim)
        stem = self.shard_dir / f"shard-{rank:05d}"
        with atomic_path(stem.with_suffix(".safetensors")) as tmp:
            safetensors.torch.save_file({"rows": rows.contiguous(), "embeddings": emb.contiguous()}, str(tmp))
        write_text(stem.with_suffix(".json"), json.dumps({"errors": self.errors, "rank": rank, "world": world}))
        trainer.strategy.barrier("bind-embed-shards")
        if rank == 0:
            self.result = merge_shards(self.shard_dir, self.items, self.modality, self.info, world)
            shutil.rmtree(self.shard_dir, ignore_errors=True)
