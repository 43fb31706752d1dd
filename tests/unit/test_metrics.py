"""Retrieval and zero-shot metrics against hand-computed cases, torchmetrics, and the template ensembling rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bind.retrieval.metrics import (
    average_precision,
    classification_metrics,
    retrieval_metrics,
    retrieval_metrics_from_embeddings,
    retrieval_ranks,
)
from bind.retrieval.zeroshot import build_classifier, evaluate_zeroshot, fill_template


def _mask(shape: tuple[int, int], positives: dict[int, list[int]]) -> torch.Tensor:
    m = torch.zeros(shape, dtype=torch.bool)
    for q, gs in positives.items():
        m[q, gs] = True
    return m


def test_single_positive_hand_computed():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.5, 0.3],  # positive g0 -> rank 1
            [0.8, 0.2, 0.6, 0.4],  # positive g2 -> rank 2 (g0 above)
            [0.7, 0.1, 0.9, 0.8],
        ]
    )  # positive g1 -> rank 4
    pos = _mask((3, 4), {0: [0], 1: [2], 2: [1]})
    assert retrieval_ranks(scores, pos).tolist() == [1, 2, 4]
    assert average_precision(scores, pos).tolist() == pytest.approx([1.0, 0.5, 0.25])
    m = retrieval_metrics(scores, pos, ks=(1, 2, 5))
    assert m["recall@1"] == pytest.approx(1 / 3)
    assert m["recall@2"] == pytest.approx(2 / 3)
    assert m["recall@5"] == pytest.approx(1.0)
    assert m["median_rank"] == 2.0
    assert m["mean_rank"] == pytest.approx(7 / 3)
    assert m["mAP"] == pytest.approx((1 + 0.5 + 0.25) / 3)
    assert m["num_queries"] == 3


def test_several_positives_hand_computed():
    scores = torch.tensor(
        [
            [0.9, 0.8, 0.7, 0.6, 0.5],  # positives g1 (rank 2), g3 (rank 4)
            [0.1, 0.2, 0.3, 0.4, 0.5],
        ]
    )  # positives g4 (rank 1), g0 (rank 5)
    pos = _mask((2, 5), {0: [1, 3], 1: [4, 0]})
    assert retrieval_ranks(scores, pos).tolist() == [2, 1]
    assert average_precision(scores, pos).tolist() == pytest.approx([(1 / 2 + 2 / 4) / 2, (1 / 1 + 2 / 5) / 2])
    m = retrieval_metrics(scores, pos, ks=(1,))
    assert m["recall@1"] == 0.5 and m["median_rank"] == 1.5


def test_ties_are_pessimistic():
    flat = torch.full((1, 3), 0.5)
    assert retrieval_ranks(flat, _mask((1, 3), {0: [1]})).item() == 3
    assert average_precision(flat, _mask((1, 3), {0: [1]})).item() == pytest.approx(1 / 3)
    two = _mask((1, 3), {0: [0, 2]})  # the negative g1 goes first, positives at ranks 2 and 3
    assert retrieval_ranks(flat, two).item() == 2
    assert average_precision(flat, two).item() == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_query_without_positive_is_an_error():
    with pytest.raises(ValueError, match="no positive"):
        retrieval_ranks(torch.rand(2, 3), _mask((2, 3), {0: [1]}))


def test_matches_torchmetrics_on_random_data():
    from torchmetrics.functional.retrieval import retrieval_average_precision, retrieval_hit_rate

    g = torch.Generator().manual_seed(0)
    scores = torch.rand(40, 30, generator=g)
    pos = torch.rand(40, 30, generator=g) < 0.15
    pos[torch.arange(40), torch.randint(0, 30, (40,), generator=g)] = True
    m = retrieval_metrics(scores, pos, ks=(1, 5, 10))
    ap = torch.stack([retrieval_average_precision(s, p) for s, p in zip(scores, pos)])
    assert m["mAP"] == pytest.approx(float(ap.mean()), abs=1e-6)
    for k in (1, 5, 10):
        hit = torch.stack([retrieval_hit_rate(s, p, top_k=k) for s, p in zip(scores, pos)])
        assert m[f"recall@{k}"] == pytest.approx(float(hit.mean()))


def test_chunked_from_embeddings_equals_full_matrix():
    g = torch.Generator().manual_seed(1)
    gallery = F.normalize(torch.randn(9, 16, generator=g), dim=1)
    gallery_groups = torch.arange(9)
    query_groups = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 7, 8, 8])  # several captions per item
    queries = F.normalize(gallery[query_groups] + 0.8 * torch.randn(13, 16, generator=g), dim=1)
    chunked = retrieval_metrics_from_embeddings(queries, gallery, query_groups, gallery_groups, chunk=4)
    full = retrieval_metrics(queries @ gallery.T, query_groups[:, None] == gallery_groups[None])
    assert chunked["gallery_size"] == 9
    for key, value in full.items():
        assert chunked[key] == pytest.approx(value)


def test_classification_hand_computed():
    logits = torch.tensor(
        [
            [0.9, 0.1, 0.0],  # label 0: correct
            [0.2, 0.3, 0.1],  # label 0: second
            [0.1, 0.2, 0.7],  # label 2: correct
            [0.5, 0.4, 0.6],  # label 1: third
            [0.9, 0.0, 0.0],
        ]
    )  # label 0: correct
    labels = torch.tensor([0, 0, 2, 1, 0])
    m = classification_metrics(logits, labels, ks=(1, 2, 5))
    assert m["acc1"] == pytest.approx(3 / 5)
    assert m["acc2"] == pytest.approx(4 / 5)
    assert m["acc5"] == pytest.approx(1.0)  # k capped at the 3 classes
    assert m["mean_per_class_recall"] == pytest.approx((2 / 3 + 0 + 1) / 3)


class _TableModel:
    """Stands in for a BindModel: fixed random vectors per prompt."""

    embed_dim = 8

    def __init__(self) -> None:
        self.table: dict[str, torch.Tensor] = {}
        self.gen = torch.Generator().manual_seed(3)

    def embed_sources(self, modality: str, texts: list[str], batch_size: int = 128) -> torch.Tensor:
        assert modality == "text" and batch_size == 3
        for t in texts:
            self.table.setdefault(t, F.normalize(torch.randn(self.embed_dim, generator=self.gen), dim=0))
        return torch.stack([self.table[t] for t in texts])


def test_template_ensembling_and_zero_shot():
    model = _TableModel()
    templates = ["a photo of a {c}.", "a {} in the wild"]
    clf = build_classifier(model, ["cat", "dog"], templates, batch_size=3)
    for i, c in enumerate(["cat", "dog"]):
        expected = F.normalize(torch.stack([model.table[fill_template(t, c)] for t in templates]).mean(0), dim=0)
        torch.testing.assert_close(clf.weights[i], expected)
    assert "a cat in the wild" in model.table and "a photo of a dog." in model.table
    inputs = torch.stack([clf.weights[1], clf.weights[0], clf.weights[1]])
    assert clf.predict(inputs) == ["dog", "cat", "dog"]
    m = evaluate_zeroshot(clf, inputs, ["dog", "cat", "cat"])
    assert m["acc1"] == pytest.approx(2 / 3) and m["mean_per_class_recall"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="not among"):
        evaluate_zeroshot(clf, inputs, ["dog", "cat", "bird"])
