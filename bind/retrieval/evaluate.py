"""Evaluation runners over a manifest: any-pair retrieval and zero-shot classification.

* Any-pair retrieval (ImageBind's "emergent" cross-modal retrieval, Girdhar et al. 2023, Tables 2-4): for each
  ordered pair (query modality A, gallery modality B), items holding both are embedded once per modality; a query
  matches the gallery entries of its own manifest item. Text items may carry several captions (each caption is a
  query, all captions of an item are its positives as a gallery) and modality-specific captions
  (``captions: {"audio": ...}`` is used for text <-> audio instead of ``text``).
  A pair no manifest item holds both sides of (after skipping undecodable sources) is reported in
  ``skipped_pairs`` with the reason; the other pairs are still evaluated and written.
* Zero-shot classification: items with a ``label``, class names (given, or the sorted labels of the manifest) and
  prompt templates ensembled per class (:mod:`bind.retrieval.zeroshot`). With fewer than two class names accuracy
  is 1.000 by construction: the result is flagged ``status: "n/a ..."`` with null metrics, never a perfect score.

Results follow CLIP_benchmark's JSON layout: ``{"dataset", "model", "pretrained", "task", "metrics",
"language"}`` with flat metric names (``text_to_image_recall@1``, ...; for text/image also CLIP_benchmark's own
``image_retrieval_recall@k`` = text -> image and ``text_retrieval_recall@k`` = image -> text, image being the
modality of the plugin whose ``tower`` is ``"vision"``).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bind.data.manifest import ManifestRecord, manifest_items
from bind.io import write_text
from bind.registry import find_modality
from bind.retrieval.embed import embed_items
from bind.retrieval.metrics import retrieval_metrics_from_embeddings
from bind.retrieval.model_info import ModelInfo
from bind.retrieval.zeroshot import build_classifier, evaluate_zeroshot, templates_for

RETRIEVAL_KS = (1, 5, 10)
log = logging.getLogger(__name__)


@dataclass
class GroupedEmbeddings:
    """Embeddings ``[N, D]`` of one modality with the manifest record index (``groups``) and id of every row."""

    embeddings: torch.Tensor
    groups: torch.Tensor
    ids: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)

    def restrict(self, keep_groups: set[int]) -> GroupedEmbeddings:
        mask = torch.tensor([int(g) in keep_groups for g in self.groups.tolist()], dtype=torch.bool)
        return GroupedEmbeddings(
            self.embeddings[mask], self.groups[mask], [i for i, m in zip(self.ids, mask.tolist()) if m]
        )


def embed_records(
    model,
    records: Sequence[ManifestRecord],
    modality: str,
    for_modality: str | None = None,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = False,
    info: ModelInfo | None = None,
) -> GroupedEmbeddings:
    """Embed ``modality`` of every record holding it (every caption, for text); undecodable sources are skipped."""
    items = manifest_items(list(records), modality, for_modality)
    es = embed_items(
        model,
        modality,
        [(i, s) for i, s, _ in items],
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        model_info=info,
    )
    groups = torch.tensor([items[r][2] for r in es.rows], dtype=torch.long)
    return GroupedEmbeddings(es.embeddings, groups, es.ids, es.skipped)


def _has_specific_captions(records: Sequence[ManifestRecord], modality: str) -> bool:
    return any(r.captions.get(modality) not in (None, "", []) for r in records)


@dataclass
class RetrievalReport:
    """Metrics per ordered pair ``(query, gallery)``, the modalities evaluated and the sources skipped."""

    pairs: dict[tuple[str, str], dict[str, float]]
    modalities: list[str]
    skipped: dict[str, list[dict[str, str]]]
    embeddings: dict[tuple[str, str | None], GroupedEmbeddings] = field(default_factory=dict, repr=False)
    #: ``"query:gallery"`` -> why the pair could not be evaluated
    skipped_pairs: dict[str, str] = field(default_factory=dict)

    def flat_metrics(self) -> dict[str, float]:
        """CLIP_benchmark-style flat metric names."""
        out: dict[str, float] = {}
        for (a, b), m in self.pairs.items():
            for name, v in m.items():
                out[f"{a}_to_{b}_{name}"] = v
        vision, text = find_modality(lambda p: p.tower == "vision"), find_modality(lambda p: p.tower == "text")
        for (a, b), prefix in (((text, vision), f"{vision}_retrieval"), ((vision, text), f"{text}_retrieval")):
            if (a, b) in self.pairs:
                out.update({f"{prefix}_recall@{k}": self.pairs[(a, b)][f"recall@{k}"] for k in RETRIEVAL_KS})
        return out

    def similarity(self, query: str, gallery: str, max_items: int = 32) -> tuple[torch.Tensor, list[str], list[str]]:
        """Similarities of the first ``max_items`` items holding both modalities (for a heatmap)."""
        q, g = self._pair_embeddings(query, gallery)
        keep = set(sorted(set(q.groups.tolist()) & set(g.groups.tolist()))[:max_items])
        q, g = q.restrict(keep), g.restrict(keep)
        return q.embeddings @ g.embeddings.T, q.ids, g.ids

    def _pair_embeddings(self, a: str, b: str) -> tuple[GroupedEmbeddings, GroupedEmbeddings]:
        def get(m: str, other: str) -> GroupedEmbeddings:
            return self.embeddings.get((m, other)) or self.embeddings[(m, None)]

        return get(a, b), get(b, a)


def resolve_pairs(pairs: Sequence[str] | None, modalities: Sequence[str]) -> list[tuple[str, str]]:
    """``None``/``["all"]`` -> every ordered pair of distinct modalities; else ``"a:b"`` (one direction) or
    ``"a-b"`` (both directions)."""
    if not pairs or list(pairs) == ["all"]:
        return [(a, b) for a, b in itertools.permutations(modalities, 2)]
    out: list[tuple[str, str]] = []
    for p in pairs:
        sep = ":" if ":" in p else "-" if "-" in p else None
        if sep is None:
            raise ValueError(f"pair {p!r}: expected 'query:gallery' or 'a-b' (both directions)")
        a, b = p.split(sep, 1)
        for pair in ((a, b), (b, a)) if sep == "-" else ((a, b),):
            if pair[0] == pair[1]:
                raise ValueError(f"pair {p!r}: query and gallery modality are the same")
            if pair not in out:
                out.append(pair)
    return out


def evaluate_retrieval(
    model,
    records: Sequence[ManifestRecord],
    pairs: Sequence[str] | None = None,
    *,
    ks: Sequence[int] = RETRIEVAL_KS,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = False,
) -> RetrievalReport:
    """Any-pair retrieval metrics (``recall@k``, ``median_rank``, ``mean_rank``, ``mAP``) for ``pairs`` (default:
    every ordered pair of the modalities both the model encodes and the manifest holds)."""
    present = [m for m in model.modalities if any(r.has(m) for r in records)]
    resolved = resolve_pairs(pairs, present)
    skipped_pairs: dict[str, str] = {}
    for a, b in list(resolved):
        for m in (a, b):
            model.encoder(m)
        absent = [m for m in (a, b) if m not in present]
        if absent:
            skipped_pairs[f"{a}:{b}"] = f"the manifest has no {absent[0]!r} items"
            resolved.remove((a, b))
    if not resolved and not skipped_pairs:
        raise ValueError(f"retrieval needs two modalities the model encodes; the manifest holds only {present}")
    info = ModelInfo.of(model)
    cache: dict[tuple[str, str | None], GroupedEmbeddings] = {}

    def emb(m: str, other: str) -> GroupedEmbeddings:
        key = (m, other) if m == "text" and _has_specific_captions(records, other) else (m, None)
        if key not in cache:
            cache[key] = embed_records(
                model, records, m, key[1], batch_size=batch_size, num_workers=num_workers, progress=progress, info=info
            )
        return cache[key]

    results: dict[tuple[str, str], dict[str, float]] = {}
    for a, b in resolved:
        q, g = emb(a, b), emb(b, a)
        common = set(q.groups.tolist()) & set(g.groups.tolist())
        if not common:
            skipped_pairs[f"{a}:{b}"] = "no manifest item holds both modalities (after skipping bad sources)"
            log.warning("retrieval pair %s:%s skipped: %s", a, b, skipped_pairs[f"{a}:{b}"])
            continue
        q, g = q.restrict(common), g.restrict(common)
        results[(a, b)] = retrieval_metrics_from_embeddings(q.embeddings, g.embeddings, q.groups, g.groups, ks)
    skipped: dict[str, list[dict[str, str]]] = {}
    for (m, _), ge in cache.items():  # text may be embedded once per caption source: list each source once
        known = skipped.setdefault(m, [])
        known.extend(s for s in ge.skipped if s not in known)
    used = sorted({m for p in results for m in p}, key=present.index)
    return RetrievalReport(results, used, skipped, cache, skipped_pairs)


def evaluate_zeroshot_records(
    model,
    records: Sequence[ManifestRecord],
    modality: str,
    classnames: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Zero-shot ``acc1``/``acc5``/``mean_per_class_recall`` of ``modality`` on the labelled records."""
    labelled = [r for r in records if r.label is not None and r.has(modality)]
    if not labelled:
        raise ValueError(f"zero-shot {modality}: no manifest item has both a 'label' and a {modality!r} source")
    classnames = list(classnames) if classnames else sorted({r.label for r in labelled})
    templates = list(templates) if templates else templates_for(modality)
    if len(classnames) < 2:
        status = (
            f"n/a: only one class ({classnames[0]!r}) so every prediction is right by construction; give a "
            "manifest with several labels or --classnames with at least two classes"
        )
        metrics = {
            "acc1": None,
            "acc5": None,
            "mean_per_class_recall": None,
            "num_samples": len(labelled),
            "num_classes": len(classnames),
            "num_templates": len(templates),
        }
        return {"metrics": metrics, "skipped": [], "classnames": classnames, "templates": templates, "status": status}
    ge = embed_records(model, labelled, modality, batch_size=batch_size, num_workers=num_workers, progress=progress)
    classifier = build_classifier(model, classnames, templates)
    metrics = evaluate_zeroshot(classifier, ge.embeddings, [labelled[g].label for g in ge.groups.tolist()])
    metrics.update(num_samples=int(len(ge.ids)), num_classes=len(classnames), num_templates=len(templates))
    if not len(ge.ids):
        metrics = {
            "acc1": None,
            "acc5": None,
            "mean_per_class_recall": None,
            "num_samples": 0,
            "num_classes": len(classnames),
            "num_templates": len(templates),
        }
        return {
            "metrics": metrics,
            "skipped": ge.skipped,
            "classnames": classnames,
            "templates": templates,
            "status": f"n/a: none of the {len(ge.skipped)} labelled {modality} sources could be decoded",
        }
    return {"metrics": metrics, "skipped": ge.skipped, "classnames": classnames, "templates": templates, "status": "ok"}


def clip_benchmark_result(
    dataset: str, model: str, pretrained: str, task: str, metrics: dict[str, Any], language: str = "en", **extra: Any
) -> dict[str, Any]:
    """A result in CLIP_benchmark's layout (extra keys after the standard ones)."""
    return {
        "dataset": dataset,
        "model": model,
        "pretrained": pretrained,
        "task": task,
        "metrics": metrics,
        "language": language,
        **extra,
    }


def run_evaluation(
    model,
    records: Sequence[ManifestRecord],
    out_dir: str | Path,
    *,
    dataset: str,
    model_ref: str,
    tasks: Sequence[str] = ("retrieval", "zeroshot"),
    pairs: Sequence[str] | None = None,
    zeroshot_modalities: Sequence[str] | None = None,
    classnames: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    heatmap_pair: tuple[str, str] | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the requested tasks and write ``retrieval.json``, ``zeroshot_<modality>.json``, ``recall_at_1.png``
    and ``similarity_<query>_<gallery>.png`` into ``out_dir``; returns ``{task or task/modality: result}``."""
    from bind.retrieval.plots import plot_pair_matrix, plot_similarity

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name, results = model.config.name, {}
    if "retrieval" in tasks:
        report = evaluate_retrieval(
            model, records, pairs, batch_size=batch_size, num_workers=num_workers, progress=progress
        )
        res = clip_benchmark_result(
            dataset,
            name,
            model_ref,
            "any_pair_retrieval",
            report.flat_metrics(),
            pairs={f"{a}:{b}": m for (a, b), m in report.pairs.items()},
            skipped=report.skipped,
            skipped_pairs=report.skipped_pairs,
            num_items=len(records),
        )
        if not report.pairs:
            raise ValueError(
                "retrieval: no pair of modalities could be evaluated ("
                + "; ".join(f"{p}: {r}" for p, r in report.skipped_pairs.items())
                + ")"
            )
        _write_json(out_dir / "retrieval.json", res)
        plot_pair_matrix(
            {p: m["recall@1"] for p, m in report.pairs.items()},
            report.modalities,
            out_dir / "recall_at_1.png",
            title=f"{dataset}: recall@1 (rows query, columns gallery)",
        )
        qa, ga = heatmap_pair or next(iter(report.pairs))
        if (qa, ga) not in report.pairs:
            raise ValueError(f"heatmap pair {qa}:{ga} is not among the evaluated pairs {sorted(report.pairs)}")
        sim, qids, gids = report.similarity(qa, ga)
        res["plots"] = [str(out_dir / "recall_at_1.png"), str(out_dir / f"similarity_{qa}_{ga}.png")]
        plot_similarity(
            sim,
            res["plots"][1],
            qids,
            gids,
            title=f"{dataset}: {qa} -> {ga} similarity",
            xlabel=f"{ga} (gallery)",
            ylabel=f"{qa} (query)",
        )
        _write_json(out_dir / "retrieval.json", res)
        results["retrieval"] = res
    if "zeroshot" in tasks:
        mods = (
            list(zeroshot_modalities)
            if zeroshot_modalities
            else [m for m in model.modalities if m != "text" and any(r.label is not None and r.has(m) for r in records)]
        )
        if not mods:
            log.warning("zero-shot: no manifest item has a 'label' and a non-text modality the model encodes; skipped")
        for m in mods:
            zs = evaluate_zeroshot_records(
                model,
                records,
                m,
                classnames,
                templates,
                batch_size=batch_size,
                num_workers=num_workers,
                progress=progress,
            )
            if zs["status"] != "ok":
                log.warning("zero-shot %s: %s", m, zs["status"])
            res = clip_benchmark_result(
                dataset,
                name,
                model_ref,
                "zeroshot_classification",
                zs["metrics"],
                modality=m,
                classnames=zs["classnames"],
                templates=zs["templates"],
                skipped=zs["skipped"],
                status=zs["status"],
            )
            _write_json(out_dir / f"zeroshot_{m}.json", res)
            results[f"zeroshot/{m}"] = res
    return results


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")
