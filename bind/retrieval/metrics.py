"""Retrieval and zero-shot classification metrics, vectorised in torch.

Retrieval (as in CLIP_benchmark and the ImageBind / LanguageBind papers): for each query, the *rank* is the
1-based position of its best-placed positive in the gallery sorted by similarity; ``recall@k`` is the fraction of
queries with rank <= k, ``median_rank`` the median of the ranks (the mean of the two middle ones for an even count,
as ``numpy.median``), ``mAP`` the mean over queries of the average precision over *all* positives (a query may
have several: an image with five captions). Ties are broken pessimistically: a negative that scores exactly as a
positive is ranked above it, so a degenerate model whose embeddings are all equal gets recall@1 = 0, not 1.

Zero-shot classification (CLIP, Radford et al. 2021): ``acc1``/``acc5`` top-k accuracy and
``mean_per_class_recall`` (balanced accuracy over the classes present), the names CLIP_benchmark reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _check(scores: torch.Tensor, positives: torch.Tensor) -> None:
    if scores.shape != positives.shape or scores.dim() != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and positives {tuple(positives.shape)} must be equal [Q, G]")
    no_pos = ~positives.any(1)
    if no_pos.any():
        raise ValueError(
            f"{int(no_pos.sum())} queries have no positive in the gallery (first: query {int(no_pos.nonzero()[0])})"
        )


def retrieval_ranks(scores: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """1-based rank ``[Q]`` of each query's best-placed positive (pessimistic ties)."""
    _check(scores, positives)
    best_pos = scores.masked_fill(~positives, float("-inf")).amax(1, keepdim=True)
    return 1 + ((scores >= best_pos) & ~positives).sum(1)


def average_precision(scores: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Average precision ``[Q]`` over every positive of each query (pessimistic ties)."""
    _check(scores, positives)
    pos = positives.float()
    by_label = torch.argsort(pos, dim=1, stable=True)  # negatives first, so that a stable sort by score ...
    by_score = torch.argsort(-scores.gather(1, by_label), dim=1, stable=True)  # ... ranks them above tied positives
    ordered = pos.gather(1, by_label.gather(1, by_score))
    precision = ordered.cumsum(1) / torch.arange(1, ordered.shape[1] + 1, dtype=pos.dtype)
    return (precision * ordered).sum(1) / ordered.sum(1)


def median(values: torch.Tensor) -> float:
    """``numpy.median`` semantics (mean of the two middle values for an even count)."""
    return float(torch.quantile(values.double(), 0.5))


def retrieval_metrics(scores: torch.Tensor, positives: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """``recall@k`` for each k, ``median_rank``, ``mean_rank`` and ``mAP`` of a ``[Q, G]`` similarity matrix with a
    boolean ``[Q, G]`` positive mask."""
    ranks = retrieval_ranks(scores, positives)
    return summarize(ranks, average_precision(scores, positives), ks)


def summarize(ranks: torch.Tensor, ap: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict:
    out = {f"recall@{k}": float((ranks <= k).double().mean()) for k in ks}
    out.update(
        median_rank=median(ranks),
        mean_rank=float(ranks.double().mean()),
        mAP=float(ap.double().mean()),
        num_queries=int(ranks.numel()),
    )
    return out


def retrieval_metrics_from_embeddings(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    query_groups: torch.Tensor,
    gallery_groups: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 2048,
) -> dict:
    """Retrieval metrics of ``queries [Q, D]`` against ``gallery [G, D]`` by inner product; query ``i`` and gallery
    item ``j`` match when ``query_groups[i] == gallery_groups[j]`` (e.g. both belong to the same manifest item).
    Computed in chunks of queries, so ``[Q, G]`` is never held whole."""
    ranks, aps = [], []
    for start in range(0, queries.shape[0], chunk):
        s = queries[start : start + chunk].float() @ gallery.float().T
        pos = query_groups[start : start + chunk, None] == gallery_groups[None, :]
        ranks.append(retrieval_ranks(s, pos))
        aps.append(average_precision(s, pos))
    out = summarize(torch.cat(ranks), torch.cat(aps), ks)
    out["gallery_size"] = int(gallery.shape[0])
    return out


# --- zero-shot classification ----------------------------------------------------------------------------------------
def correct_at_k(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean ``[N]``: the true class is among the top ``k`` (pessimistic ties)."""
    true = logits.gather(1, labels[:, None])
    above = (logits >= true).sum(1) - 1  # other classes scoring at least as high as the true one
    return above < k


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict:
    """``acc{k}`` (top-k accuracy, k capped at the class count) and ``mean_per_class_recall`` (the mean over
    classes present in ``labels`` of the fraction of their samples classified correctly at top-1)."""
    if logits.dim() != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"logits [N, C] and labels [N] expected, got {tuple(logits.shape)} and {tuple(labels.shape)}")
    labels = labels.long()
    out = {f"acc{k}": float(correct_at_k(logits, labels, min(k, logits.shape[1])).double().mean()) for k in ks}
    top1 = correct_at_k(logits, labels, 1).double()
    classes = labels.unique()
    per_class = torch.stack([top1[labels == c].mean() for c in classes])
    out["mean_per_class_recall"] = float(per_class.mean())
    return out
