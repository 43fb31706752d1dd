"""``bindspace embed``, ``bindspace index build|add``, ``bindspace search`` and ``bindspace eval``.

    bindspace embed --model M --modality image --manifest data.jsonl --out emb.safetensors [--devices 2 --strategy ddp]
    bindspace index build --model M --modality image audio --manifest data.jsonl --out idx/ [--kind ivf --nlist 256]
    bindspace index add --index idx/ --modality video --manifest more.jsonl
    bindspace search --index idx/ --text "a dog barking" [--file bird.png --modality image] [-k 10] [--json]
    bindspace eval --model M --manifest data.jsonl --split test --out results/

``--model`` is a saved model directory or a named config (random weights are seeded with ``--seed``, so a named
config reloads to the same weights and an index built from it stays searchable).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from bind.errors import BindError


# --- shared helpers --------------------------------------------------------------------------------------------------
def _load_model(ref: str, args: argparse.Namespace):
    import torch

    import bind

    torch.manual_seed(args.seed)
    model = bind.load_model(ref, map_location="cpu", precision=getattr(args, "precision", None)).eval()
    if getattr(args, "compile", False):
        model.compile_encoders()  # compiled lazily, per encoder, at its first call
    return model.to(args.device) if getattr(args, "device", None) else model


def _input_files(inputs: list[str], modality: str) -> list[str]:
    """``--inputs`` as files: a directory stands for the files in it (recursively) that ``modality`` reads (its
    plugin's ``extensions``; every non-hidden file when it declares none). An empty result is an error."""
    from bind.registry import get_modality

    exts = tuple(e.lower() for e in getattr(get_modality(modality), "extensions", ()) or ())
    files: list[str] = []
    for p in inputs:
        path = Path(p)
        if not path.is_dir():
            files.append(p)
            continue
        found = sorted(
            str(f)
            for f in path.rglob("*")
            if f.is_file()
            and not any(part.startswith(".") for part in f.relative_to(path).parts)
            and (not exts or f.name.lower().endswith(exts))
        )
        if not found:
            raise BindError(
                f"--inputs {p}: the directory holds no {modality} files"
                + (f" ({', '.join(exts)})" if exts else "")
                + "; give media files or a directory of them"
            )
        files.extend(found)
    if not files:
        raise BindError(f"--inputs: no {modality} files given")
    return files


def _items(args: argparse.Namespace, modality: str) -> list[tuple[str, Any]]:
    """``(id, source)`` of ``--inputs`` files or of the ``--manifest`` records holding ``modality``."""
    if getattr(args, "inputs", None):
        return [(p, Path(p) if modality == "text" else p) for p in _input_files(args.inputs, modality)]
    from bind.data.manifest import manifest_items, read_manifest

    items = manifest_items(read_manifest(args.manifest, args.split), modality)
    if not items:
        raise BindError(f"{args.manifest}: no {modality!r} items" + (f" in split {args.split!r}" if args.split else ""))
    return [(i, s) for i, s, _ in items]


def _embed(
    model,
    modality: str,
    items: list[tuple[str, Any]],
    args: argparse.Namespace,
    info=None,
    shard_dir: Path | None = None,
):
    from bind.retrieval.embed import embed_items

    devices = args.devices
    if devices is not None and str(devices).isdigit():
        devices = int(devices)
    if devices is not None and args.quiet:
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    return embed_items(
        model,
        modality,
        items,
        batch_size=args.batch_size,
        num_workers=args.workers,
        progress=not args.quiet,
        model_info=info,
        devices=devices,
        strategy=args.strategy,
        accelerator=args.accelerator,
        num_nodes=args.num_nodes,
        shard_dir=shard_dir,
    )


def _report_skipped(es) -> None:
    for s in es.skipped:
        print(f"skipped {s['id']}: {s['reason']}", file=sys.stderr)
    if es.skipped:
        print(
            f"skipped {len(es.skipped)} of {len(es) + len(es.skipped)} {es.modality} sources (listed above)",
            file=sys.stderr,
        )


def _require_rows(es, what: str) -> None:
    if len(es) == 0:
        raise BindError(
            f"{what}: none of the {len(es.skipped)} {es.modality} sources could be embedded (each is "
            "listed above with its reason); give readable media"
        )


def _wait_message(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _add_embed_options(p: argparse.ArgumentParser, distributed: bool = True) -> None:
    g = p.add_argument_group("embedding")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes decoding media")
    g.add_argument("--device", default=None, help="torch device for single-process embedding (cpu, cuda:0, ...)")
    g.add_argument("--seed", type=int, default=0, help="seed for the random weights of a named config")
    g.add_argument(
        "--precision",
        default=None,
        choices=["auto", "fp32", "bf16"],
        help="default: the precision saved with the model (converted checkpoints: fp32, for parity), else "
        "auto = bf16 autocast on a bf16 GPU or a CPU with native bf16 (AVX-512-BF16/AMX), else fp32 "
        "(embeddings are fp32 either way)",
    )
    g.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the encoders: pays ~1 min per encoder once, ~1.07x faster after (ViT-B/16, "
        "2-core CPU): worth it from a few thousand items",
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    if not distributed:
        return
    g.add_argument(
        "--devices",
        default=None,
        help="run through Lightning trainer.predict on this many devices ('auto', N); each rank writes a "
        "shard, rank 0 merges them",
    )
    g.add_argument("--strategy", default="auto", help="Lightning strategy with --devices (ddp, ddp_spawn, auto)")
    g.add_argument("--accelerator", default="auto", help="Lightning accelerator with --devices (cpu, gpu, auto)")
    g.add_argument("--num-nodes", type=int, default=1)


def _add_source_options(p: argparse.ArgumentParser, required: bool = True, embeddings: bool = False) -> None:
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument(
        "--inputs", nargs="+", metavar="FILE", help="media files or directories of them (for text: UTF-8 .txt files)"
    )
    src.add_argument("--manifest", help="JSONL manifest (paths relative to its directory)")
    if embeddings:
        src.add_argument("--embeddings", nargs="+", metavar="FILE", help="outputs of `bindspace embed`")
    p.add_argument("--split", default=None, help="only manifest records of this split")


# --- embed ---------------------------------------------------------------------------------------------------------
def _embed_cmd(args: argparse.Namespace) -> int:
    from bind.retrieval.model_info import ModelInfo

    out = Path(args.out)
    if out.suffix not in (".safetensors", ".npz"):
        raise ValueError(f"--out {out}: use a .safetensors or .npz file name (a .json sidecar is written beside it)")
    model = _load_model(args.model, args)
    es = _embed(
        model,
        args.modality,
        _items(args, args.modality),
        args,
        ModelInfo.of(model, args.model),
        shard_dir=out.with_name(f".{out.name}.shards"),
    )
    if es is None:  # a non-zero rank of a distributed run: rank 0 writes
        return 0
    _report_skipped(es)
    _require_rows(es, f"--out {out}")
    es.save(out)
    print(
        f"embedded {len(es)} {args.modality} sources with {es.model.name} (dim {es.model.embed_dim}) -> {out} "
        f"(+ {es.sidecar(out).name}); skipped {len(es.skipped)} (listed in the sidecar and above on stderr)"
    )
    return 0


# --- index ---------------------------------------------------------------------------------------------------------
def _index_spec(args: argparse.Namespace):
    from bind.cli import option_values
    from bind.retrieval.index import IndexSpec

    return IndexSpec(**option_values(IndexSpec, args))


def _embedding_sets(args: argparse.Namespace, model, info, directory: Path):
    """EmbeddingSets from ``--embeddings`` files or by embedding ``--modality`` sources (None on non-zero ranks)."""
    from bind.retrieval.embed import EmbeddingSet

    if args.embeddings:
        return [EmbeddingSet.load(p) for p in args.embeddings]
    if not args.modality:
        raise ValueError("--modality is required unless --embeddings are given")
    sets, other_rank = [], False
    for m in args.modality:  # every rank takes part in every modality's distributed run
        es = _embed(model, m, _items(args, m), args, info, shard_dir=directory.with_name(f".{directory.name}.shards"))
        if es is None:
            other_rank = True
            continue
        _report_skipped(es)
        sets.append(es)
    if not other_rank and sets and not any(len(es) for es in sets):
        raise BindError(f"{directory}: nothing to index: every source was skipped (listed above); give readable media")
    return None if other_rank else sets


def _index_build_cmd(args: argparse.Namespace) -> int:
    from bind.retrieval.index import Index, index_writer
    from bind.retrieval.model_info import ModelInfo

    out = Path(args.out)

    def refuse_existing() -> None:
        if (out.exists() or out.is_symlink()) and not args.overwrite:
            raise BindError(f"--out {out} exists; use `bindspace index add` to extend it or --overwrite to replace it")

    refuse_existing()
    model = info = None
    if not args.embeddings:
        if args.model is None:
            raise BindError(
                "--model is required to embed sources (a saved model directory or a named config); or "
                "give --embeddings from `bindspace embed`"
            )
        model = _load_model(args.model, args)
        info = ModelInfo.of(model, args.model)
    sets = _embedding_sets(args, model, info, out)
    if sets is None:
        return 0
    index = Index(info or sets[0].model, _index_spec(args))
    for es in sets:
        index.add_embeddings(es)
    if len(index) == 0:
        raise BindError(f"--out {out}: nothing to index (0 rows); give sources or embeddings that hold some")
    with index_writer(out, wait=not args.no_wait, on_wait=_wait_message):
        refuse_existing()  # another writer may have created it meanwhile
        index.save(out)
    print(f"built {index} -> {out}")
    return 0


def _index_add_cmd(args: argparse.Namespace) -> int:
    from bind.retrieval.index import Index, index_writer
    from bind.retrieval.model_info import ModelInfo
    from bind.retrieval.query import load_index_model

    directory = Path(args.index)
    index = Index.load(directory)  # the model to embed with; the rows are re-read under the writer lock below
    model = info = None
    if not args.embeddings:
        if args.model is not None:  # the given model must be the index's model
            model = _load_model(args.model, args)
            info = ModelInfo.of(model, args.model)
            index.model.check_compatible(info)
        else:
            import torch

            torch.manual_seed(args.seed)
            model = load_index_model(index)
            model = model.to(args.device) if args.device else model
            info = index.model
    sets = _embedding_sets(args, model, info, directory)
    if sets is None:
        return 0
    if not sum(len(es) for es in sets):
        raise BindError(f"--index {directory}: nothing to add (0 rows)")
    with index_writer(directory, wait=not args.no_wait, on_wait=_wait_message):  # the whole read-modify-write
        index = Index.load(directory)
        before = len(index)
        for es in sets:
            index.add_embeddings(es)
        index.save(directory)
    print(f"added {len(index) - before} rows: {index} -> {directory}")
    return 0


# --- search --------------------------------------------------------------------------------------------------------
def _parse_queries(args: argparse.Namespace) -> list[tuple[str, Any]]:
    import bind

    for t in args.text or []:
        if not t.strip():
            raise ValueError("--text '': an empty text query matches nothing in particular; give words to search for")
    queries: list[tuple[str, Any]] = [("text", t) for t in args.text or []]
    known = set(bind.list_modalities())
    for f in args.file or []:
        prefix, sep, rest = f.partition(":")
        if sep and prefix in known:
            queries.append((prefix, rest))
        elif args.modality:
            queries.append((args.modality, f))
        else:
            raise ValueError(f"--file {f}: give its modality with --modality X or as X:{f}")
    if not queries:
        raise ValueError("nothing to search for: give --text and/or --file")
    for m, _ in queries:
        if m not in known:
            raise ValueError(f"--modality {m!r}: unknown modality; known: {', '.join(sorted(known))}")
    return queries


def _search_cmd(args: argparse.Namespace) -> int:
    import torch

    from bind.errors import MediaError
    from bind.retrieval.index import Index
    from bind.retrieval.query import embed_query, load_index_model

    if args.k < 1:
        raise ValueError(f"-k {args.k}: the number of results must be at least 1")
    queries = _parse_queries(args)
    index = Index.load(args.index)
    if len(index) == 0:
        raise BindError(f"--index {args.index}: the index holds no rows; add some with `bindspace index add`")
    torch.manual_seed(args.seed)
    model = load_index_model(index, args.model)
    try:
        query = embed_query(model, queries)
    except MediaError as e:  # one query file is unreadable: a search without it would answer another question
        raise BindError(f"--file {e.source}: {e.reason}; give a readable {e.modality} file") from None
    result = index.search(query, args.k, nprobe=args.nprobe, ef_search=args.ef_search)
    hits = result.hits[0]
    if args.json:
        print(
            json.dumps(
                {
                    "index": str(args.index),
                    "model": index.model.to_dict(),
                    "k": args.k,
                    "queries": [{"modality": m, "source": str(s)} for m, s in queries],
                    "hits": [h.to_dict() for h in hits],
                },
                indent=2,
            )
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    title = " + ".join(f"{m}: {s}" for m, s in queries)
    table = Table(title=f"{title}  ->  {args.index} ({len(index)} rows)")
    for col in ("rank", "score", "id", "modality", "source"):
        table.add_column(col, justify="right" if col in ("rank", "score") else "left")
    for h in hits:
        table.add_row(str(h.rank), f"{h.score:.4f}", h.id, h.modality, h.source)
    Console(width=max(100, Console().width)).print(table)
    return 0


# --- eval ----------------------------------------------------------------------------------------------------------
def _read_lines_or_json(path: str | None) -> list[str] | None:
    if path is None:
        return None
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix == ".json":
        data = json.loads(text)
        return [str(x) for x in data]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _eval_cmd(args: argparse.Namespace) -> int:
    from bind.data.manifest import read_manifest
    from bind.retrieval.evaluate import run_evaluation

    model = _load_model(args.model, args)
    records = read_manifest(args.manifest, args.split, label_field=args.label_field)
    if not records:
        raise BindError(f"{args.manifest}: no records" + (f" in split {args.split!r}" if args.split else ""))
    heat = tuple(args.heatmap_pair.split(":", 1)) if args.heatmap_pair else None
    logging.getLogger("bind.retrieval.evaluate").setLevel(logging.ERROR)  # its warnings are summarised below
    results = run_evaluation(
        model,
        records,
        args.out,
        dataset=args.dataset or Path(args.manifest).stem,
        model_ref=str(args.model),
        tasks=args.task,
        pairs=args.pairs,
        zeroshot_modalities=args.zeroshot_modality,
        classnames=_read_lines_or_json(args.classnames),
        templates=_read_lines_or_json(args.templates),
        heatmap_pair=heat,
        batch_size=args.batch_size,
        num_workers=args.workers,
        progress=not args.quiet,
    )
    _print_eval(results)
    _report_eval_skips(results)
    print(f"results -> {args.out}")
    return 0


def _report_eval_skips(results: dict[str, Any]) -> None:
    """Every skipped source once (with its modality and reason) and every skipped pair / n/a task, on stderr."""
    seen: set[tuple[str, str]] = set()
    lists = [(m, s) for m, ss in results.get("retrieval", {}).get("skipped", {}).items() for s in ss]
    lists += [(r["modality"], s) for k, r in results.items() if k.startswith("zeroshot/") for s in r["skipped"]]
    for m, s in lists:
        if (m, s["source"]) not in seen:
            seen.add((m, s["source"]))
            print(f"skipped {s['id']} ({m}): {s['reason']}", file=sys.stderr)
    if seen:
        print(f"skipped {len(seen)} undecodable sources (listed above and in the JSON results)", file=sys.stderr)
    for pair, reason in results.get("retrieval", {}).get("skipped_pairs", {}).items():
        print(f"skipped pair {pair}: {reason}", file=sys.stderr)
    for k, r in results.items():
        if k.startswith("zeroshot/") and r.get("status", "ok") != "ok":
            print(f"zero-shot {r['modality']}: {r['status']}", file=sys.stderr)


def _print_eval(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(100, Console().width))
    if "retrieval" in results:
        t = Table(title=f"any-pair retrieval: {results['retrieval']['dataset']}")
        for col in ("query", "gallery", "R@1", "R@5", "R@10", "median rank", "mAP", "queries", "gallery size"):
            t.add_column(col)
        for pair, m in results["retrieval"]["pairs"].items():
            q, g = pair.split(":")
            t.add_row(
                q,
                g,
                f"{m['recall@1']:.3f}",
                f"{m['recall@5']:.3f}",
                f"{m['recall@10']:.3f}",
                f"{m['median_rank']:g}",
                f"{m['mAP']:.3f}",
                str(m["num_queries"]),
                str(m["gallery_size"]),
            )
        console.print(t)
    zs = {k.split("/", 1)[1]: v for k, v in results.items() if k.startswith("zeroshot/")}
    if zs:
        t = Table(title="zero-shot classification")
        for col in ("modality", "acc1", "acc5", "mean per-class recall", "samples", "classes"):
            t.add_column(col)

        def fmt(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        for m, r in zs.items():
            x = r["metrics"]
            note = " (n/a: one class)" if x["acc1"] is None and x["num_classes"] < 2 else ""
            t.add_row(
                m,
                fmt(x["acc1"]),
                fmt(x["acc5"]),
                fmt(x["mean_per_class_recall"]),
                str(x["num_samples"]),
                str(x["num_classes"]) + note,
            )
        console.print(t)


# --- registration ----------------------------------------------------------------------------------------------------
def add_commands(sub: argparse._SubParsersAction) -> None:
    from bind.cli import add_command_group, add_options
    from bind.retrieval.index import IndexSpec

    p = sub.add_parser("embed", help="embed media of one modality into a .safetensors/.npz + JSON sidecar")
    p.add_argument("--model", required=True, help="saved model directory or named config")
    p.add_argument("--modality", required=True)
    _add_source_options(p)
    p.add_argument("--out", required=True, help="output .safetensors or .npz")
    _add_embed_options(p)
    p.set_defaults(func=_embed_cmd)

    isub = add_command_group(sub, "index", "build or extend a FAISS index (directory)", "index_command", "{build,add}")
    b = isub.add_parser("build", help="a new index from a manifest, files or embeddings")
    b.add_argument("--model", default=None, help="saved model directory or named config")
    b.add_argument("--modality", nargs="+", default=None, help="one or more modalities to index")
    _add_source_options(b, embeddings=True)
    b.add_argument("--out", required=True, help="index directory")
    b.add_argument("--overwrite", action="store_true")
    b.add_argument("--no-wait", action="store_true", help="fail at once if another process is writing the index")
    add_options(b, IndexSpec, title="index")
    _add_embed_options(b)
    b.set_defaults(func=_index_build_cmd)
    a = isub.add_parser("add", help="add rows to an existing index (same model only)")
    a.add_argument("--index", required=True)
    a.add_argument("--model", default=None, help="default: the model recorded in the index")
    a.add_argument("--modality", nargs="+", default=None)
    _add_source_options(a, embeddings=True)
    a.add_argument("--no-wait", action="store_true", help="fail at once if another process is writing the index")
    _add_embed_options(a)
    a.set_defaults(func=_index_add_cmd)

    p = sub.add_parser("search", help="query an index with text and/or files of any modality")
    p.add_argument("--index", required=True)
    p.add_argument("--text", action="append", help="a text query (repeatable)")
    p.add_argument("--file", action="append", help="a query file (repeatable); MODALITY:PATH or with --modality")
    p.add_argument("--modality", default=None, help="modality of --file queries")
    p.add_argument("--model", default=None, help="default: the model recorded in the index")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--nprobe", type=int, default=None)
    p.add_argument("--ef-search", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="seed for the random weights of a named config")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_search_cmd)

    p = sub.add_parser("eval", help="any-pair retrieval and zero-shot classification on a manifest")
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("--task", nargs="+", default=["retrieval", "zeroshot"], choices=["retrieval", "zeroshot"])
    p.add_argument(
        "--pairs",
        nargs="+",
        default=None,
        help="'query:gallery' or 'a-b' (both ways); default every pair of modalities present",
    )
    p.add_argument("--zeroshot-modality", nargs="+", default=None)
    p.add_argument(
        "--label-field",
        default="label",
        help="class label key of a record, dotted for nested keys (e.g. factors.shape)",
    )
    p.add_argument("--classnames", default=None, help="file: one class name a line, or a JSON list")
    p.add_argument("--templates", default=None, help="file: one template a line ({c} = class name), or JSON list")
    p.add_argument("--heatmap-pair", default=None, help="query:gallery pair of the similarity heatmap")
    p.add_argument("--dataset", default=None, help="dataset name in the results (default: manifest file stem)")
    p.add_argument("--out", required=True, help="directory for JSON results and PNG plots")
    _add_embed_options(p, distributed=False)
    p.set_defaults(func=_eval_cmd)
