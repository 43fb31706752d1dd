"""A labelled classification task of one modality: frozen embeddings of a manifest's train / val / test splits, class
names, k-shot sampling, and the named skips (items without a label, undecodable media, classes unseen in training)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bind.errors import BindError

VAL_SPLITS = ("val", "valid", "validation", "dev")


class TransferError(BindError):
    """A task that cannot be set up or fitted as asked (one class, too few examples per class, no labels...)."""


@dataclass
class LabelledFeatures:
    """Unit-norm embeddings ``[N, D]`` with class indices ``[N]`` and item ids."""

    features: torch.Tensor
    labels: torch.Tensor
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, keep: torch.Tensor) -> LabelledFeatures:
        idx = keep.nonzero().flatten() if keep.dtype == torch.bool else keep
        return LabelledFeatures(self.features[idx], self.labels[idx], [self.ids[i] for i in idx.tolist()])

    def counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.labels, minlength=num_classes).tolist()


@dataclass
class TransferTask:
    """A modality's classification task: ``labels`` are the class keys found in the manifest (sorted), ``classnames``
    their wording in prompts (the keys unless a mapping was given); ``train`` is the pool shots are drawn from, ``val``
    the pool hyper-parameters are chosen on, ``test`` the held-out evaluation set; ``skipped`` lists named skips."""

    modality: str
    labels: list[str]
    classnames: list[str]
    train: LabelledFeatures
    val: LabelledFeatures
    test: LabelledFeatures
    skipped: list[dict[str, str]] = field(default_factory=list)
    label_field: str = "label"

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def few_shot(self, k: int, seed: int = 0, pool: str = "train", strict: bool = True) -> LabelledFeatures:
        """``k`` examples of every class drawn (seeded) from ``pool``. ``strict``: a class with fewer than ``k``
        raises :class:`TransferError` naming it; otherwise such a class gives all it has."""
        data: LabelledFeatures = getattr(self, pool)
        if k < 1:
            raise TransferError(f"shots must be >= 1, got {k}")
        g = torch.Generator().manual_seed(seed)
        picked = []
        for c, name in enumerate(self.labels):
            idx = (data.labels == c).nonzero().flatten()
            if len(idx) < k and strict:
                raise TransferError(
                    f"{self.modality}: class {name!r} has {len(idx)} {pool} examples, fewer than "
                    f"{k} shots (label field {self.label_field!r}); use fewer shots or more data"
                )
            picked.append(idx[torch.randperm(len(idx), generator=g)[:k]])
        return data.subset(torch.cat(picked))

    def max_shots(self, pool: str = "train") -> int:
        """The largest k every class of ``pool`` can give."""
        return min(getattr(self, pool).counts(self.num_classes))

    def restrict(self, classes: Sequence[int]) -> TransferTask:
        """The task over a subset of its classes (renumbered in the given order): CoCoOp's base / new splits."""
        classes = list(classes)
        remap = torch.full((self.num_classes,), -1, dtype=torch.long)
        remap[torch.tensor(classes)] = torch.arange(len(classes))

        def sub(d: LabelledFeatures) -> LabelledFeatures:
            s = d.subset(remap[d.labels] >= 0)
            return replace(s, labels=remap[s.labels])

        return replace(
            self,
            labels=[self.labels[c] for c in classes],
            classnames=[self.classnames[c] for c in classes],
            train=sub(self.train),
            val=sub(self.val),
            test=sub(self.test),
        )


def _split_pools(records: list, seed: int) -> tuple[list, list, list]:
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split in VAL_SPLITS]
    test = [r for r in records if r.split == "test"]
    if not test:
        raise TransferError(
            'the manifest has no \'test\' split: transfer is evaluated on held-out items (give records "split": "test")'
        )
    if not train:
        raise TransferError('the manifest has no \'train\' split to draw the shots from ("split": "train")')
    if not val:  # no validation split: hold out a fifth of the training pool for hyper-parameters
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(train), generator=g).tolist()
        cut = max(1, len(train) // 5)
        val, train = [train[i] for i in order[:cut]], [train[i] for i in order[cut:]]
    return train, val, test


def default_embed(model, modality: str, items: list[tuple[str, Any]], batch_size: int = 64):
    """``(ids, [N, D] embeddings, skipped)`` through :func:`bind.retrieval.embed.embed_items`."""
    from bind.retrieval.embed import embed_items

    es = embed_items(model, modality, items, batch_size=batch_size)
    return es.ids, es.embeddings, [{"id": s["id"], "reason": s["reason"]} for s in es.skipped]


def load_task(
    model,
    modality: str,
    manifest: str | Path,
    label_field: str = "label",
    classnames: Mapping[str, str] | None = None,
    *,
    seed: int = 0,
    embed: Callable[[Any, str, list[tuple[str, Any]]], tuple] | None = None,
) -> TransferTask:
    """Read ``manifest`` (JSONL), embed every ``modality`` item with ``model`` (frozen) and build the task.

    Labels come from ``label_field`` (dotted for nested keys: ``factors.activity``). Items without a label and
    undecodable media are skipped and named in ``task.skipped``; test items of a class absent from the training pool
    too. ``classnames`` maps a label to its wording in prompts. ``embed(model, modality, [(id, source)])`` may replace
    the default embedding (e.g. from a cache); it returns ``(ids, embeddings, skipped)``."""
    from bind.data.manifest import read_manifest

    records = read_manifest(manifest, label_field=label_field)
    holding = [r for r in records if r.has(modality)]
    if not holding:
        raise TransferError(f"{manifest}: no {modality!r} items")
    skipped = [{"id": r.id, "reason": f"no label in field {label_field!r}"} for r in holding if r.label is None]
    labelled = [r for r in holding if r.label is not None]
    if not labelled:
        raise TransferError(
            f"{manifest}: none of the {len(holding)} {modality} items has a label in field "
            f"{label_field!r} (use --label-field, e.g. factors.activity)"
        )
    train, val, test = _split_pools(labelled, seed)
    labels = sorted({r.label for r in train})
    if len(labels) < 2:
        raise TransferError(
            f"{manifest}: the training pool of {modality} has {len(labels)} class ({labels}) in field "
            f"{label_field!r}; classification needs at least two"
        )
    names = dict(classnames or {})
    unknown = sorted(set(names) - set(labels))
    if unknown:
        raise TransferError(
            f"class names given for labels {unknown} that the training pool does not have (its labels: {labels})"
        )
    index = {c: i for i, c in enumerate(labels)}
    embed = embed or default_embed
    pools = []
    for split, recs in (("train", train), ("val", val), ("test", test)):
        keep = [r for r in recs if r.label in index]
        skipped += [
            {"id": r.id, "reason": f"{split} label {r.label!r} not among the training classes"}
            for r in recs
            if r.label not in index
        ]
        by_id = {r.id: r for r in keep}
        ids, emb, bad = embed(model, modality, [(r.id, r.source(modality)) for r in keep])
        skipped += list(bad)
        y = torch.tensor([index[by_id[i].label] for i in ids], dtype=torch.long)
        pools.append(LabelledFeatures(F.normalize(emb.float(), dim=-1), y, list(ids)))
    return TransferTask(
        modality, labels, [names.get(c, c) for c in labels], *pools, skipped=skipped, label_field=label_field
    )
