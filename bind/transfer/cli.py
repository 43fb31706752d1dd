"""``bindspace transfer``: few-shot transfer of a bound space to a classification task in any modality.

    bindspace transfer bench --model M --modality imu --manifest world/manifest.jsonl \
        --label-field factors.activity --out runs/transfer-imu        # accuracy vs shots + base-to-new, JSON + PNG
    bindspace transfer fit --model M --modality imu --manifest F --label-field factors.activity \
        --method coop --shots 16 --out runs/imu-coop                  # one head, saved (safetensors + JSON)
    bindspace transfer eval --head runs/imu-coop --model M --manifest F --split test
    bindspace transfer search --head runs/imu-coop --index runs/idx --class running -k 10
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _classnames(path: str | None) -> dict[str, str] | None:
    if path is None:
        return None
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"--classnames {path}: expected a JSON object mapping each label to its wording in prompts")
    return {str(k): v for k, v in data.items()}


def _model(ref: str, seed: int):
    import torch

    import bind

    torch.manual_seed(seed)
    return bind.load_model(ref, map_location="cpu").eval()


def _task(args: argparse.Namespace, model):
    from bind.transfer import load_task

    task = load_task(
        model, args.modality, args.manifest, args.label_field, _classnames(args.classnames), seed=args.seed
    )
    for s in task.skipped:
        print(f"skipped {s['id']}: {s['reason']}", file=sys.stderr)
    return task


def _method_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Per-method options from the flags, checked before any media is embedded."""
    from bind.transfer.methods import check_schedule

    check_schedule([v for v in (args.lr, args.meta_lr) if v is not None], args.steps)
    prompt = {"n_ctx": args.n_ctx, "ctx_init": args.ctx_init}
    given = {k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v is not None}
    meta = {} if args.meta_lr is None else {"meta_lr": args.meta_lr}
    return {
        "coop": {**prompt, "class_specific": args.class_specific, **given},
        "cocoop": {**prompt, **given, **meta},
        "clip-adapter": given,
        "tip-adapter-f": given,
    }


def _bench_cmd(args: argparse.Namespace) -> int:
    from bind.io import write_text
    from bind.transfer import TextSide, base_to_new, format_table, plot_curve, shots_curve

    options = _method_options(args)
    model = _model(args.model, args.seed)
    task = _task(args, model)
    text = TextSide(model, args.modality)
    result = shots_curve(task, text, args.methods, args.shots, args.seeds, options, log=print)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not result["shots"]:
        raise ValueError(
            f"--shots {args.shots}: every shot count was skipped ("
            + "; ".join(s["reason"] for s in result["skipped"])
            + ")"
        )
    report: dict[str, Any] = {"model": str(args.model), "manifest": str(args.manifest), "shots_curve": result}
    if not args.no_base_to_new:
        methods = [m for m in ("zeroshot", "coop", "cocoop", "clip-adapter") if m in args.methods]
        report["base_to_new"] = base_to_new(task, text, methods, max(result["shots"]), args.seeds, options)
    plot = plot_curve(result, out / "accuracy_vs_shots.png")
    write_text(out / "results.json", json.dumps(report, indent=1) + "\n")
    print(format_table(result))
    b2n = report.get("base_to_new")
    if b2n and "skipped" in b2n:
        print(f"base-to-new: skipped ({b2n['skipped']})")
    elif b2n:
        print(f"base-to-new ({b2n['shots']} shots, base {b2n['base']}, new {b2n['new']}):")
        for m, r in b2n["methods"].items():
            print(f"  {m:<13} base {r['base']:.3f}  new {r['new']:.3f}  H {r['H']:.3f}")
    print(f"results -> {out / 'results.json'}, plot -> {plot}")
    return 0


def _fit_cmd(args: argparse.Namespace) -> int:
    from bind.retrieval.metrics import classification_metrics
    from bind.transfer import TextSide, make_head, save_head
    from bind.transfer.bench import validation_shots

    opts = _method_options(args).get(args.method, {})
    model = _model(args.model, args.seed)
    task = _task(args, model)
    train = task.few_shot(args.shots, seed=args.seed)
    head = make_head(
        args.method,
        TextSide(model, args.modality),
        task.classnames,
        task.train.features.shape[1],
        seed=args.seed,
        **opts,
    )
    head.fit(train, validation_shots(task, args.shots, args.seed))
    save_head(
        head,
        args.out,
        model,
        labels=task.labels,
        extra={"label_field": task.label_field, "shots": args.shots, "manifest": str(args.manifest)},
    )
    metrics = classification_metrics(head.predict_logits(task.test.features), task.test.labels)
    print(
        f"{args.method} on {args.shots} shots x {task.num_classes} classes: test acc1 {metrics['acc1']:.3f} "
        f"({len(task.test)} items, chance {1 / task.num_classes:.3f}) -> {args.out}"
    )
    return 0


def _eval_cmd(args: argparse.Namespace) -> int:
    import torch

    from bind.data.manifest import read_manifest
    from bind.io import write_text
    from bind.retrieval.metrics import classification_metrics
    from bind.transfer.data import TransferError, default_embed
    from bind.transfer.store import load_head, read_meta

    meta = read_meta(args.head)
    model = _model(args.model or (meta.get("model") or {}).get("path", ""), args.seed)
    head = load_head(args.head, model)
    label_field = args.label_field or meta.get("label_field", "label")
    records = [r for r in read_manifest(args.manifest, args.split, label_field=label_field) if r.has(head.modality)]
    index = {c: i for i, c in enumerate(meta["labels"])}
    skipped = [
        {"id": r.id, "reason": f"label {r.label!r} not among the head's classes"}
        for r in records
        if r.label is not None and r.label not in index
    ]
    skipped += [{"id": r.id, "reason": f"no label in field {label_field!r}"} for r in records if r.label is None]
    keep = {r.id: r for r in records if r.label in index}
    if not keep:
        raise TransferError(
            f"{args.manifest}: no labelled {head.modality} items of the head's classes "
            f"{meta['labels']}" + (f" in split {args.split!r}" if args.split else "")
        )
    ids, emb, bad = default_embed(model, head.modality, [(i, r.source(head.modality)) for i, r in keep.items()])
    skipped += bad
    target = torch.tensor([index[keep[i].label] for i in ids], dtype=torch.long)
    logits = head.predict_logits(torch.nn.functional.normalize(emb.float(), dim=-1))
    metrics = {**classification_metrics(logits, target), "num_samples": len(target), "num_classes": len(index)}
    for s in skipped:
        print(f"skipped {s['id']}: {s['reason']}", file=sys.stderr)
    result = {
        "head": str(args.head),
        "method": head.method,
        "modality": head.modality,
        "split": args.split,
        "metrics": metrics,
        "chance": 1 / len(index),
        "skipped": skipped,
    }
    if args.out:
        write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(
        f"{head.method} ({head.modality}, {len(index)} classes) on {metrics['num_samples']} items: "
        f"acc1 {metrics['acc1']:.3f}, mean per-class recall {metrics['mean_per_class_recall']:.3f} "
        f"(chance {1 / len(index):.3f}); skipped {len(skipped)}"
    )
    return 0


def _search_cmd(args: argparse.Namespace) -> int:
    from bind.retrieval.index import Index
    from bind.retrieval.query import load_index_model
    from bind.transfer.store import load_head, read_meta

    meta = read_meta(args.head)
    index = Index.load(args.index)
    model = load_index_model(index, args.model)
    head = load_head(args.head, model)
    names = {**{c: i for i, c in enumerate(meta["labels"])}, **{c: i for i, c in enumerate(head.classnames)}}
    if args.class_name not in names:
        raise ValueError(f"--class {args.class_name!r}: the head's classes are {meta['labels']}")
    query = head.class_embeddings()[names[args.class_name]]
    hits = index.search(query.float(), args.k).hits[0]
    if args.json:
        print(
            json.dumps({"class": args.class_name, "method": head.method, "hits": [h.to_dict() for h in hits]}, indent=2)
        )
        return 0
    print(f"{head.method} prompt for {args.class_name!r} -> {args.index} ({len(index)} rows)")
    for h in hits:
        print(f"{h.rank:>4} {h.score:8.4f}  {h.id}  {h.modality}  {h.source}")
    return 0


def _add_task_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="saved model directory or named config")
    p.add_argument("--modality", required=True, help="modality of the inputs to classify")
    p.add_argument("--manifest", required=True, help="JSONL manifest with train / val / test splits")
    p.add_argument("--label-field", default="label", help="class label key, dotted for nested keys (factors.activity)")
    p.add_argument("--classnames", default=None, help="JSON object: label -> its wording in prompts")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("prompt learning / adapters")
    g.add_argument("--n-ctx", type=int, default=4, help="CoOp/CoCoOp context vectors M (with --ctx-init random)")
    g.add_argument(
        "--ctx-init",
        default="template",
        help="context start: 'template' (the modality's first zero-shot template before the class name), "
        "'random', or a phrase (M = its tokens)",
    )
    g.add_argument("--class-specific", action="store_true", help="CoOp: one context per class")
    g.add_argument("--steps", type=int, default=None, help="optimisation steps (default: each method's own)")
    g.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default: each method's own)")
    g.add_argument("--meta-lr", type=float, default=None, help="CoCoOp meta-net learning rate (default 5e-4)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    from bind.cli import add_command_group
    from bind.transfer.bench import SHOTS
    from bind.transfer.methods import METHODS

    what = "few-shot transfer: zero-shot, linear probe, CoOp, CoCoOp, adapters"
    tsub = add_command_group(sub, "transfer", what, "transfer_command", "{bench,fit,eval,search}")
    b = tsub.add_parser("bench", help="accuracy vs shots for every method (+ base-to-new), JSON + PNG")
    _add_task_options(b)
    b.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    b.add_argument("--shots", nargs="+", type=int, default=list(SHOTS))
    b.add_argument("--seeds", nargs="+", type=int, default=[0], help="few-shot draws averaged")
    b.add_argument("--no-base-to-new", action="store_true", help="skip CoCoOp's base-to-new protocol")
    b.add_argument("--out", required=True, help="directory for results.json and accuracy_vs_shots.png")
    b.set_defaults(func=_bench_cmd)
    f = tsub.add_parser("fit", help="fit one method on k shots per class and save it")
    _add_task_options(f)
    f.add_argument("--method", default="coop", choices=list(METHODS))
    f.add_argument("--shots", type=int, default=16)
    f.add_argument("--out", required=True, help="head directory (head.safetensors + head.json)")
    f.set_defaults(func=_fit_cmd)
    e = tsub.add_parser("eval", help="classification metrics of a saved head on a manifest")
    e.add_argument("--head", required=True)
    e.add_argument("--model", default=None, help="default: the model recorded in the head")
    e.add_argument("--manifest", required=True)
    e.add_argument("--split", default="test")
    e.add_argument("--label-field", default=None, help="default: the one the head was fitted with")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", default=None, help="JSON results file")
    e.set_defaults(func=_eval_cmd)
    s = tsub.add_parser("search", help="a learned class prompt (or class weights) as the query of an index")
    s.add_argument("--head", required=True)
    s.add_argument("--index", required=True)
    s.add_argument("--class", dest="class_name", required=True, help="a class label or its prompt wording")
    s.add_argument("--model", default=None, help="default: the model recorded in the index")
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_search_cmd)
