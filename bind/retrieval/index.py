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

Writers serialise through an advisory lock (:func:`index_writer`, the ``filelock`` package) on ``.NAME.lock``
beside the directory, held for a whole read-modify-write (``bindspace index add`` loads, adds and saves under
it), so two writers never lose each other's rows; a waiting writer says so once, or fails fast with
``wait=False``. Only the lock holder deletes data files, and only those the committed ``metadata.json`` does not
name; temporaries of dead writers (``.NAME.tmp-PID-*``, see :mod:`bind.io`) are removed under the lock.

:meth:`Index.load` is the one reader: it validates everything before use (JSON types, known keys, file names that
stay inside the directory — no paths, no ``..``, no symlinks —, the faiss header against the metadata, safetensors
header, entries, counts, per-file blake2b checksums) and raises :class:`BindIndexError` naming the file and what
is wrong; it never follows a name out of the directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import re
import struct
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from bind.errors import BindError
from bind.io import atomic_directory, atomic_file, atomic_path, remove_stale_temporaries, write_text
from bind.retrieval.model_info import ModelInfo, ModelMismatchError

log = logging.getLogger(__name__)
logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines about CPU features are noise here

METADATA_NAME = "metadata.json"
FORMAT, VERSION = "bind-index", 1
KINDS, BACKENDS = ("flat", "ivf", "hnsw"), ("faiss", "torch")


class BindIndexError(BindError):
    """An index directory is missing, corrupt, or asked for something it cannot do."""


class IndexNotFoundError(BindIndexError, FileNotFoundError):
    """The path is not an index directory (no ``metadata.json``)."""


class IndexBusyError(BindIndexError):
    """Another process holds the index's writer lock and the caller asked not to wait."""


#: data file names an index may list: plain names of its own making, so nothing can point outside the directory
FILE_PATTERNS = {
    "entries": re.compile(r"entries-[0-9a-f]{1,64}\.jsonl"),
    "index": re.compile(r"index-[0-9a-f]{1,64}\.faiss"),
    "vectors": re.compile(r"vectors-[0-9a-f]{1,64}\.safetensors"),
}
META_KEYS = {
    "format",
    "version",
    "model",
    "spec",
    "dim",
    "count",
    "modalities",
    "nlist_effective",
    "files",
    "empty_faiss",
    "checksums",
}
MAX_METADATA_BYTES = 16 << 20
MAX_DIM = 1 << 16
#: faiss type tag of each kind as written by ``faiss.write_index`` and the fixed header that follows it:
#: d (int32), ntotal (int64), 2 unused int64, is_trained (uint8), metric (int32)
FAISS_FOURCC = {"flat": b"IxFI", "hnsw": b"IHNf", "ivf": b"IwFl"}
_FAISS_HEADER = struct.Struct("<4siqqqBi")
_LOCKS: dict[str, Any] = {}


def lock_path(directory: str | Path) -> Path:
    """The writer lock file of an index directory: ``.NAME.lock`` beside it (it exists before the directory does)."""
    directory = Path(directory).absolute()
    return directory.with_name(f".{directory.name}.lock")


@contextlib.contextmanager
def index_writer(
    directory: str | Path, wait: bool = True, on_wait: Callable[[str], None] | None = None
) -> Iterator[Path]:
    """Hold the writer lock of ``directory`` for a whole read-modify-write (re-entrant within a process).

    A second writer waits (telling ``on_wait``, default a log warning, once) or, with ``wait=False``, raises
    :class:`IndexBusyError`. On entry, temporaries that dead writers left beside and inside the index are removed.
    """
    from filelock import FileLock, Timeout

    path = lock_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _LOCKS.setdefault(str(path), FileLock(str(path)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise IndexBusyError(
                f"{directory}: another process is writing this index (lock {path}); retry when it "
                "is done, or drop --no-wait to wait for it"
            ) from None
        (on_wait or log.warning)(f"waiting for another process writing {directory} (lock {path}) ...")
        lock.acquire()
    try:
        if lock.lock_counter == 1:
            name = Path(directory).absolute().name
            remove_stale_temporaries(path.parent, prefix=f".{name}.tmp-")
            remove_stale_temporaries(directory)
        yield Path(directory)
    finally:
        lock.release()


def file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class IndexSpec:
    """How an index searches. ``nlist``/``nprobe``/``train_size`` apply to ``ivf``; ``hnsw_m``/``ef_*`` to ``hnsw``."""

    kind: str = field(default="flat", metadata={"choices": KINDS, "help": "exact (flat), IVF or HNSW"})
    backend: str = field(default="faiss", metadata={"choices": BACKENDS, "help": "torch = exact brute force"})
    nlist: int = field(default=1024, metadata={"help": "IVF cells"})
    nprobe: int = field(default=16, metadata={"help": "IVF cells visited per query"})
    train_size: int = field(default=100_000, metadata={"help": "IVF k-means training sample"})
    hnsw_m: int = field(default=32, metadata={"help": "HNSW links per node"})
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
    cvar.distance_compute_blas_threshold, cvar.distance_compute_blas_database_bs = (
        BLAS_QUERY_THRESHOLD,
        BLAS_DATABASE_BLOCK,
    )
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
        return (
            f"Index({len(self)} rows, dim {self.dim}, {self.spec.backend}/{self.spec.kind}, "
            f"modalities {self.modality_counts()}, model {self.model.name!r})"
        )

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

    def add(
        self,
        embeddings: torch.Tensor | np.ndarray,
        ids: Sequence[str],
        sources: Sequence[str] | None = None,
        modality: str | Sequence[str] = "unknown",
        model: ModelInfo | None = None,
    ) -> None:
        """Append rows. ``model`` (the producer of ``embeddings``) must match the index's model when given; the
        dimension must always match."""
        if model is not None:
            self.model.check_compatible(model)
        x = _as_float32(embeddings)
        if x.shape[1] != self.dim:
            raise ModelMismatchError(
                f"embeddings have dimension {x.shape[1]}, the index (model "
                f"{self.model.describe()}) holds dimension {self.dim}"
            )
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
    def search(
        self,
        queries: torch.Tensor | np.ndarray,
        k: int = 10,
        *,
        model: ModelInfo | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        with_hits: bool = True,
    ) -> SearchResult:
        """Top-``k`` rows by inner product for each query ``[Q, D]`` (or ``[D]``). ``model`` (the producer of the
        queries), when given, must be the index's model; ``nprobe``/``ef_search`` override the spec for this call."""
        if model is not None:
            self.model.check_compatible(model, what="queries")
        q = _as_float32(queries, "queries")
        if q.shape[1] != self.dim:
            raise ModelMismatchError(
                f"queries have dimension {q.shape[1]}, the index (model "
                f"{self.model.describe()}) holds dimension {self.dim}"
            )
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
            result.hits = [
                [
                    Hit(rank + 1, int(r), self.ids[r], self.sources[r], self.modalities[r], float(s))
                    for rank, (s, r) in enumerate(zip(srow.tolist(), rrow.tolist()))
                    if r >= 0
                ]
                for srow, rrow in zip(scores, rows)
            ]
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
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model.to_dict(),
            "spec": self.spec.to_dict(),
            "dim": self.dim,
            "count": len(self),
            "modalities": self.modality_counts(),
            "nlist_effective": self.nlist_effective,
        }

    def save(self, directory: str | Path, wait: bool = True) -> Path:
        """Write the index to ``directory`` atomically under its writer lock (see the module docstring)."""
        with index_writer(directory, wait=wait):
            return self._save(Path(directory))

    def _save(self, directory: Path) -> Path:
        if not directory.exists():
            with atomic_directory(directory) as tmp:
                self._write_into(tmp)
            return directory
        if not directory.is_dir():
            raise BindIndexError(f"{directory} exists and is not a directory")
        if not (directory / METADATA_NAME).is_file() and any(directory.iterdir()):
            raise BindIndexError(
                f"{directory} is a non-empty directory without {METADATA_NAME}: not a bind index, "
                "refusing to write into it"
            )
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
        meta = {
            **self.metadata(),
            "files": files,
            "empty_faiss": self._faiss_index is None,
            "checksums": {name: file_digest(directory / name) for name in files.values()},
        }
        write_text(directory / METADATA_NAME, json.dumps(meta, indent=2))  # the commit
        keep = set(files.values())  # under the writer lock: what the committed metadata names stays
        for p in directory.iterdir():
            if p.name not in keep and any(pat.fullmatch(p.name) for pat in FILE_PATTERNS.values()):
                p.unlink(missing_ok=True)

    @classmethod
    def load(cls, directory: str | Path) -> Index:
        """Read an index directory written by :meth:`save`, validating every file first (see the module docstring).

        Raises :class:`BindIndexError` (:class:`IndexNotFoundError` when there is no index) naming the file and
        what is wrong; never reads a file outside ``directory``. A save committed by another process while this one
        reads is retried."""
        directory = Path(directory)
        for attempt in range(5):
            meta = _read_metadata(directory)
            try:
                return _load_validated(directory, meta)
            except BindIndexError:
                # a writer committed a new version (and removed the files read so far) meanwhile: read that one
                if attempt == 4 or _read_metadata(directory) == meta:
                    raise
        raise AssertionError("unreachable")


def _fail(path: Path, what: str) -> BindIndexError:
    return BindIndexError(f"{path}: {what}")


def _need(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise _fail(path, what)


def _is_int(x: Any, lo: int = 0, hi: int = 1 << 62) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi


def _read_metadata(directory: Path) -> dict[str, Any]:
    meta_path = directory / METADATA_NAME
    if not directory.is_dir():
        raise IndexNotFoundError(
            f"{directory}: no such index directory"
            if not directory.exists()
            else f"{directory}: not a directory (an index is a directory holding {METADATA_NAME})"
        )
    if meta_path.is_symlink():
        raise _fail(meta_path, "is a symlink; an index may only hold its own files")
    if not meta_path.is_file():
        raise IndexNotFoundError(
            f"{directory}: not a bind index (no {METADATA_NAME}); build one with `bindspace index build`"
        )
    try:
        if meta_path.stat().st_size > MAX_METADATA_BYTES:
            raise _fail(meta_path, f"larger than {MAX_METADATA_BYTES >> 20} MiB: not index metadata")
        meta = json.loads(meta_path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise _fail(meta_path, f"corrupt metadata, not valid UTF-8 JSON ({str(e).splitlines()[0]})") from None
    except OSError as e:
        raise _fail(meta_path, f"cannot read ({e.strerror or e})") from None
    _need(isinstance(meta, dict), meta_path, f"expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise _fail(meta_path, f"not a bind index (format {str(meta.get('format'))[:40]!r}, expected {FORMAT!r})")
    _need(
        _is_int(meta.get("version"), 1),
        meta_path,
        f"'version' must be a positive integer, got {str(meta.get('version'))[:40]!r}",
    )
    if meta["version"] > VERSION:
        raise _fail(
            meta_path, f"index format version {meta['version']} is newer than this bind ({VERSION}); upgrade bind"
        )
    unknown = sorted(set(meta) - META_KEYS)
    _need(not unknown, meta_path, f"unknown keys {unknown[:5]}; known: {sorted(META_KEYS)}")
    missing = sorted({"model", "spec", "dim", "count", "files"} - set(meta))
    _need(not missing, meta_path, f"missing keys {missing}")
    # model identity
    m = meta["model"]
    _need(isinstance(m, dict), meta_path, f"'model' must be an object, got {type(m).__name__}")
    want = {"name", "path", "fingerprint", "embed_dim"}
    _need(set(m) == want, meta_path, f"'model' must have exactly the keys {sorted(want)}, got {sorted(m)[:8]}")
    for k in ("name", "path", "fingerprint"):
        _need(isinstance(m[k], str), meta_path, f"'model.{k}' must be a string, got {type(m[k]).__name__}")
    _need(
        _is_int(m["embed_dim"], 1, MAX_DIM),
        meta_path,
        f"'model.embed_dim' must be an integer in 1..{MAX_DIM}, got {str(m['embed_dim'])[:40]!r}",
    )
    _need(
        meta["dim"] == m["embed_dim"] and _is_int(meta["dim"]),
        meta_path,
        f"'dim' {str(meta['dim'])[:40]!r} disagrees with model.embed_dim {m['embed_dim']}",
    )
    # spec
    spec = meta["spec"]
    _need(isinstance(spec, dict), meta_path, f"'spec' must be an object, got {type(spec).__name__}")
    fields = {f.name: f.type for f in dataclasses.fields(IndexSpec)}
    unknown = sorted(set(spec) - set(fields))
    _need(not unknown, meta_path, f"unknown 'spec' keys {unknown[:5]}; known: {sorted(fields)}")
    for k, v in spec.items():
        ok = isinstance(v, str) if k in ("kind", "backend") else _is_int(v, 1, 1 << 40)
        _need(
            ok,
            meta_path,
            f"'spec.{k}' must be a {'string' if k in ('kind', 'backend') else 'positive integer'}, got {str(v)[:40]!r}",
        )
    try:
        IndexSpec(**spec)
    except ValueError as e:
        raise _fail(meta_path, f"'spec': {e}") from None
    # counts
    _need(
        _is_int(meta["count"], 0, 1 << 40),
        meta_path,
        f"'count' must be a non-negative integer, got {str(meta['count'])[:40]!r}",
    )
    mods = meta.get("modalities", {})
    _need(
        isinstance(mods, dict) and all(isinstance(k, str) and _is_int(v) for k, v in mods.items()),
        meta_path,
        "'modalities' must be an object of modality -> row count",
    )
    _need(
        sum(mods.values()) == meta["count"] or "modalities" not in meta,
        meta_path,
        f"'modalities' counts sum to {sum(mods.values())} but 'count' is {meta['count']}",
    )
    ne = meta.get("nlist_effective")
    _need(ne is None or _is_int(ne, 1, 1 << 40), meta_path, "'nlist_effective' must be null or a positive integer")
    _need(isinstance(meta.get("empty_faiss", False), bool), meta_path, "'empty_faiss' must be true or false")
    # files: plain names of our own pattern, so nothing can point outside the directory
    files = meta["files"]
    _need(isinstance(files, dict), meta_path, f"'files' must be an object, got {type(files).__name__}")
    need = {"entries", "vectors" if spec.get("backend", "faiss") == "torch" else "index"}
    _need(set(files) == need, meta_path, f"'files' must name exactly {sorted(need)}, got {sorted(files)[:5]}")
    for k, name in files.items():
        _need(
            isinstance(name, str) and FILE_PATTERNS[k].fullmatch(name) is not None,
            meta_path,
            f"'files.{k}' {str(name)[:80]!r} is not a file name of this index ({FILE_PATTERNS[k].pattern}); an "
            "index may only name files inside itself",
        )
    sums = meta.get("checksums")
    if sums is not None:
        _need(
            isinstance(sums, dict)
            and set(sums) == set(files.values())
            and all(isinstance(v, str) for v in sums.values()),
            meta_path,
            "'checksums' must map each listed file to its blake2b digest",
        )
    return meta


def _data_file(directory: Path, meta: dict[str, Any], key: str) -> Path:
    path = directory / meta["files"][key]
    if path.is_symlink():
        raise _fail(path, "is a symlink; an index may only hold its own files")
    if not path.exists():
        raise _fail(path, f"missing (listed in {METADATA_NAME}); the index is incomplete: rebuild it")
    if not path.is_file():
        raise _fail(path, "not a regular file")
    sums = meta.get("checksums")
    if sums is not None and file_digest(path) != sums[path.name]:
        raise _fail(
            path, "checksum mismatch: the file was modified or corrupted after the index was saved; rebuild the index"
        )
    return path


def _load_validated(directory: Path, meta: dict[str, Any]) -> Index:
    try:
        return _load_files(directory, meta)
    except OSError as e:  # e.g. a data file removed by a writer's commit between two reads (Index.load retries)
        raise _fail(Path(e.filename) if e.filename else directory, f"cannot read ({e.strerror or e})") from None


def _load_files(directory: Path, meta: dict[str, Any]) -> Index:
    spec = IndexSpec(**meta["spec"])
    index = Index(ModelInfo.from_dict(meta["model"]), spec)
    index.nlist_effective = meta.get("nlist_effective")
    count, dim = meta["count"], meta["dim"]
    if spec.backend == "torch":
        index._vectors = _read_vectors(_data_file(directory, meta, "vectors"), count, dim)
    else:
        path = _data_file(directory, meta, "index")
        if meta.get("empty_faiss", False):
            _need(count == 0, path, f"metadata says the faiss index is empty but 'count' is {count}")
        else:
            index._faiss_index = _read_faiss(path, spec.kind, count, dim)
    _read_entries(_data_file(directory, meta, "entries"), index, count)
    counts = index.modality_counts()
    if "modalities" in meta and counts != meta["modalities"]:
        raise _fail(
            directory / METADATA_NAME,
            f"'modalities' {meta['modalities']} disagrees with the entries ({counts}): the index is corrupt",
        )
    return index


def _read_vectors(path: Path, count: int, dim: int) -> torch.Tensor:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            _need(keys == ["vectors"], path, f"expected one tensor 'vectors', got {keys[:5]}")
            sl = f.get_slice("vectors")
            shape, dtype = list(sl.get_shape()), sl.get_dtype()
            _need(
                shape == [count, dim] and dtype == "F32",
                path,
                f"'vectors' is {dtype} {shape}, metadata says F32 [{count}, {dim}]",
            )
            v = f.get_tensor("vectors")
    except BindIndexError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for every malformed file
        raise _fail(path, f"not a valid safetensors file ({type(e).__name__}: {str(e)[:200]})") from None
    _need(bool(torch.isfinite(v).all()), path, "vectors contain NaN or infinite values")
    return v


def _read_faiss(path: Path, kind: str, count: int, dim: int):
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(_FAISS_HEADER.size + 8)
    _need(len(head) >= _FAISS_HEADER.size, path, f"truncated faiss file ({size} bytes)")
    fourcc, d, ntotal, _, _, _, metric = _FAISS_HEADER.unpack_from(head)
    _need(
        fourcc == FAISS_FOURCC[kind],
        path,
        f"not a faiss {kind} index (type tag {fourcc!r}, expected {FAISS_FOURCC[kind]!r})",
    )
    _need(
        d == dim and ntotal == count,
        path,
        f"faiss header says {ntotal} vectors of dimension {d}, metadata says {count} of dimension {dim}",
    )
    _need(metric == _faiss().METRIC_INNER_PRODUCT, path, f"faiss metric {metric} is not inner product")
    data = count * dim * 4
    if kind == "flat":
        (stored,) = struct.unpack_from("<Q", head, _FAISS_HEADER.size) if len(head) == _FAISS_HEADER.size + 8 else (-1,)
        _need(
            stored == count * dim and size == _FAISS_HEADER.size + 8 + data,
            path,
            f"{size} bytes; a flat index of {count} x {dim} is {_FAISS_HEADER.size + 8 + data} bytes (truncated or "
            "corrupt)",
        )
    else:
        _need(size >= _FAISS_HEADER.size + data, path, f"truncated faiss file ({size} bytes for {count} x {dim})")
    try:
        index = _faiss().read_index(str(path))
    except (Exception, MemoryError) as e:  # noqa: BLE001 - faiss reports every malformed file as RuntimeError
        raise _fail(path, f"corrupt faiss index ({type(e).__name__}: {str(e).strip().splitlines()[0][:200]})") from None
    _need(
        index.ntotal == count and index.d == dim,
        path,
        f"faiss index holds {index.ntotal} x {index.d}, metadata says {count} x {dim}",
    )
    if kind == "flat":
        for start in range(0, count, 65536):
            n = min(65536, count - start)
            _need(
                bool(np.isfinite(index.reconstruct_n(start, n)).all()), path, "vectors contain NaN or infinite values"
            )
    return index


def _read_entries(path: Path, index: Index, count: int) -> None:
    try:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                _need(n <= count, path, f"more than the {count} entries the metadata lists: the index is corrupt")
                try:
                    e = json.loads(raw.decode("utf-8"))
                except (ValueError, UnicodeDecodeError, RecursionError):
                    raise _fail(path, f"line {n}: not valid UTF-8 JSON") from None
                _need(
                    isinstance(e, dict)
                    and set(e) == {"id", "source", "modality"}
                    and all(isinstance(v, str) for v in e.values()),
                    path,
                    f"line {n}: expected an object with string 'id', 'source', 'modality'",
                )
                index.ids.append(e["id"])
                index.sources.append(e["source"])
                index.modalities.append(e["modality"])
    except OSError as e:
        raise _fail(path, f"cannot read ({e.strerror or e})") from None
    stored = (
        len(index._vectors)
        if index.spec.backend == "torch"
        else (index._faiss_index.ntotal if index._faiss_index is not None else 0)
    )
    _need(
        stored == len(index.ids) == count,
        path,
        f"{len(index.ids)} entries but {stored} vectors (metadata says {count}): the index is corrupt",
    )


def brute_force_topk(
    queries: torch.Tensor, vectors: torch.Tensor, k: int, chunk: int = 262_144
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` inner products of ``queries [Q, D]`` against ``vectors [N, D]``, chunked over N.

    Returns ``(scores, rows)`` ``[Q, k]``; rows are -1 (scores -inf) past N."""
    q = queries.to(vectors.dtype)
    best_s = torch.full((q.shape[0], 0), float("-inf"), dtype=q.dtype)
    best_i = torch.zeros((q.shape[0], 0), dtype=torch.long)
    for start in range(0, vectors.shape[0], chunk):
        s = q @ vectors[start : start + chunk].T
        top_s, top_i = s.topk(min(k, s.shape[1]), dim=1)
        best_s, order = torch.cat([best_s, top_s], 1).topk(min(k, best_s.shape[1] + top_s.shape[1]), dim=1)
        best_i = torch.cat([best_i, top_i + start], 1).gather(1, order)
    if best_s.shape[1] < k:
        pad = k - best_s.shape[1]
        best_s = torch.cat([best_s, torch.full((q.shape[0], pad), float("-inf"), dtype=q.dtype)], 1)
        best_i = torch.cat([best_i, torch.full((q.shape[0], pad), -1, dtype=torch.long)], 1)
    return best_s, best_i
