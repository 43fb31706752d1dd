"""Any-pair retrieval: batched embedding, FAISS / torch indexes, search with embedding arithmetic, evaluation.

>>> from bind.retrieval import Index, search
>>> index = Index.load("idx/")                       # built by `bindspace index build`
>>> hits = search(model, index, [("text", "a dog barking"), ("image", "beach.png")], k=5)
>>> index.search(query_embeddings, k=10).rows         # raw [Q, k] rows and scores

Modules: :mod:`~bind.retrieval.embed` (DataLoader / Lightning embedding), :mod:`~bind.retrieval.index`,
:mod:`~bind.retrieval.query`, :mod:`~bind.retrieval.metrics`, :mod:`~bind.retrieval.zeroshot`,
:mod:`~bind.retrieval.evaluate`, :mod:`~bind.retrieval.plots`, :mod:`~bind.data.manifest`.
"""

from bind.data.manifest import ManifestRecord, manifest_items, read_manifest
from bind.retrieval.embed import EmbeddingSet, embed_items
from bind.retrieval.index import BindIndexError, Hit, Index, IndexSpec, SearchResult, brute_force_topk
from bind.retrieval.metrics import classification_metrics, retrieval_metrics
from bind.retrieval.model_info import ModelInfo, ModelMismatchError, model_fingerprint
from bind.retrieval.query import embed_query, load_index_model, search
from bind.retrieval.zeroshot import ZeroShotClassifier, build_classifier

__all__ = [
    "BindIndexError",
    "EmbeddingSet",
    "Hit",
    "Index",
    "IndexSpec",
    "ManifestRecord",
    "ModelInfo",
    "ModelMismatchError",
    "SearchResult",
    "ZeroShotClassifier",
    "brute_force_topk",
    "build_classifier",
    "classification_metrics",
    "embed_items",
    "embed_query",
    "load_index_model",
    "manifest_items",
    "model_fingerprint",
    "read_manifest",
    "retrieval_metrics",
    "search",
]
