"""The world-experiment runner: one language-anchored training run (or several variants of one) on a procedural
world, shared by ``bindspace demo`` (:mod:`bind_world.demo`) and ``bindspace bench video-reduction``
(:mod:`bind_world.video_reduction`). An application on top of the library: it generates (or reuses) a world, decodes
its media once into a :class:`~bind.data.dataset.SampleCache`, trains encoders of ``bind-minilm-tiny`` against the
frozen MiniLM text anchor with :func:`bind.train.fit`, and embeds held-out scenes through the library's batched path
(:meth:`bind.BindModel.embed_tensors`).

Relevance is **factor-level**: scenes share factor values, so a gallery item is a positive of a query when the two
scenes agree on every factor both sides reveal (:data:`bind_world.REVEALS`; text stands for the caption of the other
modality). Chance R@1 is the mean over queries of ``#positives / gallery size``.

Output: one line per stage and one per training epoch (stage, epoch, step, loss, ETA); the training libraries'
messages, warnings and progress bars only with ``verbose``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bind_world.scene import FACTORS, MODALITIES, REVEALS

MODEL_NAME = "bind-minilm-tiny"
ANCHOR = "text"
#: encoder overrides of ``bind-minilm-tiny`` for world runs (every modality reads the world's 64-pixel, 2-second media).
#: The recipe behind the demo's numbers (README, "The demo"): convolutional stems (Xiao et al. 2021) under 8-pixel
#: patches for the 64-pixel maps — shape recognition from 0.67 to 0.89 for images; depth's missing pixels filled from
#: the nearest valid one (``invalid: inpaint``): read as the nearest possible surface, their salt noise hid far objects
#: (shape 0.57 -> 0.78 read as far instead), and read as far they eroded the outline the sensor drops pixels along
#: (depth->text 0.78 / 0.77 -> 0.89 / 0.90, far objects 0.53 -> 0.76, paraphrases / bound 0.74 / 0.69 -> 0.83 / 0.82
#: over two seeds, fp32); video over the whole clip with each frame's difference from the previous one (TSN's RGB
#: difference), which lets the encoder see the camera holder's step rhythm (activity from 0.35 to 0.85) — what ties
#: video to IMU; video conv kernels spanning 3 frames under 8-pixel, 4-frame tubelets, which see the object's own motion
#: (a supervised motion probe 0.58 -> 0.71); and random 4-pixel shifts of the clips in training (``train_shift``, DrQ)
#: with more epochs for video (``ExperimentConfig.modality_epochs``): zero-shot motion 0.58 -> 0.73, all four of the
#: video caption's factors right 0.37 -> 0.54 in video-only runs; see also ``ExperimentConfig.anchor_whitening``.
CONV_STEM = {"patch_size": 8, "conv": [24, 48]}
WORLD_ENCODERS: dict[str, dict[str, Any]] = {
    # the image stem's channels are video's too (``init_from``: video starts from the image encoder)
    "image": {"width": 96, "depth": 2, "stem": {"patch_size": 8, "conv": [16, 32]}},
    "depth": {"width": 96, "depth": 2, "stem": dict(CONV_STEM), "preprocess": {"invalid": "inpaint"}},
    "thermal": {"width": 96, "depth": 2, "stem": dict(CONV_STEM)},
    "video": {
        "width": 96,
        "depth": 2,
        "stem": {
            "patch_size": 8,
            "temporal_patch": 4,
            "conv": [16, 32],
            "conv_time_kernel": 3,
            "frame_difference": True,
        },
        # 48-pixel clips (the world renders 64): from the image encoder, two seeds, text->video 0.85 / 0.79 -> 0.76 /
        # 0.79, paraphrases / bound 0.72 / 0.72 -> 0.74 / 0.74, the video stage about 40 % cheaper (README, "The demo")
        "preprocess": {"frames_per_clip": 8, "train_shift": 4, "size": 48, "crop_size": 48},
    },
    # 64 mel bins (VGGish's and PANNs' count; ImageBind's 128): 4 frequency patches of 16, half the tokens — audio's
    # part of the first stage 50 -> 27 s on the AVX2 path, audio->text 0.858 -> 0.871, paraphrases / bound 1.17 -> 1.23
    "audio": {"width": 96, "depth": 2, "preprocess": {"num_mel_bins": 64}},
    "imu": {"width": 96, "depth": 2, "preprocess": {"window": 400}},
}
#: ``ExperimentConfig.init_from`` when not given, for the modalities trained
DEFAULT_INIT_FROM = {"video": "image", "depth": "image"}
#: ``ExperimentConfig.modality_lr`` when not given, for the modalities started from another encoder (``init_from``)
DEFAULT_MODALITY_LR = {"depth": 1e-3}
#: what ``--quick`` changes: a tiny world and one epoch (a smoke test)
QUICK = dict(n=40, epochs=1, modality_epochs={}, batch_size=8, warmup_steps=0, splits=(0.7, 0.1, 0.2), quick=True)
#: loggers quieted unless ``verbose`` (their warnings still show)
QUIET_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning", "bind.train", "bind_world", "transformers")


@dataclass
class ExperimentConfig:
    """The world and the training schedule of a world experiment."""

    n: int = 2400  #: scenes in the world (with 800, every encoder overfitted after 5 epochs)
    seed: int = 0  #: world and training seed
    #: (16, from 12, once reduced-precision CPU training ran SDPA's math kernel: the first stage went 141 -> 83 s, and
    #: the four epochs back lifted depth->text 0.79 -> 0.83 in the whole demo)
    epochs: int = 16
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 20
    weight_decay: float = 0.05
    #: the loss space's whitening per modality (:class:`bind.train.module.BindTrainModule`): video's captions name four
    #: factors and motion in a word or two, which the anchor barely separates (object motion 0.35 -> 0.61 zero-shot)
    anchor_whitening: dict[str, float] = field(default_factory=lambda: {"video": 0.3})
    #: the cosine pull of each embedding onto its own caption's anchor embedding, per modality
    #: (:class:`bind.train.module.BindTrainModule`). Video at 0.5 without a queue: paraphrases / bound 0.52 -> 0.55 and
    #: 0.42 -> 0.55 over two starts (video-only runs); with the queue below the ranking holds up to 5 (paraphrases 0.55
    #: at 0.5, 0.67 at 2, 0.63-0.70 at 5 over two runs; at 10 motion collapsed). Not depth: at 1, trained with image and
    #: audio as in the demo, its paraphrases / bound fell over three starts (0.66, 0.70, 0.74 -> 0.64, 0.61, 0.66)
    anchor_alignment: dict[str, float] = field(default_factory=lambda: {"video": 5.0})
    #: the queue of earlier batches' caption embeddings scored as more negatives, per modality
    #: (:class:`bind.train.module.BindTrainModule`): a batch of 64 rarely holds a video caption that differs from the
    #: positive in one factor (720 combinations); 2048 queued ones lifted all four factors right 0.57 -> 0.63
    anchor_queue: dict[str, int] = field(default_factory=lambda: {"video": 2048})
    #: progressive resizing per modality (:class:`bind.train.module.BindTrainModule`): video trains its first 20 of
    #: 26 epochs on 32-pixel clips (2/3 of its 48), a step costing about half (README, "The demo": first measured as
    #: 64 -> 48 pixels, video-only, seed 0: the stage 168 -> 127 s, paraphrases / bound 0.705 -> 0.719)
    progressive_resize: dict[str, dict[str, float] | list[dict[str, float]]] = field(
        default_factory=lambda: {"video": {"scale": 2 / 3, "until": 0.77}}
    )
    #: ``{modality: source}``: train ``source`` first (with every modality not listed), then start ``modality``'s
    #: encoder from it (:func:`bind.init.bind_vit_weights`, LanguageBind's recipe) and train it against text alone;
    #: a convolutional stem takes its source's channels, so the trained one loads. None: :data:`DEFAULT_INIT_FROM`
    #: where both modalities are trained; ``{}``: every encoder from scratch. Video from the image encoder, in
    #: video-only runs after image's 16 epochs, seeds 0 / 1: text->video 0.762 / 0.783 -> 0.808 / 0.796, paraphrases /
    #: bound 0.719 / 0.690 -> 0.761 / 0.693 (README, "The demo"; under the recipe before the queue, the pull and the
    #: shift it had traded activity for shape). Depth from the image encoder, at ``modality_lr`` below, depth-only
    #: runs after image's 16 epochs, seeds 0 / 1 / 2: paraphrases / bound 0.64 / 0.58 / 0.72 -> 0.81 / 0.81 / 0.76,
    #: templated text->depth 0.95 / 0.76 / 0.93 -> 0.98 / 0.94 / 0.97, depth->text 0.84 / 0.80 / 0.90 -> 0.83 / 0.84 /
    #: 0.83 (its stem takes image's narrower channels, so the stage is cheaper too)
    init_from: dict[str, str] | None = None
    #: ``{modality: learning rate}`` for modalities that train at another rate than ``lr``, in a stage of their own.
    #: None: :data:`DEFAULT_MODALITY_LR` for the modalities started from another encoder — depth, started from the
    #: trained image encoder, fine-tunes at half the rate (at the full rate, the same three seeds: paraphrases /
    #: bound 0.85 / 0.64 / 0.67)
    modality_lr: dict[str, float] | None = None
    #: ``{modality: epochs}`` for modalities that train longer (or shorter) than ``epochs``: each such group trains in
    #: a stage of its own and :meth:`bind.BindModel.add_encoders` joins them — every loss is per modality against
    #: the frozen anchor, so this is the joint run with their own schedules. Video, shifted at random in training
    #: (``train_shift``), still improves after 16 epochs (20: all four factors right 0.54 -> 0.57, paraphrases /
    #: bound 0.55 -> 0.59 in video-only runs with ``anchor_alignment``; 14 with the queue: 0.63 -> 0.39) and after 20
    #: with the queue (26: all four 0.575 -> 0.65, paraphrases 0.67 -> 0.69; 30 in the whole demo: recognition up
    #: again, video->text 0.81 -> 0.84, paraphrases not, 0.70 -> 0.67, for 28 s more). Thermal and IMU are learnt in
    #: 8 (thermal shape 0.93, temperature 1.0; IMU activity 1.0), which buys video's time. Depth trains 12: it
    #: overfits its captions' wording — paraphrases / bound 0.49, 0.53 at 20 epochs, 0.67, 0.65, 0.72 at 16, 0.76,
    #: 0.74 at 12 over starts (trained with image and audio), depth->text 0.84-0.86 at 12.
    #: ``--epochs`` on the command line sets every modality's
    modality_epochs: dict[str, int] = field(default_factory=lambda: {"video": 26, "depth": 12, "thermal": 8, "imu": 8})
    #: validate during training after every that many epochs of a stage (and once at its end): validation changes
    #: nothing in the run (same weights), and after every epoch it cost the demo about 30 s
    val_every_n_epochs: int = 4
    workers: int = 2  #: processes rendering the world and decoding media
    threads: int | None = None  #: torch threads for training and evaluation (default: min(CPUs, workers))
    splits: tuple[float, float, float] = (0.85, 0.05, 0.1)  #: train / val / test fractions
    modalities: tuple[str, ...] = MODALITIES  #: trained against the text anchor
    encoders: dict[str, dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(WORLD_ENCODERS))
    quick: bool = False

    def __post_init__(self) -> None:
        trained = set(self.modalities)
        if self.init_from is None:  # the default where both are trained: video from image
            self.init_from = {m: s for m, s in DEFAULT_INIT_FROM.items() if {m, s} <= trained}
        unknown = {m: e for m, e in self.modality_epochs.items() if m not in MODALITIES or int(e) < 1}
        if unknown:
            raise ValueError(f"modality_epochs {unknown}: each must be one of {MODALITIES}, with epochs >= 1")
        self.modality_epochs = {m: int(e) for m, e in self.modality_epochs.items() if m in trained}  # others: unused
        if self.modality_lr is None:  # the default where a modality starts from another encoder
            self.modality_lr = {m: v for m, v in DEFAULT_MODALITY_LR.items() if m in self.init_from}
        bad_lr = {m: v for m, v in self.modality_lr.items() if m not in MODALITIES or not float(v) > 0}
        if bad_lr:
            raise ValueError(f"modality_lr {bad_lr}: each must be one of {MODALITIES}, with a learning rate > 0")
        self.modality_lr = {m: float(v) for m, v in self.modality_lr.items() if m in trained}
        later = {*self.init_from, *self.modality_epochs, *self.modality_lr}  # trained after the first stage
        bad = {m: s for m, s in self.init_from.items() if {m, s} - trained or s in later}
        if bad:
            raise ValueError(
                f"init_from {bad}: each source must be a different modality trained here in the first stage (not "
                f"started from another, no modality_epochs or modality_lr of its own; trained: "
                f"{', '.join(self.modalities)})"
            )
        self.encoders = copy.deepcopy(self.encoders)
        for m, src in self.init_from.items():
            conv = self.encoders.get(src, {}).get("stem", {}).get("conv")
            if conv and self.encoders.get(m, {}).get("stem", {}).get("conv"):  # a new dict: stems may be shared
                self.encoders[m] = {**self.encoders[m], "stem": {**self.encoders[m]["stem"], "conv": list(conv)}}

    def shrunk(self, **overrides: Any) -> ExperimentConfig:
        """This config with :data:`QUICK` (and then ``overrides``) applied."""
        return replace(self, **{**QUICK, **overrides})

    def encoders_with(self, variant: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
        """:attr:`encoders` with a variant's per-modality keys (``attention``, ``stem``, ...) set over them."""
        out = copy.deepcopy(self.encoders)
        for m, over in (variant or {}).items():
            out[m] = {**out.get(m, {}), **copy.deepcopy(over)}
        return out


def add_experiment_arguments(p: argparse.ArgumentParser, defaults: ExperimentConfig) -> None:
    """The options every world experiment command shares (read back by :func:`experiment_overrides`)."""
    p.add_argument("--n", type=int, default=None, help=f"scenes to generate (default {defaults.n}; --quick: 40)")
    p.add_argument("--seed", type=int, default=None, help="world and training seed (default 0)")
    own = "".join(f", {m} {e}" for m, e in defaults.modality_epochs.items())
    p.add_argument("--epochs", type=int, default=None, help=f"every modality's epochs (default {defaults.epochs}{own})")
    p.add_argument("--workers", type=int, default=None, help="processes for rendering and decoding (default 2)")
    p.add_argument("--quick", action="store_true", help="a tiny world and one epoch: a smoke test")
    p.add_argument(
        "--verbose",
        action="store_true",
        dest="show_libraries",
        help="also show the training libraries' messages, warnings and model summary (bindspace -v: and debug logging)",
    )


def experiment_overrides(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The config fields given on the command line: :func:`add_experiment_arguments`' and ``names``."""
    return {k: getattr(args, k) for k in ("n", "seed", "epochs", "workers", *names) if getattr(args, k) is not None}


# --- relevance -------------------------------------------------------------------------------------------------------
def revealed(modality: str, text_for: str | None = None) -> tuple[str, ...]:
    """Factors a modality's signal determines; for text, those named by the caption of ``text_for``."""
    return REVEALS[text_for if modality == ANCHOR else modality]


def shared_factors(query: str, gallery: str) -> tuple[str, ...]:
    """Factors both sides reveal (text <-> m: the caption of m names ``REVEALS[m]``)."""
    other = gallery if query == ANCHOR else query
    a, b = revealed(query, other), revealed(gallery, other)
    return tuple(f for f in FACTORS if f in a and f in b)


def factor_positives(factors: Sequence[dict[str, str]], names: Sequence[str]) -> torch.Tensor:
    """Boolean ``[N, N]``: scenes ``i`` and ``j`` agree on every factor in ``names``."""
    pos = torch.ones(len(factors), len(factors), dtype=torch.bool)
    for name in names:
        codes = torch.tensor([FACTORS[name].index(f[name]) for f in factors])
        pos &= codes[:, None] == codes[None, :]
    return pos


def pair_metrics(queries: torch.Tensor, gallery: torch.Tensor, positives: torch.Tensor) -> dict[str, float]:
    """R@1, R@5, mAP of unit-norm ``queries`` against ``gallery``, with chance R@1 and the ratio to it."""
    from bind.retrieval.metrics import retrieval_metrics

    m = retrieval_metrics(queries.float() @ gallery.float().T, positives, ks=(1, 5))
    chance = float(positives.double().mean(1).mean())
    return {
        "r1": m["recall@1"],
        "r5": m["recall@5"],
        "map": m["mAP"],
        "chance": chance,
        "ratio": m["recall@1"] / chance,
        "num_queries": m["num_queries"],
        "gallery_size": int(gallery.shape[0]),
    }


# --- world -----------------------------------------------------------------------------------------------------------
def world_digest(root: Path) -> str:
    """SHA-256 over the manifest, ``world.json`` and every media file (names and bytes, sorted by name)."""
    h = hashlib.sha256()
    files = [root / "manifest.jsonl", root / "world.json", *sorted((root / "media").iterdir())]
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def preprocess_configs(encoders: dict[str, dict[str, Any]], modalities: Sequence[str]) -> dict[str, Any]:
    """The preprocessing of the text anchor and ``modalities`` in ``bind-minilm-tiny`` under ``encoders`` overrides
    (what the training run will ask the sample cache for)."""
    from bind.factory import named_config
    from bind.registry import get_modality

    cfg = named_config(MODEL_NAME, [ANCHOR, *modalities], encoders)
    return {m: get_modality(m).preprocess_config(e.preprocess) for m, e in cfg.encoders.items()}


def find_or_generate_world(
    out: Path, config: ExperimentConfig, world: str | Path | None = None, echo: Callable[[str], Any] = print
) -> tuple[Path, bool]:
    """The manifest to use and whether it existed: ``world`` (a directory or manifest) when given, else ``out/world``
    (reused when its ``world.json`` matches ``n``, ``seed``, the split fractions and the generator's version,
    generated otherwise)."""
    from bind_world.generator import WORLD_VERSION, generate

    if world is not None:
        path = Path(world)
        manifest = path / "manifest.jsonl" if path.is_dir() else path
        if not manifest.is_file():
            raise FileNotFoundError(f"--world: no manifest at {manifest}")
        return manifest, True
    root = out / "world"
    spec_path = root / "world.json"
    if spec_path.is_file() and (root / "manifest.jsonl").is_file():
        spec = json.loads(spec_path.read_text())
        total = float(sum(config.splits))
        wanted = [f / total for f in config.splits]
        have = [float(spec["splits"][s]) / sum(spec["splits"].values()) for s in ("train", "val", "test")]
        if (
            spec.get("n") == config.n
            and spec.get("seed") == config.seed
            and np.allclose(have, wanted)
            and spec.get("version", WORLD_VERSION) == WORLD_VERSION
        ):
            echo(f"  reusing the world at {root} ({config.n} scenes, seed {config.seed})")
            return root / "manifest.jsonl", True
    return generate(root, config.n, seed=config.seed, workers=config.workers, splits=config.splits), False


# --- output ----------------------------------------------------------------------------------------------------------
class StageTimer:
    """Wall seconds of named stages, echoed as each ends; :meth:`total` adds the whole run's."""

    def __init__(self, echo: Callable[[str], Any] = print) -> None:
        self.echo, self.start, self.timings = echo, time.perf_counter(), {}

    def __call__(self, name: str, t0: float, note: str = "") -> None:
        self.timings[name] = round(time.perf_counter() - t0, 2)
        self.echo(f"[{name}] {self.timings[name]:.1f}s" + (f"  {note}" if note else ""))

    def total(self) -> dict[str, float]:
        self.timings["total"] = round(time.perf_counter() - self.start, 2)
        return self.timings


@contextlib.contextmanager
def quiet_libraries(verbose: bool = False) -> Iterator[None]:
    """Unless ``verbose``: Lightning / transformers INFO lines, Python warnings and the weight-loading progress bars
    off for the duration (levels and filters restored after)."""
    if verbose:
        yield
        return
    from transformers.utils import logging as hf_logging

    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    bars = not hf_logging.is_progress_bar_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in QUIET_LOGGERS:  # after importing lightning: its import sets its own level to INFO
            logging.getLogger(name).setLevel(logging.WARNING)
        hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            if not bars:
                hf_logging.enable_progress_bar()


# --- the runner ------------------------------------------------------------------------------------------------------
class WorldExperiment:
    """Prepare a world once (generate or reuse, decode every medium the runs read), then train any number of encoder
    variants on it and embed its scenes from the decoded cache. Use as a context manager: it quiets the libraries
    (unless ``verbose``) and restores torch's thread count at the end."""

    def __init__(
        self,
        out: str | Path,
        config: ExperimentConfig,
        *,
        world: str | Path | None = None,
        echo: Callable[[str], Any] = print,
        verbose: bool = False,
    ) -> None:
        self.out, self.config, self.world, self.echo, self.verbose = Path(out), config, world, echo, verbose
        self.stage = StageTimer(echo)
        self.manifest: Path | None = None
        self.reused = False
        self.records: list[Any] = []
        self.preprocess: dict[str, Any] = {}
        self.cache: Any = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> WorldExperiment:
        self.out.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self._stack.enter_context(quiet_libraries(self.verbose))
        threads = torch.get_num_threads()
        self._stack.callback(torch.set_num_threads, threads)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    # --- data ------------------------------------------------------------------------------------------------------
    def prepare(self, encoder_variants: Sequence[dict[str, dict[str, Any]]] = ()) -> None:
        """Generate or reuse the world, then decode every medium of ``config.modalities`` once. Every entry of
        ``encoder_variants`` (overrides beside ``config.encoders``) must preprocess alike, so one cache serves all."""
        from bind.data.dataset import SampleCache
        from bind.data.manifest import read_manifest

        c = self.config
        t0 = time.perf_counter()
        self.manifest, self.reused = find_or_generate_world(self.out, c, self.world, self.echo)
        self.stage("world", t0, f"{'reused' if self.reused else 'generated'} {self.manifest}")

        t0 = time.perf_counter()
        self.preprocess = preprocess_configs(c.encoders, c.modalities)
        for variant in encoder_variants:
            other = preprocess_configs(c.encoders_with(variant), c.modalities)
            changed = [m for m in c.modalities if other[m] != self.preprocess[m]]
            if changed:
                raise ValueError(f"encoder variant {variant} changes the preprocessing of {changed}")
        self.records = [r for r in read_manifest(self.manifest) if all(m in r.media for m in c.modalities)]
        if not self.split("test") or not self.split("train"):
            raise ValueError(f"{self.manifest}: needs train and test scenes with {', '.join(c.modalities)}")
        self.cache = SampleCache()
        decoded = self.cache.fill(
            [(m, r.media[m]) for r in self.records for m in c.modalities], self.preprocess, workers=c.workers
        )
        self.stage("decode", t0, f"{decoded} media of {len(self.records)} scenes, decoded once for every epoch")

    def split(self, name: str) -> list[Any]:
        return [r for r in self.records if r.split == name]

    def world_summary(self) -> dict[str, Any]:
        """Scene counts per split, seed and SHA-256 of the world (None for a world given from elsewhere without
        ``world.json``)."""
        root = self.manifest.parent
        spec = json.loads((root / "world.json").read_text()) if (root / "world.json").is_file() else {}
        return {
            "manifest": str(self.manifest),
            "reused": self.reused,
            "scenes": len(self.records),
            "counts": {s: len(self.split(s)) for s in ("train", "val", "test")},
            "seed": spec.get("seed"),
            "sha256": world_digest(root) if spec else None,
        }

    # --- training --------------------------------------------------------------------------------------------------
    def train(self, run_dir: Path, label: str = "train", encoders: dict[str, dict[str, Any]] | None = None) -> Any:
        """:func:`bind.train.fit` of ``config.modalities`` (encoder ``encoders`` overrides beside the config's) on the
        decoded world, one progress line per epoch; returns its :class:`~bind.train.run.FitResult`.

        Modalities with ``config.modality_epochs``, ``config.modality_lr`` or ``config.init_from`` train in later
        stages, one per epoch count and learning rate, after the others: a started one from its source's trained
        encoder. The result holds one model with every encoder (:meth:`bind.BindModel.add_encoders`) and every stage's
        validation metrics."""
        c = self.config
        plan = {m: (int(c.modality_epochs.get(m, c.epochs)), c.modality_lr.get(m, c.lr)) for m in c.modalities}
        first = [
            m for m in c.modalities if m not in c.init_from and m not in c.modality_epochs and m not in c.modality_lr
        ]
        stages = [(first, (c.epochs, c.lr))] if first else []
        for key in dict.fromkeys(plan[m] for m in c.modalities if m not in first):
            stages.append(([m for m in c.modalities if m not in first and plan[m] == key], key))
        if len(stages) == 1:
            return self._fit(run_dir, label, stages[0][0], encoders, epochs=stages[0][1][0], lr=stages[0][1][1])
        result, base = None, None
        for i, (group, (e, lr)) in enumerate(stages):
            sources = {m: f"{base}#{c.init_from[m]}" for m in group if m in c.init_from}
            stage_dir, stage_label = run_dir / f"stage{i + 1}", f"{label} {'+'.join(group)}"
            part = self._fit(stage_dir, stage_label, group, encoders, sources, e, lr)
            if result is None:  # the first stage: the model the others join, and what init_from starts from
                result = part
                if c.init_from:
                    base = result.model.eval().save_pretrained(run_dir / f"stage{i + 1}" / "model")
            else:
                result.model.add_encoders(part.model.eval(), group)
                result.metrics = {**result.metrics, **part.metrics}
        return result

    def _fit(
        self,
        run_dir: Path,
        label: str,
        modalities: Sequence[str],
        encoders: dict[str, dict[str, Any]] | None,
        init_from: dict[str, str] | None = None,
        epochs: int | None = None,
        lr: float | None = None,
    ) -> Any:
        from bind.train import fit
        from bind_world.progress import EpochLines  # Lightning, imported only to train

        c = self.config
        torch.set_num_threads(max(1, c.threads or min(os.cpu_count() or 1, c.workers)))
        untrained = logging.getLogger("bind.model")  # the sanity check validates the fresh encoders: expected
        level = untrained.level
        untrained.setLevel(level if self.verbose else logging.ERROR)
        try:
            return fit(
                self.manifest,
                modalities=list(modalities),
                model=MODEL_NAME,
                run_dir=run_dir,
                max_epochs=epochs or c.epochs,
                val_every_n_epochs=c.val_every_n_epochs,
                batch_size=c.batch_size,
                num_workers=0,
                seed=c.seed,
                export=False,
                progress_bar=False,
                log_every_n_steps=5,
                sample_cache=self.cache,
                encoders={m: e for m, e in c.encoders_with(encoders).items() if m in modalities},
                init_from=init_from,
                init_temporal="center",  # 3-D kernels and tubelets start as the source's per-frame filters
                cache_anchors=True,
                lr=lr or c.lr,
                warmup_steps=c.warmup_steps,
                weight_decay=c.weight_decay,
                anchor_whitening={m: v for m, v in c.anchor_whitening.items() if m in modalities},
                anchor_alignment={m: v for m, v in c.anchor_alignment.items() if m in modalities},
                anchor_queue={m: v for m, v in c.anchor_queue.items() if m in modalities},
                progressive_resize={m: v for m, v in c.progressive_resize.items() if m in modalities},
                accelerator="cpu",
                verbose=self.verbose,
                callbacks=[EpochLines(label, self.echo)],
            )
        finally:
            untrained.setLevel(level)

    # --- embedding -------------------------------------------------------------------------------------------------
    def samples(self, modality: str, records: Sequence[Any]) -> list[torch.Tensor]:
        """The decoded, transformed media of ``records`` (from the cache)."""
        return [self.cache.process(modality, r.media[modality], self.preprocess[modality]) for r in records]

    def embed(self, model: Any, modality: str, records: Sequence[Any], batch_size: int = 128) -> torch.Tensor:
        return model.embed_tensors(modality, self.samples(modality, records), batch_size=batch_size)

    def embed_texts(self, model: Any, texts: Sequence[str]) -> torch.Tensor:
        """The anchor's embeddings of ``texts``, each distinct text embedded once (the demo's 23,040 paraphrased
        queries hold 4,471 distinct ones)."""
        pre, row = self.preprocess[ANCHOR], {t: i for i, t in enumerate(dict.fromkeys(texts))}
        emb = model.embed_tensors(ANCHOR, [self.cache.process(ANCHOR, t, pre) for t in row])
        return emb[torch.tensor([row[t] for t in texts], dtype=torch.long)]
