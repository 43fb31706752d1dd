"""Accuracy vs shots for every transfer method (the few-shot protocol of CoOp / Tip-Adapter), CoCoOp's base-to-new
protocol, and their plot.

Shots ``k`` per class are drawn (seeded) from the task's training pool; hyper-parameters (the linear probe's ``C``,
CLIP-Adapter's ``alpha``, Tip-Adapter's ``alpha``/``beta``) are chosen on ``min(k, 4)`` shots per class of the
validation pool (CoOp's few-shot validation); accuracy is measured on the whole held-out test pool. A shot count
some class cannot give is a named skip, never a silent smaller sample. Base-to-new (Zhou et al. CVPR 2022, §4.1):
classes split in half (first half = base), heads fitted on base-class shots only, then scored on base-class test
items among the base classes and on new-class test items among the new classes; H = harmonic mean.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from bind.transfer.data import TransferError, TransferTask
from bind.transfer.methods import (
    METHODS,
    TextSide,
    TransferHead,
    accuracy,
    harmonic_mean,
    make_head,
    zeroshot_templates,
)

SHOTS = (1, 2, 4, 8, 16)
BASE_TO_NEW_METHODS = ("zeroshot", "coop", "cocoop", "clip-adapter")


def _heads(
    task: TransferTask,
    text: TextSide,
    methods: Sequence[str],
    seed: int,
    zs_weights: torch.Tensor,
    options: dict[str, dict[str, Any]],
) -> dict[str, TransferHead]:
    dim = task.train.features.shape[1]
    return {
        m: make_head(m, text, task.classnames, dim, seed=seed, zeroshot_weights=zs_weights, **options.get(m, {}))
        for m in methods
    }


def validation_shots(task: TransferTask, k: int, seed: int):
    """``min(k, 4)`` validation shots per class (fewer where the pool has fewer); None when the pool is empty."""
    if not len(task.val):
        return None
    return task.few_shot(min(k, 4), seed=seed, pool="val", strict=False)


def shots_curve(
    task: TransferTask,
    text: TextSide,
    methods: Sequence[str] = METHODS,
    shots: Sequence[int] = SHOTS,
    seeds: Sequence[int] = (0,),
    options: dict[str, dict[str, Any]] | None = None,
    log: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Test accuracy of every method at every shot count (mean over ``seeds``), with chance and named skips."""
    options = options or {}
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise TransferError(f"unknown transfer methods {unknown}; known: {', '.join(METHODS)}")
    if not len(task.test):
        raise TransferError(f"{task.modality}: no test items to evaluate on")
    templates = options.get("zeroshot", {}).get("templates") or zeroshot_templates(task.modality)
    zs_weights = text.zeroshot_weights(task.classnames, templates)
    counts = task.test.counts(task.num_classes)
    out: dict[str, Any] = {
        "modality": task.modality,
        "label_field": task.label_field,
        "classes": task.labels,
        "classnames": task.classnames,
        "chance": 1 / task.num_classes,
        "majority": max(counts) / sum(counts),
        "test_items": len(task.test),
        "train_pool": task.train.counts(task.num_classes),
        "val_pool": task.val.counts(task.num_classes),
        "seeds": list(seeds),
        "shots": [],
        "methods": {},
        "seconds": {},
        "skipped": [],
        "skipped_items": task.skipped,
    }
    usable = task.max_shots("train")
    for k in shots:
        if k > usable:
            low = [(task.labels[c], n) for c, n in enumerate(task.train.counts(task.num_classes)) if n < k]
            out["skipped"].append(
                {
                    "shots": k,
                    "reason": f"classes with fewer than {k} training examples: "
                    + ", ".join(f"{c!r} ({n})" for c, n in low),
                }
            )
            if log:
                log(f"  {task.modality} {k}-shot: skipped ({out['skipped'][-1]['reason']})")
            continue
        out["shots"].append(k)
        for seed in seeds:
            train, val = task.few_shot(k, seed=seed), validation_shots(task, k, seed)
            for name, head in _heads(task, text, methods, seed, zs_weights, options).items():
                t0 = time.perf_counter()
                head.fit(train, val)
                acc = accuracy(head.predict_logits(task.test.features), task.test.labels)
                entry = out["methods"].setdefault(name, {}).setdefault(str(k), {"per_seed": []})
                entry["per_seed"].append(acc)
                out["seconds"][name] = out["seconds"].get(name, 0.0) + time.perf_counter() - t0
        for name in methods:
            e = out["methods"][name][str(k)]
            e["acc"] = sum(e["per_seed"]) / len(e["per_seed"])
        if log:
            log(
                f"  {task.modality} {k}-shot: "
                + ", ".join(f"{m} {out['methods'][m][str(k)]['acc']:.3f}" for m in methods)
            )
    return out


def base_to_new(
    task: TransferTask,
    text: TextSide,
    methods: Sequence[str] = BASE_TO_NEW_METHODS,
    shots: int = 16,
    seeds: Sequence[int] = (0,),
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """CoCoOp's protocol on ``task``: base = first half of the classes (rounded up), new = the rest."""
    options = options or {}
    c = task.num_classes
    n_base = math.ceil(c / 2)
    base_ids, new_ids = list(range(n_base)), list(range(n_base, c))
    out: dict[str, Any] = {
        "base": [task.labels[i] for i in base_ids],
        "new": [task.labels[i] for i in new_ids],
        "methods": {},
    }
    if len(base_ids) < 2 or len(new_ids) < 2:
        out["skipped"] = f"{c} classes: base-to-new needs two classes on each side (a one-class side is trivially 100%)"
        return out
    base, new = task.restrict(base_ids), task.restrict(new_ids)
    k = min(shots, base.max_shots("train"))
    out["shots"] = k
    out["chance"] = {"base": 1 / len(base_ids), "new": 1 / len(new_ids)}
    for seed in seeds:
        train, val = base.few_shot(k, seed=seed), validation_shots(base, k, seed)
        for name in methods:
            head = make_head(
                name, text, base.classnames, task.train.features.shape[1], seed=seed, **options.get(name, {})
            )
            if not head.open_vocabulary:
                raise TransferError(f"{name} cannot score new classes; base-to-new takes open-vocabulary methods")
            head.fit(train, val)
            acc_b = accuracy(head.predict_logits(base.test.features), base.test.labels)
            acc_n = accuracy(head.with_classes(new.classnames).predict_logits(new.test.features), new.test.labels)
            e = out["methods"].setdefault(name, {"base": [], "new": []})
            e["base"].append(acc_b)
            e["new"].append(acc_n)
    for name, e in out["methods"].items():
        b, n = sum(e["base"]) / len(e["base"]), sum(e["new"]) / len(e["new"])
        out["methods"][name] = {"base": b, "new": n, "H": harmonic_mean(b, n), "per_seed": e}
    return out


def plot_curve(result: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Accuracy vs shots (log2 axis) per method, with the chance level, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    shots = result["shots"]
    for name, by_k in result["methods"].items():
        ax.plot(
            shots,
            [by_k[str(k)]["acc"] for k in shots],
            marker="o",
            label=name,
            linestyle="--" if name == "zeroshot" else "-",
        )
    ax.axhline(result["chance"], color="grey", linestyle=":", label=f"chance {result['chance']:.2f}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.set_xlabel("shots per class")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or f"{result['modality']} -> {result['label_field']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    from bind.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table: one row per method, one column per shot count, chance in the header."""
    shots = result["shots"]
    head = (
        f"{result['modality']} -> {result['label_field']} ({len(result['classes'])} classes, "
        f"{result['test_items']} test items, chance {result['chance']:.3f}, majority {result['majority']:.3f})"
    )
    lines = [head, f"{'method':<15}" + "".join(f"{k:>8}" for k in shots)]
    for name, by_k in result["methods"].items():
        lines.append(f"{name:<15}" + "".join(f"{by_k[str(k)]['acc']:>8.3f}" for k in shots))
    lines += [f"  skipped {s['shots']} shots: {s['reason']}" for s in result["skipped"]]
    return "\n".join(lines)
