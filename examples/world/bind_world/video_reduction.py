"""``bindspace bench video-reduction``: world retrieval quality and embedding speed of video token reduction.

What it measures (issue #9: divided space-time attention and token reduction for long video, judged on retrieval
quality, not only speed): one seeded procedural world (:mod:`bind_world`; 64-pixel, 2-second, 16-frame videos) is
generated (or reused with ``--world DIR``), its videos and captions are decoded once into a
:class:`~bind.data.dataset.SampleCache`, and then a tiny video encoder (width 96, depth 2, 16 frames per clip by
default) is trained **alone** against the frozen all-MiniLM-L6-v2 text anchor of ``bind-minilm-tiny`` (the video
caption of each scene, language-anchored as in ``bindspace demo``) once per variant, with the same seed, data order and
schedule. The default variants:

* ``joint`` — joint space-time attention over every tubelet token (8 steps x 16 patches at 16 frames);
* ``joint+reduce_time2`` — tokens of every 2 consecutive tubelet steps averaged (``stem.reduce_time=2``);
* ``divided`` — divided space-time attention (TimeSformer / LanguageBind);
* ``divided+reduce_time2`` — both.

(``reduce_space<s>`` merges ``s x s`` patches, e.g. ``--variants joint joint+reduce_space2``.) Each trained encoder
is evaluated on the held-out test split with **factor-level relevance**
(:func:`bind_world.experiment.factor_positives`: a caption is a positive for a video when its scene agrees on every
factor the video caption names — shape, colour, motion, activity), video->text and text->video R@1 with the chance
level (mean fraction of positives), plus text->video with held-out paraphrased queries and a per-factor video->text
R@1 (positives agree on that one factor: ``motion`` is the factor that needs time). Speed: seconds per video to
embed the decoded test videos (batch ``--embed-batch``, ``torch.inference_mode``, median of ``--timing-repeats``
rounds that interleave the variants, so load from other jobs on a shared machine hits all of them alike), FLOPs per
video and token counts from the stem. The summary gives each reduced variant's R@1 minus its unreduced base's (same
attention) in points.

The run is a :class:`bind_world.experiment.WorldExperiment` (the demo's runner) whose config trains the video encoder
alone on a larger world with a test-heavy split; the variants are encoder overrides on top of it.

Command (about 10 minutes on 2 CPU cores; ``--quick`` is a smoke test)::

    bindspace bench video-reduction --json runs/bench/video-reduction.json

A world, Lightning logs and checkpoints go under ``--out`` (default ``runs/bench/video-reduction``). The R@1
deltas come from one seed; the JSON reports the number of test queries so the resolution (one query =
``100 / num_queries`` points) can be read beside them.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bind.bench.common import count_flops, environment, write_json
from bind_world.experiment import (
    MODEL_NAME,
    ExperimentConfig,
    WorldExperiment,
    add_experiment_arguments,
    experiment_overrides,
)

DEFAULT_VARIANTS = ("joint", "joint+reduce_time2", "divided", "divided+reduce_time2")
_REDUCTION = re.compile(r"^reduce_(time|space)(\d+)$")


#: the world run under the bench: the video encoder alone, a larger world, a test-heavy split, one torch thread,
#: its first epochs on 48-pixel clips (the 64-pixel encoder's 16-pixel patches: a 3 x 3 grid)
EXPERIMENT = ExperimentConfig(
    n=1000,
    threads=1,
    splits=(0.65, 0.05, 0.3),
    modalities=("video",),
    encoders={},
    modality_epochs={},
    progressive_resize={"video": {"scale": 0.75, "until": 0.77}},
)


@dataclass
class Config:
    """The bench: a world experiment (``--quick`` shrinks it to a smoke test), the video encoder and its variants."""

    experiment: ExperimentConfig = field(default_factory=lambda: ExperimentConfig(**asdict(EXPERIMENT)))
    frames: int = 16  #: frames per clip (the world's videos have 16)
    width: int = 96
    depth: int = 2
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    embed_batch: int = 32
    timing_repeats: int = 5

    @classmethod
    def quick_config(cls, **overrides: Any) -> Config:
        """A smoke test: :meth:`ExperimentConfig.shrunk` with a larger test split, two timing rounds;
        ``overrides`` of the experiment's fields (``n``, ``seed``, ...) or the bench's."""
        own = {k: overrides.pop(k) for k in list(overrides) if k in cls.__dataclass_fields__}
        return cls(experiment=EXPERIMENT.shrunk(splits=(0.6, 0.1, 0.3), **overrides), **{"timing_repeats": 2, **own})

    @classmethod
    def from_overrides(cls, **overrides: Any) -> Config:
        """The default bench with ``overrides`` of the experiment's fields or the bench's."""
        own = {k: overrides.pop(k) for k in list(overrides) if k in cls.__dataclass_fields__}
        return cls(experiment=ExperimentConfig(**{**asdict(EXPERIMENT), **overrides}), **own)

    def video(self) -> dict[str, Any]:
        """The video encoder every variant shares (``bind-minilm-tiny`` overrides)."""
        return {"width": self.width, "depth": self.depth, "preprocess": {"frames_per_clip": self.frames}}


@dataclass(frozen=True)
class Variant:
    """One encoder layout: ``attention`` plus the stem's reduction factors."""

    name: str
    attention: str
    reduce_time: int = 1
    reduce_space: int = 1
    stem: dict[str, int] = field(default_factory=dict, compare=False)

    @property
    def reduced(self) -> bool:
        return self.reduce_time > 1 or self.reduce_space > 1

    @property
    def base(self) -> str:
        """The name of the unreduced variant with the same attention."""
        return self.attention


def parse_variant(name: str) -> Variant:
    """``joint`` / ``divided``, optionally followed by ``+reduce_time<r>`` and / or ``+reduce_space<s>``."""
    attention, *parts = name.split("+")
    if attention not in ("joint", "divided"):
        raise ValueError(f"variant {name!r}: attention must be 'joint' or 'divided', got {attention!r}")
    stem: dict[str, int] = {}
    for part in parts:
        m = _REDUCTION.match(part)
        if not m or int(m.group(2)) < 1:
            raise ValueError(f"variant {name!r}: expected reduce_time<r> or reduce_space<s>, got {part!r}")
        stem[f"reduce_{m.group(1)}"] = int(m.group(2))
    return Variant(name, attention, stem.get("reduce_time", 1), stem.get("reduce_space", 1), stem)


def video_encoder_overrides(config: Config, variant: Variant) -> dict[str, dict[str, Any]]:
    """``encoders=`` overrides of ``bind-minilm-tiny`` for one variant (only the video encoder is trained)."""
    return {"video": {**config.video(), "attention": variant.attention, "stem": dict(variant.stem)}}


# --- measurement -----------------------------------------------------------------------------------------------------
def token_counts(encoder: Any, sample: torch.Tensor) -> dict[str, int]:
    """Tokens the trunk sees for one clip ``[C, T, H, W]``: ``tokens`` (stem output, CLS excluded),
    ``temporal_steps`` and ``patches_per_step`` after reduction, ``tokens_per_attention`` (the longest attention
    call: every token plus CLS for joint, one step's patches plus its CLS for divided)."""
    with torch.inference_mode():
        out = encoder.stem(sample[None])
    tokens = out.tokens if hasattr(out, "tokens") else out
    n_cls = int(encoder.cfg.num_cls_tokens)
    if tokens.dim() == 4:  # divided: [1, T', N, D]
        steps, patches = int(tokens.shape[1]), int(tokens.shape[2])
        per_attention = max(patches + n_cls, steps)
    else:
        stem = encoder.stem
        steps = -(-sample.shape[1] // stem.temporal_patch)
        if stem.reduce_time > 1 and steps > 1:
            steps = -(-steps // min(stem.reduce_time, steps))
        patches = int(tokens.shape[1]) // steps
        per_attention = int(tokens.shape[1]) + n_cls
    return {
        "tokens": steps * patches,
        "temporal_steps": steps,
        "patches_per_step": patches,
        "tokens_per_attention": per_attention,
    }


@torch.inference_mode()
def video_flops(encoder: Any, sample: torch.Tensor) -> int:
    """FLOPs of embedding one clip (:func:`bind.bench.common.count_flops`)."""
    return count_flops(lambda: encoder(sample[None]))


@torch.inference_mode()
def embed_seconds(model: Any, tensors: list[torch.Tensor], batch_size: int) -> float:
    """Wall seconds to embed ``tensors`` (decoded, transformed videos) in batches of ``batch_size``."""
    t0 = time.perf_counter()
    model.embed_tensors("video", tensors, batch_size=batch_size)
    return time.perf_counter() - t0


def r1_hits(queries: torch.Tensor, gallery: torch.Tensor, positives: torch.Tensor) -> np.ndarray:
    """Per query: 1.0 when the top-ranked gallery item is a positive (the mean is R@1)."""
    from bind.retrieval.metrics import retrieval_ranks

    ranks = retrieval_ranks(queries.float() @ gallery.float().T, positives)
    return (ranks <= 1).double().numpy()


DIRECTIONS = ("video->text", "text->video", "text->video_paraphrased")


def retrieval(
    video: torch.Tensor, text: torch.Tensor, paraphrased: torch.Tensor, factors: list[dict[str, str]]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Video <-> text R@1 (with chance) under factor-level relevance, paraphrased text -> video, and per-factor
    video -> text (positives agree on that one factor); plus the per-query top-1 hits of each direction."""
    from bind_world.experiment import factor_positives, pair_metrics, shared_factors

    shared = shared_factors("video", "text")
    pos = factor_positives(factors, shared)
    pairs = dict(zip(DIRECTIONS, ((video, text), (text, video), (paraphrased, video))))
    out: dict[str, Any] = {"shared_factors": list(shared)}
    out.update({key: pair_metrics(q, g, pos) for key, (q, g) in pairs.items()})
    out["per_factor_video->text"] = {f: pair_metrics(video, text, factor_positives(factors, (f,))) for f in shared}
    hits = {key: r1_hits(q, g, pos) for key, (q, g) in pairs.items()}
    return out, hits


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0) -> list[float]:
    """95% interval (percentile bootstrap over test queries, paired) of ``mean(a) - mean(b)``, in points."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (resamples, len(a)))
    d = 100 * (a[idx].mean(1) - b[idx].mean(1))
    return [round(float(np.percentile(d, 2.5)), 2), round(float(np.percentile(d, 97.5)), 2)]


def deltas(
    rows: dict[str, dict[str, Any]], variants: list[Variant], hits: dict[str, dict[str, np.ndarray]] | None = None
) -> dict[str, dict[str, Any]]:
    """For each reduced variant whose base was run: R@1 (reduced - base) in points (with a paired bootstrap 95%
    interval over test queries when ``hits`` are given), the speed-up, and the FLOP and token ratios."""
    out = {}
    for v in variants:
        if not v.reduced or v.base not in rows or v.name not in rows:
            continue
        r, b = rows[v.name], rows[v.base]
        entry: dict[str, Any] = {"base": v.base}
        for key in DIRECTIONS:
            entry[f"{key}_r1_points"] = round(100 * (r["retrieval"][key]["r1"] - b["retrieval"][key]["r1"]), 2)
            if hits is not None:
                entry[f"{key}_r1_points_ci95"] = paired_bootstrap(hits[v.name][key], hits[v.base][key])
        entry["per_factor_video->text_r1_points"] = {
            f: round(100 * (m["r1"] - b["retrieval"]["per_factor_video->text"][f]["r1"]), 2)
            for f, m in r["retrieval"]["per_factor_video->text"].items()
        }
        entry["within_2_points"] = all(abs(entry[f"{k}_r1_points"]) <= 2.0 for k in ("video->text", "text->video"))
        entry["speedup"] = b["seconds_per_video"] / r["seconds_per_video"]
        entry["flops_ratio"] = r["gflops_per_video"] / b["gflops_per_video"]
        entry["token_ratio"] = r["tokens"]["tokens"] / b["tokens"]["tokens"]
        out[v.name] = entry
    return out


# --- the run ---------------------------------------------------------------------------------------------------------
def run(
    out: str | Path,
    config: Config | None = None,
    world: str | Path | None = None,
    echo: Any = print,
    verbose: bool = False,
) -> dict[str, Any]:
    """Generate / reuse the world, decode once, train and evaluate every variant; returns the result JSON."""
    config = config or Config()
    variants = [parse_variant(v) for v in config.variants]
    if len({v.name for v in variants}) != len(variants):
        raise ValueError(f"duplicate variants in {config.variants}")
    c = replace(config.experiment, encoders={"video": config.video()})
    echo(
        f"bindspace bench video-reduction: {c.n} scenes, {config.frames} frames/clip, {c.epochs} epochs, "
        f"variants {', '.join(v.name for v in variants)} -> {out}"
    )
    with WorldExperiment(out, c, world=world, echo=echo, verbose=verbose) as experiment:
        experiment.prepare([video_encoder_overrides(config, v) for v in variants])
        return _train_and_measure(config, variants, experiment)


def _train_and_measure(config: Config, variants: list[Variant], experiment: WorldExperiment) -> dict[str, Any]:
    """Train, evaluate and time every variant (after the world is ready and its videos decoded)."""
    from bind_world.captions import paraphrase

    c, test, stage = experiment.config, experiment.split("test"), experiment.stage
    factors = [r.factors for r in test]
    test_videos = experiment.samples("video", test)
    rng = np.random.default_rng([c.seed, 0xDE70])  # the demo's paraphrase stream
    captions = [r.captions["video"][0] for r in test]
    paraphrases = [paraphrase(f, "video", rng) for f in factors]

    rows: dict[str, dict[str, Any]] = {}
    hits: dict[str, dict[str, np.ndarray]] = {}
    models: dict[str, Any] = {}
    for v in variants:
        t0 = time.perf_counter()
        encoders = video_encoder_overrides(config, v)
        result = experiment.train(experiment.out / "train" / v.name, label=f"train {v.name}", encoders=encoders)
        train_s = time.perf_counter() - t0
        model = result.model.eval()
        video_emb = model.embed_tensors("video", test_videos, batch_size=config.embed_batch)
        text_emb, para_emb = experiment.embed_texts(model, captions), experiment.embed_texts(model, paraphrases)
        encoder = model.encoder("video")
        sample = test_videos[0]
        flops = video_flops(encoder, sample)
        metrics, hits[v.name] = retrieval(video_emb, text_emb, para_emb, factors)
        rows[v.name] = {
            "attention": v.attention,
            "reduce_time": v.reduce_time,
            "reduce_space": v.reduce_space,
            "encoder_overrides": c.encoders_with(encoders)["video"],
            "tokens": token_counts(encoder, sample),
            "params_m": sum(p.numel() for p in encoder.parameters()) / 1e6,
            "gflops_per_video": flops / 1e9,
            "retrieval": metrics,
            "validation": {k: round(float(x), 4) for k, x in result.metrics.items() if "video" in k},
            "train_seconds": round(train_s, 2),
        }
        models[v.name] = model
        r = rows[v.name]["retrieval"]
        stage(
            f"train+eval {v.name}",
            t0,
            f"video->text R@1 {r['video->text']['r1']:.3f}, text->video R@1 "
            f"{r['text->video']['r1']:.3f} (chance {r['video->text']['chance']:.4f}), "
            f"{rows[v.name]['tokens']['tokens']} tokens",
        )

    t0 = time.perf_counter()  # interleaved rounds: load from other jobs hits every variant alike
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    for model in models.values():  # warm-up (thread pools, allocator)
        embed_seconds(model, test_videos[: config.embed_batch], config.embed_batch)
    for _ in range(max(1, config.timing_repeats)):
        for name, model in models.items():
            samples[name].append(embed_seconds(model, test_videos, config.embed_batch) / len(test_videos))
    for name, secs in samples.items():
        rows[name]["seconds_per_video"] = float(np.median(secs))
        rows[name]["seconds_per_video_rounds"] = [round(s, 6) for s in secs]
    stage("timing", t0)
    timings = stage.total()

    world = experiment.world_summary()
    results = {
        "suite": "video-reduction",
        "world": {k: world[k] for k in ("manifest", "reused", "scenes", "counts", "seed", "sha256")},
        "model": {"name": MODEL_NAME, "anchor": "text (frozen all-MiniLM-L6-v2)", "trained": ["video"]},
        "relevance": "factor-level: a caption is a positive for a video when the scenes agree on every factor the "
        "video caption names (shape, colour, motion, activity); chance = mean over queries of "
        "#positives / gallery size; per_factor: positives agree on that factor only",
        "timing": f"seconds per video: median over {config.timing_repeats} interleaved rounds of embedding the "
        f"{len(test)} decoded test videos in batches of {config.embed_batch} (inference_mode, "
        f"{torch.get_num_threads()} threads)",
        "test_scenes": len(test),
        "config": asdict(config),
        "variants": rows,
        "deltas_vs_unreduced": deltas(rows, variants, hits),
        "timings_s": timings,
        "env": environment(),
    }
    echo = experiment.echo
    echo("")
    echo(format_table(results))
    return results


def format_table(results: dict[str, Any]) -> str:
    """The printed table: R@1 both directions with chance, paraphrase and motion R@1, speed, tokens; then deltas."""
    rows = results["variants"]
    head = (
        f"{'variant':<22} {'v->t R@1':>8} {'t->v R@1':>8} {'chance':>7} {'para t->v':>9} {'motion v->t':>11} "
        f"{'ms/video':>9} {'GFLOP':>6} {'tokens':>6} {'steps':>5}"
    )
    lines = [
        f"held-out test scenes: {results['test_scenes']} (one query = {100 / results['test_scenes']:.2f} "
        "points); factor-level relevance",
        head,
    ]
    for name, r in rows.items():
        ret = r["retrieval"]
        motion = ret["per_factor_video->text"].get("motion", {"r1": float("nan")})
        lines.append(
            f"{name:<22} {ret['video->text']['r1']:8.3f} {ret['text->video']['r1']:8.3f} "
            f"{ret['video->text']['chance']:7.4f} {ret['text->video_paraphrased']['r1']:9.3f} "
            f"{motion['r1']:11.3f} {1000 * r['seconds_per_video']:9.3f} {r['gflops_per_video']:6.3f} "
            f"{r['tokens']['tokens']:6d} {r['tokens']['temporal_steps']:5d}"
        )
    d = results["deltas_vs_unreduced"]
    if d:

        def pts(e: dict[str, Any], key: str) -> str:
            ci = e.get(f"{key}_r1_points_ci95")
            return f"{e[f'{key}_r1_points']:+6.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")

        lines += [
            "",
            "reduced - unreduced (same attention), R@1 points [paired bootstrap 95% over test queries]:",
            f"{'variant':<22} {'base':<8} {'v->t':>22} {'t->v':>22} {'para':>6} {'motion':>6} "
            f"{'|d|<=2':>6} {'speed-up':>8} {'FLOPs':>6} {'tokens':>6}",
        ]
        for name, e in d.items():
            motion = e["per_factor_video->text_r1_points"].get("motion", float("nan"))
            lines.append(
                f"{name:<22} {e['base']:<8} {pts(e, 'video->text'):>22} {pts(e, 'text->video'):>22} "
                f"{e['text->video_paraphrased_r1_points']:+6.2f} {motion:+6.2f} "
                f"{str(e['within_2_points']):>6} {e['speedup']:7.2f}x {e['flops_ratio']:5.2f}x "
                f"{e['token_ratio']:5.2f}x"
            )
    lines.append("time per stage: " + ", ".join(f"{k} {v:.1f}s" for k, v in results["timings_s"].items()))
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    overrides = experiment_overrides(args, "frames", "threads")
    if args.variants:
        overrides["variants"] = tuple(args.variants)
    config = Config.quick_config(**overrides) if args.quick else Config.from_overrides(**overrides)
    out = args.out or ("runs/bench/video-reduction-quick" if args.quick else "runs/bench/video-reduction")
    results = run(
        out,
        config,
        world=args.world,
        echo=lambda s: print(s, flush=True),
        verbose=args.show_libraries or getattr(args, "verbose", False),
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"results -> {args.json}")
    else:
        write_json(results, None)
    return 0


def add_suite(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("video-reduction", help="world retrieval R@1 and embedding speed of video token reduction")
    p.add_argument("--world", default=None, help="an existing world (directory or manifest) instead of generating")
    p.add_argument("--out", default=None, help="world, logs and checkpoints (default runs/bench/video-reduction)")
    add_experiment_arguments(p, EXPERIMENT)
    p.add_argument("--frames", type=int, default=None, help=f"frames per clip (default {Config.frames})")
    p.add_argument("--threads", type=int, default=None, help="torch threads for training and timing (default 1)")
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="joint|divided[+reduce_time<r>][+reduce_space<s>] (default: " + " ".join(DEFAULT_VARIANTS) + ")",
    )
    p.add_argument("--json", default=None, help="write the result JSON here")
    p.set_defaults(func=_run)
