"""``bindspace demo``: generate a procedural world, train tiny encoders for six modalities into the frozen MiniLM text
space, and measure retrieval between every pair of modalities on held-out scenes — end to end on a CPU in minutes.

Training is language-anchored (LanguageBind, Zhu et al., "LanguageBind: Extending Video-Language Pretraining to
N-modality by Language-based Semantic Alignment", ICLR 2024): each modality ``m`` gets its own symmetric InfoNCE
loss against the frozen all-MiniLM-L6-v2 embedding of its own caption ``captions[m]`` (which names only what ``m``
reveals, :data:`bind_world.REVEALS`). No two non-text modalities are ever paired, so every non-text pair measured
is *emergent* alignment through the shared anchor (ImageBind, Girdhar et al., "ImageBind: One Embedding Space To
Bind Them All", CVPR 2023, §4.1).

Evaluation uses **factor-level relevance**: scenes share factor values, so "find the one paired item" is ill-posed.
For a pair (query modality ``a``, gallery modality ``b``), gallery item ``j`` is a positive of query ``i`` iff the two
scenes agree on every factor in ``REVEALS[a] ∩ REVEALS[b]`` (text stands for the caption of the other modality, so
text <-> ``m`` uses ``REVEALS[m]``); pairs without a shared factor (image <-> IMU, ...) have no defined positives
and are reported as n/a. Chance R@1 is the mean over queries of ``#positives / gallery size`` (the R@1 of a random
ranking); every R@1 is reported with its chance level and the ratio. Text -> modality queries are run twice: in the
training templates (for held-out scenes) and as paraphrases (:func:`bind_world.captions.paraphrase`: templates and
factor wordings never seen in training, :data:`PARAPHRASE_DRAWS` draws per scene), which only the pretrained text
anchor can bridge. Each is reported against
its **anchor bound**: the R@1 of an ideal encoder that maps every item exactly onto the frozen anchor's embedding of
its canonical caption, so the gap splits into the text model's share and the encoder's. Zero-shot multiple-choice
QA on the test videos (:func:`video_qa`) closes the evaluation.

The run is a :class:`bind_world.experiment.WorldExperiment` (the runner the video-reduction bench shares). Speed:
media are decoded once (:class:`bind.data.dataset.SampleCache`, filled by worker processes) and the frozen tower's
caption embeddings are memoised (``cache_anchors``), so an epoch costs only the tiny encoders' steps. Output: one
line per stage and per epoch, then the result tables; the libraries' messages only with ``--verbose``.

Outputs under ``--out``: ``world/`` (manifest + media), ``model/`` (``save_pretrained``; ``bind.load_model``),
``index/`` (the test videos, for ``bindspace search``), ``results.json``, ``r1_matrix.png``,
``similarity_audio_depth.png`` and ``train/`` (Lightning logs and checkpoints).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bind_world.experiment import (
    ANCHOR,
    MODEL_NAME,
    ExperimentConfig,
    WorldExperiment,
    add_experiment_arguments,
    experiment_overrides,
    factor_positives,
    pair_metrics,
    shared_factors,
)
from bind_world.scene import FACTORS, MODALITIES, REVEALS

ALL_MODALITIES = (ANCHOR, *MODALITIES)
#: paraphrased queries per test scene, each an independent draw of template and wordings: with one, R@1 / bound moved
#: by up to 0.1 between draws on the same model (240 queries); with four, the demo's video read 0.72x where eight
#: other draws read 0.63x
PARAPHRASE_DRAWS = 16
SIMILARITY_PAIR = ("audio", "depth")


# --- stages ----------------------------------------------------------------------------------------------------------
def evaluate_pairs(model, records: Sequence[Any], run: WorldExperiment, seed: int) -> dict[str, Any]:
    """Any-pair retrieval on ``records`` (the test split) with factor-level relevance; see the module docstring."""
    from bind_world.captions import caption, paraphrase

    factors = [r.factors for r in records]
    emb = {m: run.embed(model, m, records) for m in MODALITIES}
    rng = np.random.default_rng([seed, 0xDE70])
    captions = {
        m: {
            "templated": [r.captions[m][0] for r in records],
            "paraphrased": [paraphrase(f, m, rng) for _ in range(PARAPHRASE_DRAWS) for f in factors],
        }
        for m in MODALITIES
    }
    text_emb = {
        m: {kind: run.embed_texts(model, caps) for kind, caps in by_kind.items()} for m, by_kind in captions.items()
    }
    # the anchor bound: an ideal encoder maps each item onto the anchor's embedding of its canonical caption
    ideal = {m: run.embed_texts(model, [caption(f, m) for f in factors]) for m in MODALITIES}
    pairs: dict[str, dict[str, Any]] = {}
    for a in ALL_MODALITIES:
        for b in ALL_MODALITIES:
            if a == b:
                continue
            shared = shared_factors(a, b)
            entry: dict[str, Any] = {
                "query": a,
                "gallery": b,
                "shared_factors": list(shared),
                "trained_together": "text" in (a, b),
                "relation": "trained" if "text" in (a, b) else "emergent",
            }
            if not shared:
                entry.update(
                    relation="n/a", note="no shared factor", r1=None, r5=None, map=None, chance=None, ratio=None
                )
            else:
                other = b if a == "text" else a
                qa = text_emb[other]["templated"] if a == "text" else emb[a]
                gb = text_emb[other]["templated"] if b == "text" else emb[b]
                entry.update(pair_metrics(qa, gb, factor_positives(factors, shared)))
            pairs[f"{a}->{b}"] = entry
    text_queries = {}
    for m in MODALITIES:
        pos = factor_positives(factors, REVEALS[m])
        text_queries[m] = {}
        for kind in ("templated", "paraphrased"):
            q = text_emb[m][kind]
            q_pos = pos.repeat(len(q) // len(factors), 1)  # paraphrases: PARAPHRASE_DRAWS queries per scene
            e = pair_metrics(q, emb[m], q_pos)
            bound = pair_metrics(q, ideal[m], q_pos)["r1"]
            e.update(bound=bound, of_bound=e["r1"] / bound if bound else None, example=captions[m][kind][0])
            text_queries[m][kind] = e
    return {"pairs": pairs, "text_queries": text_queries, "embeddings": emb, "factors": factors}


def video_qa(model, records: Sequence[Any], video_embeddings: torch.Tensor) -> dict[str, dict[str, Any]]:
    """Zero-shot multiple-choice QA on the test videos (:mod:`bind_world.qa`: colour, motion, activity, shape; answers
    in the held-out paraphrase wording): per question type, accuracy, chance and their ratio."""
    from bind.qa import accuracy_by_type, multiple_choice_embeddings
    from bind_world.qa import QUESTION_TYPES, world_questions

    questions = world_questions(records, [t for t, q in QUESTION_TYPES.items() if q.modality == "video"])
    row = {r.id: i for i, r in enumerate(records)}
    pred, _ = multiple_choice_embeddings(
        model,
        video_embeddings[[row[q.id] for q in questions]],
        [q.question for q in questions],
        [q.choices for q in questions],
        [q.statement for q in questions],
    )
    correct = [int(p) == q.label for p, q in zip(pred.tolist(), questions)]
    return accuracy_by_type([q.qtype for q in questions], correct, {q.qtype: 1 / len(q.choices) for q in questions})


def summarize(pairs: dict[str, dict[str, Any]], text_queries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The headline numbers: modality -> text, text -> modality (templated vs paraphrased), emergent pairs."""

    def brief(e: dict[str, Any]) -> dict[str, float]:
        return {k: e[k] for k in ("r1", "chance", "ratio")}

    emergent = {k: brief(e) for k, e in pairs.items() if e["relation"] == "emergent"}
    ratios = [e["ratio"] for e in emergent.values()]
    return {
        "modality_to_text": {m: brief(pairs[f"{m}->text"]) for m in MODALITIES},
        "text_to_modality": {
            m: {
                kind: {**brief(v), "bound": v["bound"], "of_bound": v["of_bound"]}
                for kind, v in text_queries[m].items()
            }
            for m in MODALITIES
        },
        "emergent": emergent,
        "emergent_min_ratio": min(ratios) if ratios else None,
        "emergent_above_chance": sum(r > 1.0 for r in ratios),
        "emergent_pairs": len(ratios),
        "not_applicable": [k for k, e in pairs.items() if e["relation"] == "n/a"],
    }


# --- reporting -------------------------------------------------------------------------------------------------------
def _fmt(e: dict[str, Any]) -> str:
    return f"{e['r1']:6.3f} {e['chance']:7.3f} {e['ratio']:6.1f}x {e['r5']:6.3f} {e['map']:6.3f}"


def format_report(results: dict[str, Any]) -> str:
    """The R@1 tables printed at the end of the demo."""
    from bind.qa import format_accuracy_table

    pairs, tq = results["pairs"], results["text_queries"]
    head = f"{'R@1':>6} {'chance':>7} {'ratio':>7} {'R@5':>6} {'mAP':>6}"
    lines = [
        f"held-out test scenes: {results['test_scenes']}; positives = scenes agreeing on the shared factors; "
        "chance = mean fraction of positives",
        "",
        "modality -> text (trained pairs; each modality's own caption)",
        f"  {'query':<8} {'gallery':<8} {'shared factors':<26} {head}",
    ]
    for m in MODALITIES:
        e = pairs[f"{m}->text"]
        lines.append(f"  {m:<8} {'text':<8} {','.join(e['shared_factors']):<26} {_fmt(e)}")
    lines += [
        "",
        "text -> modality: training templates vs held-out paraphrases (wording never seen in training); bound = R@1 "
        "of an ideal encoder (each item at the anchor's embedding of its canonical caption)",
        f"  {'gallery':<8} {'queries':<12} {head} {'bound':>6} {'/bound':>6}",
    ]
    for m in MODALITIES:
        for kind in ("templated", "paraphrased"):
            e = tq[m][kind]
            of = f"{e['of_bound']:6.2f}" if e["of_bound"] is not None else f"{'n/a':>6}"
            lines.append(f"  {m:<8} {kind:<12} {_fmt(e)} {e['bound']:6.3f} {of}")
    lines += [
        "",
        "emergent pairs (never trained together; aligned only through the text anchor)",
        f"  {'query':<8} {'gallery':<8} {'shared factors':<26} {head}",
    ]
    for e in pairs.values():
        if e["relation"] == "emergent":
            lines.append(f"  {e['query']:<8} {e['gallery']:<8} {','.join(e['shared_factors']):<26} {_fmt(e)}")
    na = sorted({" <-> ".join(sorted((e["query"], e["gallery"]))) for e in pairs.values() if e["relation"] == "n/a"})
    lines.append(f"  n/a (no shared factor): {', '.join(na)}")
    lines += ["", "video QA, zero-shot multiple choice (answers in the held-out paraphrase wording)"]
    lines += ["  " + line for line in format_accuracy_table(results["video_qa"]).splitlines()]
    s = results["summary"]
    lines += [
        "",
        f"emergent pairs above chance: {s['emergent_above_chance']}/{s['emergent_pairs']} "
        f"(lowest ratio {s['emergent_min_ratio']:.1f}x)",
    ]
    return "\n".join(lines)


def r1_matrix(pairs: dict[str, dict[str, Any]]) -> dict[tuple[str, str], float]:
    return {(e["query"], e["gallery"]): e["r1"] for e in pairs.values() if e["r1"] is not None}


def plot_outputs(out: Path, evaluation: dict[str, Any], max_items: int = 40) -> list[Path]:
    """``r1_matrix.png`` (any-pair R@1) and ``similarity_<a>_<b>.png`` (test items sorted by their shared factors)."""
    from bind.retrieval.plots import plot_pair_matrix, plot_similarity

    paths = [
        plot_pair_matrix(
            r1_matrix(evaluation["pairs"]),
            list(ALL_MODALITIES),
            out / "r1_matrix.png",
            title="R@1 on held-out scenes (query rows, gallery columns; blank = no shared factor)",
        )
    ]
    a, b = SIMILARITY_PAIR
    shared = shared_factors(a, b)
    factors = evaluation["factors"]
    order = sorted(range(len(factors)), key=lambda i: tuple(FACTORS[f].index(factors[i][f]) for f in shared))
    order = order[:: max(1, len(order) // max_items)][:max_items]
    emb = evaluation["embeddings"]
    scores = emb[a][order] @ emb[b][order].T
    labels = ["/".join(factors[i][f] for f in shared) for i in order]
    paths.append(
        plot_similarity(
            scores,
            out / f"similarity_{a}_{b}.png",
            labels,
            labels,
            title=f"{a} -> {b} cosine similarity (emergent: never trained together)",
            xlabel=f"{b} (test scenes)",
            ylabel=f"{a} (test scenes)",
        )
    )
    return paths


def build_video_index(
    model, model_dir: Path, records: Sequence[Any], video_embeddings: torch.Tensor, out: Path
) -> Path:
    """A flat FAISS index of the test videos (``bindspace search --index OUT/index --text ...``)."""
    from bind.retrieval.index import Index
    from bind.retrieval.model_info import ModelInfo

    index = Index(ModelInfo.of(model, model_dir))
    index.add(video_embeddings, [r.id for r in records], [str(r.media["video"]) for r in records], "video")
    return index.save(out)


# --- the run ---------------------------------------------------------------------------------------------------------
def run_demo(
    out: str | Path, config: ExperimentConfig | None = None, echo=print, verbose: bool = False
) -> dict[str, Any]:
    """Run every stage (see the module docstring) and return the results written to ``OUT/results.json``."""
    import bind

    config = config or ExperimentConfig()
    out = Path(out)
    own = "".join(f", {m} {e}" for m, e in config.modality_epochs.items())
    echo(f"bindspace demo: {config.n} scenes, seed {config.seed}, {config.epochs} epochs{own} -> {out}")
    with WorldExperiment(out, config, echo=echo, verbose=verbose) as run:
        run.prepare()
        stage = run.stage
        t0 = time.perf_counter()
        result = run.train(out / "train")
        model_dir = result.model.eval().save_pretrained(out / "model")
        val = {k.split("/", 2)[2]: round(v, 3) for k, v in result.metrics.items() if k.startswith("val/R@1/")}
        stage(
            "train",
            t0,
            "validation R@1 m->text (exact caption): "
            + " ".join(f"{k.split('->')[0]} {v:.2f}" for k, v in val.items() if k.endswith("->" + ANCHOR)),
        )

        t0 = time.perf_counter()
        model = bind.load_model(model_dir).eval()  # the numbers below are those of the saved model
        test = run.split("test")
        evaluation = evaluate_pairs(model, test, run, config.seed)
        qa = video_qa(model, test, evaluation["embeddings"]["video"])
        plots = plot_outputs(out, evaluation)
        index_dir = build_video_index(model, model_dir, test, evaluation["embeddings"]["video"], out / "index")
        stage("eval", t0)
        world = run.world_summary()
    timings = stage.total()
    example_query = evaluation["text_queries"]["video"]["paraphrased"]["example"]
    results = {
        "world": {
            "scenes": config.n,
            "seed": config.seed,
            "splits": list(config.splits),
            "counts": world["counts"],
            "sha256": world["sha256"],
            "manifest": world["manifest"],
        },
        "model": {
            "name": MODEL_NAME,
            "directory": str(model_dir),
            "anchor": "text (frozen all-MiniLM-L6-v2)",
            "trained": list(config.modalities),
            "encoders": config.encoders,
        },
        "training": {
            "epochs": config.epochs,
            "modality_epochs": config.modality_epochs,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "modality_lr": config.modality_lr,
            "validation_r1_exact_caption": val,
            "loss": "per-modality InfoNCE against captions[m]",
        },
        "test_scenes": len(test),
        "relevance": "factor-level: positives agree on every factor both sides reveal (REVEALS); "
        "chance = mean over queries of #positives / gallery size",
        "pairs": evaluation["pairs"],
        "text_queries": evaluation["text_queries"],
        "video_qa": qa,
        "timings_s": timings,
        "config": {k: v for k, v in asdict(config).items() if k != "encoders"},
        "files": {
            "r1_matrix": str(plots[0]),
            "similarity": str(plots[1]),
            "index": str(index_dir),
            "model": str(model_dir),
        },
        "example_search": f'bindspace search --index {index_dir} --text "{example_query}" -k 5',
        "browse": f"bindspace serve --index {index_dir}",
    }
    results["summary"] = summarize(results["pairs"], results["text_queries"])
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    echo("")
    echo(format_report(results))
    echo("")
    echo("time per stage: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    echo(f"results -> {out / 'results.json'}; R@1 matrix -> {plots[0]}; similarity -> {plots[1]}")
    echo(f"model -> {model_dir} (bind.load_model); try:\n  {results['example_search']}")
    echo(f"look at the results in a web page (http://127.0.0.1:8080/):\n  {results['browse']}")
    return results


def demo_command(args: argparse.Namespace) -> int:
    """``bindspace demo`` (registered by :mod:`bind_world.cli`)."""
    overrides = experiment_overrides(args)
    if "epochs" in overrides:  # --epochs N: every modality's
        overrides["modality_epochs"] = {}
    if args.init_from:  # --init-from none: every encoder from scratch (and each at the common learning rate)
        overrides["init_from"] = dict(pair for pair in args.init_from if pair)
        overrides["modality_lr"] = None  # the default for the modalities started from another
    config = ExperimentConfig().shrunk(**overrides) if args.quick else ExperimentConfig(**overrides)
    verbose = args.show_libraries or getattr(args, "verbose", False)  # bindspace -v: debug logging as well
    run_demo(args.out, config, echo=lambda line: print(line, flush=True), verbose=verbose)
    return 0


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output directory")
    add_experiment_arguments(p, ExperimentConfig())
    p.add_argument(
        "--init-from",
        action="append",
        type=modality_pair,
        metavar="MODALITY=SOURCE",
        help="train SOURCE first, then start MODALITY's encoder from it (LanguageBind's recipe; default: video=image "
        "and depth=image, depth then at half the learning rate; 'none': every encoder from scratch)",
    )
    p.set_defaults(func=demo_command)


def modality_pair(text: str) -> tuple[str, str] | None:
    """``video=image`` -> ``("video", "image")``; ``none`` -> None (``--init-from``)."""
    if text.strip().lower() == "none":
        return None
    m, sep, src = text.partition("=")
    if not sep or not m or not src:
        raise argparse.ArgumentTypeError(f"expected MODALITY=SOURCE, e.g. video=image; got {text!r}")
    return m.strip(), src.strip()
