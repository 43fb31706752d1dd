"""Multi-modality collate: batches whose samples carry different modality subsets.

Output::

    {"ids": [B ids], "present": {m: bool [B]}, "inputs": {m: [n_m, ...]}, "anchors": {m: [n_m, ...]},
     "anchor_keys": {m: [n_m str]}}

``inputs[m]`` / ``anchors[m]`` hold only the samples that have ``m`` (rows in batch order, where ``present[m]`` is
True); a modality no sample has is absent from ``inputs``. Each modality's plugin collates its own tensors (so
plugins may pad variable-length inputs).
"""

from __future__ import annotations

from typing import Any

import torch

from bind.registry import get_modality


class PairCollator:
    """Picklable collate function for :class:`~bind.data.dataset.PairedDataset` samples (``None`` dropped)."""

    def __init__(self, modalities: list[str], anchor: str) -> None:
        self.modalities, self.anchor = list(modalities), anchor

    def __call__(self, samples: list[dict[str, Any] | None]) -> dict[str, Any]:
        samples = [s for s in samples if s is not None]
        batch: dict[str, Any] = {
            "ids": [s["id"] for s in samples],
            "present": {},
            "inputs": {},
            "anchors": {},
            "anchor_keys": {},
        }
        anchor = get_modality(self.anchor)
        for m in self.modalities:
            rows = [s for s in samples if m in s["inputs"]]
            batch["present"][m] = torch.tensor([m in s["inputs"] for s in samples], dtype=torch.bool)
            if not rows:
                continue
            batch["inputs"][m] = get_modality(m).collate([s["inputs"][m] for s in rows])
            batch["anchors"][m] = anchor.collate([s["anchors"][m] for s in rows])
            batch["anchor_keys"][m] = [s["anchor_keys"][m] for s in rows]
        return batch


def batch_size(batch: dict[str, Any]) -> int:
    return len(batch["ids"])
