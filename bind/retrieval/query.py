"""Queries of any modality against an index of any modality, with ImageBind-style embedding arithmetic.

Several query inputs combine by summing their unit-norm embeddings and re-normalising (Girdhar et al., "ImageBind:
One Embedding Space To Bind Them All", 2023, §5.3 "embedding space arithmetic"), e.g. an image of a bird plus the
sound of waves retrieves birds by the sea.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bind.retrieval.index import Hit, Index
from bind.retrieval.model_info import ModelInfo, ModelMismatchError

#: a query input: (modality, source) — the text itself for ``text``, a path / bytes / array otherwise
Query = tuple[str, Any]


@torch.no_grad()
def embed_query(model, queries: Sequence[Query], weights: Sequence[float] | None = None) -> torch.Tensor:
    """One unit-norm query embedding ``[D]`` from one or more ``(modality, source)`` inputs (weighted sum of their
    unit-norm embeddings, re-normalised)."""
    if not queries:
        raise ValueError("no query given")
    weights = [1.0] * len(queries) if weights is None else list(weights)
    if len(weights) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(weights)} weights")
    total = torch.zeros(model.embed_dim)
    for (modality, source), w in zip(queries, weights):
        total += w * model.embed_sources(modality, [source])[0].float().cpu()
    return F.normalize(total, dim=-1)


def search(
    model, index: Index, queries: Sequence[Query], k: int = 10, *, model_info: ModelInfo | None = None
) -> list[Hit]:
    """Embed ``queries`` (combined by embedding arithmetic) with ``model`` and return the top-``k`` hits of
    ``index``. The model must be the one the index was built with."""
    index.model.check_compatible(model_info or ModelInfo.of(model), what="queries")
    return index.search(embed_query(model, queries), k).hits[0]


def load_index_model(index: Index, model: str | Path | None = None, map_location: str = "cpu"):
    """The model an index was built with: ``model`` (a saved directory or a name), else the path recorded in the
    index. Raises :class:`ModelMismatchError` when its weights are not those the index was built with."""
    import bind

    ref = model if model is not None else index.model.path
    if model is None and not Path(ref).exists() and ref == index.model.name:
        hint = (
            f" (the index was built from the named config {ref!r} with freshly initialised, seeded weights; use "
            "the same --seed, or pass --model with the saved model directory it was built with)"
        )
    else:
        hint = ""
    loaded = bind.load_model(ref, map_location=map_location)
    try:
        index.model.check_compatible(ModelInfo.of(loaded, ref), what="queries")
    except ModelMismatchError as e:
        raise ModelMismatchError(f"{e}{hint}") from None
    return loaded
