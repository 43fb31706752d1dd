"""Vector index over bind embeddings: FAISS (exact / IVF / HNSW) or a torch brute-force backend, plus metadata.

* ``flat`` — exact maximum inner product (``faiss.IndexFlatIP``); bind embeddings are unit-norm, so this is
  cosine similarity. The default.
* ``ivf`` — inverted file with ``nlist`` k-means cells (trained on a sample of the first embeddings added),
  ``nprobe`` cells visited per query (Jégou et al., "Product quantization for nearest neighbor search", 2011).
* ``hnsw`` — hierarchical navigable small-world graph with ``M`` links per node, ``efConstruction`` / ``efSearch``
  beam widths (Malkov & Yashunin, 2018).
* ``backend="torch"`` — exact search as a chunked ``queries @ vectors.T`` + top-k, no FAISS.

Every row carries ``id``, ``source`` and ``modality``; the index records the identity of the model that produced
its embeddings (name, path, weight fingerprint, dimension) and refuses embeddings of any other model.

On disk an index is a directory: ``metadata.json`` + ``index-<token>.faiss`` (``faiss.write_index``) or
``vectors-<token>.safetensors`` + ``entries-<token>.jsonl``. A new directory is written as a temporary directory
and renamed into place; an existing one gets new data files first and then a new ``metadata.json`` by
``os.replace`` — the single atomic commit that switches to them. A process killed at any moment of a save leaves
either the previous index or the new one, never a mixture; stale files are removed by the next save.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from bind.errors import BindError
from bind.io import atomic_directory, atomic_file, atomic_path, write_text
from bind.retrieval.model_info import ModelInfo, ModelMismatchError

log = logging.getLogger(__name__)
logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines about CPU features are noise here

METADATA_NAME = "metadata.json"
FORMAT, VERSION = "bind-index", 1
KINDS, BACKENDS = ("flat", "ivf", "hnsw"), ("faiss", "torch")


class BindIndexError(BindError):
    """An index directory is missing, corrupt, or asked for something it cannot do."""


@dataclass
class IndexSpec:
    """How an index searches. ``nlist``/``nprobe``/``train_size`` apply to ``ivf``; ``hnsw_m``/``ef_*`` to ``hnsw``."""

    kind: str = "flat"
    backend: str = "faiss"
    nlist: int = 1024
    nprobe: int = 16
    train_size: int = 100_000
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"index kind {self.kind!r}: expected one of {KINDS}")
        if self.backend not in BACKENDS:
            raise ValueError(f"index backend {self.backend!r}: expected one of {BACKENDS}")
        if self.backend == "torch" and self.kind != "flat":
            raise ValueError(f"the torch backend is exact (kind 'flat'); {self.kind!r} needs backend 'faiss'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Hit:
    """One search result: ``rank`` (1-based), index ``row``, the entry's ``id``/``source``/``modality`` and ``score``
    (inner product)."""

    rank: int
    row: int
    id: str
    source: str
    modality: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SearchResult:
    """``scores`` and ``rows`` ``[Q, k]`` (row -1 where the index returned fewer than k) and ``hits`` per query."""

    scores: torch.Tensor
    rows: torch.Tensor
    hits: list[list[Hit]] = field(default_factory=list)


def _as_float32(x: Any, name: str = "embeddings") -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a [N, D] array, got shape {x.shape}")
    return x


def _faiss():
    import faiss

    return faiss


#: faiss switches exact search from per-pair SIMD dot products to blocked BLAS sgemm above this many queries; faiss
#: 1.15 ships 128000 (BLAS practically never), which makes 100 queries over 1M x 768 ~10x slower than one sgemm
BLAS_QUERY_THRESHOLD = 20
#: database rows per sgemm block: faiss's 1024 gives GEMMs too small to scale over threads on a busy machine
BLAS_DATABASE_BLOCK = 65536


@contextlib.contextmanager
def faiss_blas_search():
    """Exact faiss search through large BLAS blocks (the settings are process-global; restored on exit)."""
    cvar = _faiss().cvar
    saved = cvar.distance_compute_blas_threshold, cvar.distance_compute_blas_database_bs
    cvar.distance_compute_blas_threshold, cvar.distance_compute_blas_database_bs = (BLAS_QUERY_THRESHOLD,
                                                                                     BLAS_DATABASE_BLOCK)
    try:
        yield
    finally:
        cvar.distance_compute_blas_threshold, cvar.distance_compute_blas_database_bs = saved


class Index:
    """Embeddings of one model (any mix of modalities) with per-row metadata; exact or approximate search.

    >>> index = Index(ModelInfo.of(model))
    >>> index.add(model.embed_sources("image", paths), ids=names, sources=paths, modality="image")
    >>> index.search(model.embed_sources("text", ["a dog"]), k=5).hits[0]
    """

    def __init__(self, model: ModelInfo, spec: IndexSpec | None = None, **spec_fields: Any) -> None:
        self.model = model
        self.spec = spec if spec is not None else IndexSpec(**spec_fields)
        self.ids: list[str] = []
        self.sources: list[str] = []
        self.modalities: list[str] = []
        self._faiss_index = None
        self._vectors = torch.zeros(0, model.embed_dim)  # torch backend
        self.nlist_effective: int | None = None

    # --- introspection ----------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.model.embed_dim

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (f"Index({len(self)} rows, dim {self.dim}, {self.spec.backend}/{self.spec.kind}, "
                f"modalities {self.modality_counts()}, model {self.model.name!r})")

    def modality_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for m in self.modalities:
            counts[m] = counts.get(m, 0) + 1
        return counts

    def entry(self, row: int) -> dict[str, str]:
        return {"id": self.ids[row], "source": self.sources[row], "modality": self.modalities[row]}

    # --- building ---------------------------------------------------------------------------------------------------
    @classmethod
    def from_embeddings(cls, embeddings, spec: IndexSpec | None = None, **spec_fields: Any) -> Index:
        """A new index holding an :class:`bind.retrieval.embed.EmbeddingSet`."""
        index = cls(embeddings.model, spec, **spec_fields)
        index.add_embeddings(embeddings)
        return index

    def add_embeddings(self, embeddings) -> None:
        """Add an :class:`bind.retrieval.embed.EmbeddingSet` (its model must be this index's model)."""
        self.add(embeddings.embeddings, embeddings.ids, embeddings.sources, embeddings.modality, embeddings.model)

    def add(self, embeddings: torch.Tensor | np.ndarray, ids: Sequence[str], sources: Sequence[str] | None = None,
            modality: str | Sequence[str] = "unknown", model: ModelInfo | None = None) -> None:
        """Append rows. ``model`` (the producer of ``embeddings``) must match the index's model when given; the
        dimension must always match."""
        if model is not None:
            self.model.check_compatible(model)
        x = _as_float32(embeddings)
        if x.shape[1] != self.dim:
            raise ModelMismatchError(f"embeddings have dimension {x.shape[1]}, the index (model "
                                     f"{self.model.describe()}) holds dimension {self.dim}")
        n = x.shape[0]
        sources = [str(s) for s in sources] if sources is not None else [""] * n
        mods = [modality] * n if isinstance(modality, str) else [str(m) for m in modality]
        if not (len(ids) == len(sources) == len(mods) == n):
            raise ValueError(f"{n} embeddings but {len(ids)} ids, {len(sources)} sources, {len(mods)} modalities")
        if n == 0:
            return
        if self.spec.backend == "torch":
            self._vectors = torch.cat([self._vectors, torch.from_numpy(x)])
        else:
            if self._faiss_index is None:
                self._faiss_index = self._new_faiss_index(x)
            self._faiss_index.add(x)
        self.ids.extend(str(i) for i in ids)
        self.sources.extend(sources)
        self.modalities.extend(mods)

    def _new_faiss_index(self, first: np.ndarray):
        faiss, s = _faiss(), self.spec
        if s.kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        if s.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, s.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = s.ef_construction
            index.hnsw.efSearch = s.ef_search
            return index
        nlist = min(s.nlist, first.shape[0])
        if nlist < s.nlist:
            log.warning("IVF: only %d training vectors; nlist reduced from %d to %d", first.shape[0], s.nlist, nlist)
        self.nlist_effective = nlist
        index = faiss.index_factory(self.dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        sample = first
        if first.shape[0] > s.train_size:
            pick = np.random.default_rng(0).choice(first.shape[0], s.train_size, replace=False)
            sample = first[np.sort(pick)]
        index.train(sample)
        faiss.extract_index_ivf(index).nprobe = s.nprobe
        return index

    # --- search -----------------------------------------------------------------------------------------------------
    def search(self, queries: torch.Tensor | np.ndarray, k: int = 10, *, model: ModelInfo | None = None,
               nprobe: int | None = None, ef_search: int | None = None, with_hits: bool = True) -> SearchResult:
        """Top-``k`` rows by inner product for each query ``[Q, D]`` (or ``[D]``). ``model`` (the producer of the
        queries), when given, must be the index's model; ``nprobe``/``ef_search`` override the spec for this call."""
        if model is not None:
            self.model.check_compatible(model, what="queries")
        q = _as_float32(queries, "queries")
        if q.shape[1] != self.dim:
            raise ModelMismatchError(f"queries have dimension {q.shape[1]}, the index (model "
                                     f"{self.model.describe()}) holds dimension {self.dim}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if len(self) == 0:
            scores, rows = torch.full((q.shape[0], k), float("-inf")), torch.full((q.shape[0], k), -1)
        elif self.spec.backend == "torch":
            scores, rows = brute_force_topk(torch.from_numpy(q), self._vectors, k)
        else:
            self._set_search_params(nprobe, ef_search)
            with faiss_blas_search():
                d, i = self._faiss_index.search(q, k)
            scores, rows = torch.from_numpy(d), torch.from_numpy(i).long()
        result = SearchResult(scores, rows)
        if with_hits:
            result.hits = [[Hit(rank + 1, int(r), self.ids[r], self.sources[r], self.modalities[r], float(s))
                            for rank, (s, r) in enumerate(zip(srow.tolist(), rrow.tolist())) if r >= 0]
                           for srow, rrow in zip(scores, rows)]
        return result

    def _set_search_params(self, nprobe: int | None, ef_search: int | None) -> None:
        if self.spec.kind == "ivf":
            _faiss().extract_index_ivf(self._faiss_index).nprobe = nprobe or self.spec.nprobe
        elif self.spec.kind == "hnsw":
            self._faiss_index.hnsw.efSearch = ef_search or self.spec.ef_search

    def vectors(self) -> torch.Tensor:
        """The stored embeddings ``[N, D]`` (exact indexes only: torch backend or faiss flat)."""
        if self.spec.backend == "torch":
            return self._vectors.clone()
        if self.spec.kind != "flat":
            raise BindIndexError(f"a {self.spec.kind} index does not keep its vectors in an exportable form")
        if self._faiss_index is None:
            return torch.zeros(0, self.dim)
        return torch.from_numpy(self._faiss_index.reconstruct_n(0, len(self)))

    # --- persistence ------------------------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "model": self.model.to_dict(), "spec": self.spec.to_dict(),
                "dim": self.dim, "count": len(self), "modalities": self.modality_counts(),
                "nlist_effective": self.nlist_effective}

    def save(self, directory: str | Path) -> Path:
        """Write the index to ``directory`` atomically (see the module docstring)."""
        directory = Path(directory)
        if not directory.exists():
            with atomic_directory(directory) as tmp:
                self._write_into(tmp)
            return directory
        if not directory.is_dir():
            raise BindIndexError(f"{directory} exists and is not a directory")
        if not (directory / METADATA_NAME).is_file() and any(directory.iterdir()):
            raise BindIndexError(f"{directory} is a non-empty directory without {METADATA_NAME}: not a bind index, "
                              "refusing to write into it")
        self._write_into(directory)
        return directory

    def _write_into(self, directory: Path) -> None:
        token = uuid.uuid4().hex[:12]
        files = {"entries": f"entries-{token}.jsonl"}
        if self.spec.backend == "torch":
            files["vectors"] = f"vectors-{token}.safetensors"
            with atomic_path(directory / files["vectors"]) as tmp:
                safetensors.torch.save_file({"vectors": self._vectors.contiguous()}, str(tmp))
        else:
            files["index"] = f"index-{token}.faiss"
            index = self._faiss_index if self._faiss_index is not None else _faiss().IndexFlatIP(self.dim)
            with atomic_path(directory / files["index"]) as tmp:
                _faiss().write_index(index, str(tmp))
        with atomic_file(directory / files["entries"], "w", encoding="utf-8") as f:
            for i, s, m in zip(self.ids, self.sources, self.modalities):
                f.write(json.dumps({"id": i, "source": s, "modality": m}, ensure_ascii=False) + "\n")
        meta = {**self.metadata(), "files": files, "empty_faiss": self._faiss_index is None}
        write_text(directory / METADATA_NAME, json.dumps(meta, indent=2))  # the commit
        keep = set(files.values()) | {METADATA_NAME}
        for p in directory.iterdir():
            if p.name not in keep and (p.name.startswith(("entries-", "index-", "vectors-", f".{METADATA_NAME}.tmp"))):
                p.unlink(missing_ok=True)

    @classmethod
    def load(cls, directory: str | Path) -> Index:
        """Read an index directory written by :meth:`save`."""
        directory = Path(directory)
        meta_path = directory / METADATA_NAME
        if not meta_path.is_file():
            raise FileNotFoundError(f"{directory}: not a bind index (no {METADATA_NAME})")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise BindIndexError(f"{meta_path}: corrupt metadata ({e})") from None
        if meta.get("format") != FORMAT:
            raise BindIndexError(f"{meta_path}: not a bind index (format {meta.get('format')!r})")
        if meta.get("version", 0) > VERSION:
            raise BindIndexError(f"{meta_path}: index format version {meta['version']} is newer than this bind "
                              f"({VERSION}); upgrade bind")
        index = cls(ModelInfo.from_dict(meta["model"]), IndexSpec(**meta["spec"]))
        index.nlist_effective = meta.get("nlist_effective")
        files = meta["files"]
        for name in files.values():
            if not (directory / name).is_file():
                raise BindIndexError(f"{directory}: {name} listed in {METADATA_NAME} is missing")
        if index.spec.backend == "torch":
            index._vectors = safetensors.torch.load_file(str(directory / files["vectors"]))["vectors"]
        elif not meta.get("empty_faiss"):
            index._faiss_index = _faiss().read_index(str(directory / files["index"]))
        with open(directory / files["entries"], encoding="utf-8") as f:
            for line in f:
                e = json.loads(line)
                index.ids.append(e["id"])
                index.sources.append(e["source"])
                index.modalities.append(e["modality"])
        stored = len(index._vectors) if index.spec.backend == "torch" else (
            index._faiss_index.ntotal if index._faiss_index is not None else 0)
        if not (stored == len(index.ids) == meta["count"]):
            raise BindIndexError(f"{directory}: {stored} vectors but {len(index.ids)} entries "
                              f"(metadata says {meta['count']}): the index is corrupt")
        return index


def brute_force_topk(queries: torch.Tensor, vectors: torch.Tensor, k: int,
                     chunk: int = 262_144) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` inner products of ``queries [Q, D]`` against ``vectors [N, D]``, chunked over N.

    Returns ``(scores, rows)`` ``[Q, k]``; rows are -1 (scores -inf) past N."""
    q = queries.to(vectors.dtype)
    best_s = torch.full((q.shape[0], 0), float("-inf"), dtype=q.dtype)
    best_i = torch.zeros((q.shape[0], 0), dtype=torch.long)
    for start in range(0, vectors.shape[0], chunk):
        s = q @ vectors[start:start + chunk].T
        top_s, top_i = s.topk(min(k, s.shape[1]), dim=1)
        best_s, order = torch.cat([best_s, top_s], 1).topk(min(k, best_s.shape[1] + top_s.shape[1]), dim=1)
        best_i = torch.cat([best_i, top_i + start], 1).gather(1, order)
    if best_s.shape[1] < k:
        pad = k - best_s.shape[1]
        best_s = torch.cat([best_s, torch.full((q.shape[0], pad), float("-inf"), dtype=q.dtype)], 1)
        best_i = torch.cat([best_i, torch.full((q.shape[0], pad), -1, dtype=torch.long)], 1)
    return best_s, best_i
