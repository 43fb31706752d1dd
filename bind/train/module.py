"""``BindTrainModule``: the LightningModule that trains modality encoders into a frozen anchor's space.

Per step, for every trained modality ``m``: embed the samples that carry ``m``, embed their anchors with the frozen
tower (no grad), and add the contrastive loss (:func:`bind.losses.contrastive_loss`: InfoNCE or SigLIP, local loss
with an all-gather carrying gradients across ranks). open_clip conventions (Cherti et al. 2023): AdamW without weight
decay on scales / norms / biases, linear warmup then cosine decay per step, log temperatures clamped to
``[0, ln 100]`` after every step. Validation reports R@1 / R@5 in both directions for every ``m <-> anchor``
(identical captions count as one gallery item) from embeddings gathered over all ranks.

Determinism: the global RNG is reseeded from ``(seed, global_step, rank)`` before every step (patch dropout, drop
path, LoRA dropout), and the data order and augmentations are functions of ``(seed, epoch, sample)``
(:mod:`bind.data.sampler`), so a run killed and resumed from ``last.ckpt`` ends with the weights of an uninterrupted
run.

Checkpoints hold the trained parameters and the optimizer state; a frozen tower built from a named source (a
transformers directory such as MiniLM, or the saved model a run continues from) is stored by identity only — its
source and a SHA-256 fingerprint of its weights (:data:`TOWERS_KEY`). Loading rebuilds the tower from its source and
refuses a checkpoint whose fingerprint differs. An ``anchor_queue``'s embeddings travel in the checkpoint too
(:data:`QUEUE_KEY`), so a resumed run scores the same negatives.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from bind.data.augment import resize_spatial
from bind.data.dataset import PairSpec, sample_seed
from bind.encoder import save_as_scalars
from bind.lora import format_trainable_report, lora_specs, merge_lora, save_adapters, trainable_report
from bind.losses import LOSSES, SIGLIP_BIAS_INIT, all_gather_rows, clamp_logit_scale_, contrastive_loss, gather_sizes
from bind.losses import logit_scale_init as default_logit_scale
from bind.model import trim_padding
from bind.optim import warmup_cosine_schedule
from bind.registry import get_modality
from bind.train.checkpoint import AtomicCheckpoints
from bind.train.model_builder import build_train_model

log = logging.getLogger("bind.train")
QUEUE_KEY = "bind_anchor_queue"  #: checkpoint key of the ``anchor_queue`` state: ``{modality: {embeddings, keys}}``


def caption_hashes(keys: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """A stable 64-bit hash of each anchor key (the same in every process, unlike ``hash``): ``[n]`` int64."""
    digest = [hashlib.blake2b(str(k).encode(), digest_size=8).digest() for k in keys]
    return torch.tensor([int.from_bytes(d, "little", signed=True) for d in digest], dtype=torch.long, device=device)


def _no_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim < 2 or "logit_scale" in name or "logit_bias" in name or name.endswith(".bias") or "norm" in name


TOWERS_KEY = "bind_frozen_towers"  # checkpoint entry: {modality: {"name", "fingerprint"}} of towers left out


def weights_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a state dict (sorted by name)."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class BindTrainModule(L.LightningModule):
    """Trains ``modalities`` against a frozen ``anchor``; every argument is a YAML key under ``model:``.

    Args:
        model: named model config (architecture defaults) or a saved bind model directory to continue from.
        modalities: the modalities to train.
        anchor: ``text`` (language-anchored, LanguageBind) or ``image`` (image-anchored, ImageBind).
        towers: ``{modality: transformers directory / hub id / "minilm"}`` frozen towers (the anchor's among them).
        encoders: per-modality ``EncoderConfig`` overrides (``patch_dropout``, ``depth``, ``stem``, ...).
        init_from: ``{modality: pretrained ViT}`` to start from: HF CLIP directory, timm state dict, or one encoder of
            a saved bind model (``DIR#image``).
        init_channels: ``mean`` | ``sum`` — RGB filters -> other channel counts.
        init_temporal: ``average`` | ``center`` — Conv2d -> Conv3d tubelet inflation.
        init_heads: attention heads of a timm source (default width / 64).
        lora: ``{modality: {r, alpha, dropout, targets, ...}}`` LoRA adapters (``{}`` = LanguageBind defaults).
        loss: ``infonce`` | ``siglip``.
        lr, weight_decay, betas, eps: AdamW.
        warmup_steps, min_lr_ratio: the warmup + cosine schedule.
        grad_checkpointing: recompute trunk activations in backward.
        seed: seeds per-step randomness (the data seed is the datamodule's).
        export_dir: at the end of ``fit``, write ``model/`` (LoRA merged, loadable by ``bind.load_model``) and
            ``adapters/`` there.
        cache_anchors: memoise the frozen text anchor's embedding of each caption (up to ``anchor_cache_size``
            captions): exact, since the tower is frozen and deterministic, and a large saving when captions repeat.
            At the start of fit every distinct caption of the training and validation records is embedded in
            fixed chunks of the sorted list (:meth:`fill_anchor_cache`; 4x faster than one by one), so an
            uninterrupted and a resumed run (whose cache starts empty) hold the same bits. A caption met later is
            embedded alone, trimmed to its own length: its value does not depend on the batch that first held it.
        anchor_whitening: shrinkage ``λ`` of a whitened loss space, for every trained modality or as
            ``{modality: λ}`` (0 / absent: off; text anchors, manifest data). A frozen
            sentence encoder's space is anisotropic: captions that differ in one word sit close together, so the
            loss barely sees the factors that word names. With ``λ > 0`` each modality's loss compares embeddings
            after ZCA whitening by the covariance ``Σ`` of its training captions' anchor embeddings,
            ``W = (Σ + λ·max eig(Σ)·I)^-1/2`` (Su et al. 2021, "Whitening sentence representations"; 0.3 is a mild
            setting), computed once at the start of fit. Encoders still embed into, and are evaluated in, the
            anchor's own space; an encoder that matches its anchor after whitening matches it before. It helps
            where captions name several factors and one is worded in a single word (the world's video: object motion
            from 0.35 to 0.61 zero-shot accuracy); with a handful of distinct captions (the world's four IMU
            activities) it only amplifies noise: leave it off there.
        anchor_alignment: weight ``β`` of a cosine term, for every trained modality or as ``{modality: β}``, added to
            the contrastive loss: ``β · mean(1 - cos(x_i, t_i))`` between each embedding and its own caption's anchor
            embedding, in the anchor's own space. InfoNCE only ranks a batch's captions, so it leaves an embedding's
            offset from its captions (the modality gap, Liang et al. 2022, "Mind the Gap") free: wherever the
            training captions do not vary, the encoder's start decides, and captions worded differently from the
            training ones (paraphrases) meet that arbitrary offset. The term pulls each item towards the centre of its
            captions' embeddings, the place an ideal encoder would put it. Small values (0.5-1) keep InfoNCE in
            charge; large ones turn the loss into regression onto the captions and lose the ranking (with
            ``anchor_queue``'s harder negatives the world's video held up to 5 and lost its motion at 10).
        anchor_queue: size ``K`` of a queue of the frozen anchor's embeddings from earlier batches, for every trained
            modality or as ``{modality: K}`` (0 / absent: off; InfoNCE only): each item is also scored against them
            on the modality -> anchor side of the loss (MoCo's queue, He et al. 2020, without its momentum encoder,
            since a frozen anchor's queued embeddings are exact, not stale). A batch of ``B`` offers ``B - 1``
            negatives; where captions combine several factors, few of them differ from the positive in one factor
            only, so a factor the batch rarely contrasts trains slowly (the world's video: 720 factor combinations,
            batch 64; a queue of 2048 lifted all four factors right 0.57 -> 0.63). Queued entries holding an item's
            own caption (same anchor key) are left out of its softmax. Every rank holds the same queue (the gathered
            batches); it is saved in checkpoints.
        progressive_resize: ``{modality: {"scale": s, "until": f}}``: progressive resizing (the fast.ai DAWNBench
            recipe, FFCV's and Composer's ``ProgressiveResizing``): for the first ``f`` of training (epochs, or steps
            without ``max_epochs``) the modality's inputs are shrunk to ``s`` of their height and width (bilinear,
            antialiased, after :meth:`~bind.Modality.augment`), then trained at full size; validation always runs at
            full size. A list of such stages, ``until`` increasing, steps the size up in several stages (FFCV's ramp
            in steps): ``[{"scale": 0.5, "until": 0.5}, {"scale": 0.75, "until": 0.8}]``. Patch and tubelet stems
            interpolate their position tables to the smaller grid, so the encoder is the same; a step costs about
            ``s**2`` (the world's video, 64 -> 48 pixels for 20 of 26 epochs: the stage 168 -> 127 s, retrieval
            within its run-to-run spread). For inputs whose last two axes are an image.
    """

    def __init__(
        self,
        model: str = "bind-minilm-tiny",
        modalities: list[str] | None = None,
        anchor: str = "text",
        towers: dict[str, str] | None = None,
        encoders: dict[str, dict[str, Any]] | None = None,
        init_from: dict[str, str] | None = None,
        init_channels: str = "mean",
        init_temporal: str = "average",
        init_heads: int | None = None,
        lora: dict[str, dict[str, Any] | None] | None = None,
        loss: str = "infonce",
        lr: float = 1e-3,
        weight_decay: float = 0.2,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        grad_checkpointing: bool = False,
        seed: int = 0,
        export_dir: str | None = None,
        cache_anchors: bool = False,
        anchor_cache_size: int = 100_000,
        anchor_whitening: float | dict[str, float] = 0.0,
        anchor_alignment: float | dict[str, float] = 0.0,
        anchor_queue: int | dict[str, int] = 0,
        progressive_resize: dict[str, dict[str, float] | list[dict[str, float]]] | None = None,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss {loss!r}; expected one of {LOSSES}")
        self.save_hyperparameters()
        self.model = build_train_model(
            model,
            modalities,
            anchor,
            towers,
            encoders,
            init_from,
            init_channels,
            init_temporal,
            init_heads,
            lora,
            default_logit_scale(loss),
            grad_checkpointing,
        )
        self.model.precision = "fp32"  # no autocast of bind's own: the Trainer's precision plugin decides
        self.trained, self.anchor, self.loss_kind = list(modalities or []), anchor, loss
        self.logit_bias = (
            nn.ParameterDict({m: nn.Parameter(torch.tensor([SIGLIP_BIAS_INIT])) for m in self.trained})
            if loss == "siglip"
            else None
        )
        if self.logit_bias is not None:
            save_as_scalars(self.logit_bias, *self.trained)  # one element each: FSDP shards no scalar parameters
        self._examples: dict[str, torch.Tensor] = {}
        self._val: dict[str, list[tuple[torch.Tensor, torch.Tensor, list[str]]]] = {}
        self._anchor_cache: dict[str, torch.Tensor] = {}
        self._tower_ids: dict[str, dict[str, str]] | None = None
        self._samples_this_epoch = 0
        if cache_anchors and anchor != "text":
            raise ValueError(
                f"cache_anchors applies to a text anchor, not {anchor!r} (its inputs are augmented each step)"
            )
        white = self._per_modality("anchor_whitening", anchor_whitening)
        if any(white.values()) and anchor != "text":
            raise ValueError(f"anchor_whitening needs the text anchor; got {white}, anchor {anchor!r}")
        self._whitening_shrinkage = white
        self._alignment = self._per_modality("anchor_alignment", anchor_alignment)
        queue = self._per_modality("anchor_queue", anchor_queue)
        if not all(k.is_integer() for k in queue.values()):
            raise ValueError(f"anchor_queue: sizes must be whole numbers; got {anchor_queue}")
        self._queue_size = {m: int(k) for m, k in queue.items()}
        if self._queue_size and loss != "infonce":
            raise ValueError(f"anchor_queue needs the infonce loss, not {loss!r}")
        self._queue: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # m -> (loss-space anchors [K, D], key hashes)
        self._resize = self._resize_schedule(progressive_resize or {})
        self._whitening: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # m -> (mean, W), set at fit start
        self.tower_identities()  # now, before any strategy wraps or shards the towers

    def _resize_schedule(self, spec: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
        """``progressive_resize`` checked: ``{modality: [(scale, until), ...]}``, ``until`` increasing."""
        out = {}
        for m, entries in spec.items():
            if m not in self.trained:
                raise ValueError(f"progressive_resize names {m!r}, not trained here ({self.trained})")
            stages = []
            for entry in entries if isinstance(entries, (list, tuple)) and entries else [entries]:
                extra = set(entry) - {"scale", "until"} if isinstance(entry, dict) else None
                if extra is None or extra or not {"scale", "until"} <= set(entry):
                    raise ValueError(
                        f"progressive_resize {m}: expected {{'scale': s, 'until': f}} or a list of them, "
                        f"got {entries!r}"
                    )
                scale, until = float(entry["scale"]), float(entry["until"])
                if not (0 < scale <= 1 and 0 <= until <= 1):
                    raise ValueError(
                        f"progressive_resize {m}: scale must lie in (0, 1] and until in [0, 1]; got {entry}"
                    )
                if stages and until <= stages[-1][1]:
                    raise ValueError(
                        f"progressive_resize {m}: each stage's until must exceed the one before; got {entries}"
                    )
                stages.append((scale, until))
            out[m] = stages
        return out

    def _resize_scale(self, m: str) -> float | None:
        """The scale ``m``'s training inputs take at this step (None: full size)."""
        for scale, until in self._resize.get(m, ()):
            if self._shrunk_now(until):
                return scale
        return None

    def _shrunk_now(self, until: float) -> bool:
        """Whether this step lies in the first ``until`` of training (whole epochs when ``max_epochs`` is set)."""
        t = self.trainer
        if t.max_epochs is not None and t.max_epochs > 0:
            return t.current_epoch < round(until * t.max_epochs)
        return t.global_step < round(until * t.estimated_stepping_batches)

    def _per_modality(self, name: str, value: float | dict[str, float]) -> dict[str, float]:
        """A weight given once for every trained modality or as ``{modality: weight}``: the non-zero ones."""
        per = value if isinstance(value, dict) else dict.fromkeys(self.trained, value)
        if set(per) - set(self.trained):
            raise ValueError(f"{name} names {sorted(set(per) - set(self.trained))}, not trained here ({self.trained})")
        if any(float(v) < 0 for v in per.values()):
            raise ValueError(f"{name}: every weight must be >= 0; got {per}")
        return {m: float(v) for m, v in per.items() if v}

    # --- data contract ---------------------------------------------------------------------------------------------
    def pair_spec(self, caption_source: str = "modality") -> PairSpec:
        """What the datamodule must load for this model (modalities, anchor, preprocessing)."""
        return PairSpec.from_model(self.model, self.trained, self.anchor, caption_source)

    def train(self, mode: bool = True) -> BindTrainModule:
        super().train(mode)
        for m in self.model.config.frozen:  # frozen towers stay in eval mode (no dropout)
            self.model.encoder(m).eval()
        return self

    # --- losses ----------------------------------------------------------------------------------------------------
    def _world(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def _anchor_embed(self, x: torch.Tensor, keys: list[str] | None = None) -> torch.Tensor:
        if keys is not None and self.hparams.cache_anchors:
            # Each caption is embedded alone at its own length, whether or not the cache has room: its bits never
            # depend on the batch (or the padding) it first came in, so a resumed run, whose cache starts empty,
            # rebuilds exactly the values the uninterrupted run cached.
            cache, out = self._anchor_cache, []
            for row, k in zip(x, keys):
                e = cache.get(k)
                if e is None:
                    e = self._anchor_embed(row[None])[0]
                    if len(cache) < self.hparams.anchor_cache_size:
                        cache[k] = e
                out.append(e)
            return torch.stack(out).to(self.device)
        if self.anchor == "text":
            x = trim_padding(
                x,
                self.model.encoder("text").cfg.stem.get("pad_token_id"),
                self.model.encoder("text").cfg.stem.get("eot_token_id"),
            )
        with torch.no_grad():
            return self.model.encode(self.anchor, x).detach()

    def fill_anchor_cache(self, captions: Iterable[str], chunk: int = 256) -> int:
        """Embed the distinct ``captions`` the anchor cache lacks (up to its room) in chunks of the list sorted by
        length, then text: the same captions always give the same chunks, whatever ran before. Returns how many."""
        cache = self._anchor_cache
        room = max(0, self.hparams.anchor_cache_size - len(cache))
        todo = sorted({c for c in captions if c not in cache}, key=lambda c: (len(c), c))[:room]
        text, pre = get_modality(self.anchor), self.model.preprocess_config(self.anchor)
        ids = {}
        for c in todo:
            with contextlib.suppress(Exception):  # the dataset skips and reports a caption it cannot tokenise
                ids[c] = text.process(c, pre)
        todo = list(ids)
        for i in range(0, len(todo), chunk):
            part = todo[i : i + chunk]
            emb = self._anchor_embed(torch.stack([ids[c] for c in part]).to(self.device))
            cache.update(zip(part, emb.clone().unbind(0)))
        return len(todo)

    def _record_captions(self) -> list[str]:
        """The anchor captions of every trained modality in the datamodule's training and validation records."""
        data = getattr(self.trainer, "datamodule", None)
        out = []
        for dataset in (getattr(data, "train_set", None), getattr(data, "val_set", None)):
            records, spec = getattr(dataset, "records", None), getattr(dataset, "spec", None)
            if records is not None and spec is not None:
                src = spec.caption_source
                out += [c for r in records for m in self.trained if r.has(m) for c in r.anchor_captions(m, src)]
        return out

    def _whiten(self, m: str, x: torch.Tensor) -> torch.Tensor:
        """``x`` in modality ``m``'s whitened loss space (unchanged when ``anchor_whitening`` is off)."""
        if m not in self._whitening:
            return x
        mean, w = self._whitening[m]
        with torch.autocast(x.device.type, enabled=False):
            return F.normalize((x.float() - mean.to(x.device)) @ w.to(x.device), dim=-1).to(x.dtype)

    def fit_whitening(self, captions: dict[str, list[str]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``anchor_whitening``'s ``(mean, W)`` per modality from its training ``captions`` (embedded with the frozen
        anchor, through the anchor cache when it is on)."""
        text, pre = get_modality(self.anchor), self.model.preprocess_config(self.anchor)
        out = {}
        for m, caps in captions.items():
            caps = sorted(set(caps))
            if len(caps) < 2:
                raise ValueError(f"anchor_whitening: {m} has {len(caps)} distinct training caption(s); needs 2 or more")
            emb = torch.cat(
                [
                    self._anchor_embed(torch.stack([text.process(c, pre) for c in chunk]).to(self.device), chunk)
                    for chunk in (caps[i : i + 256] for i in range(0, len(caps), 256))
                ]
            ).double()
            mean = emb.mean(0)
            vals, vecs = torch.linalg.eigh(torch.cov((emb - mean).T))
            vals = vals.clamp(min=0) + self._whitening_shrinkage.get(m, 0.0) * vals.max().clamp(min=1e-12)
            out[m] = (mean.float(), (vecs @ torch.diag(vals.rsqrt()) @ vecs.T).float())
        return out

    def _placeholder(self, m: str) -> torch.Tensor:
        """A 0-row embedding for a modality this rank has no sample of, still in the graph of ``m``'s encoder (so
        every rank runs the same backward collectives and DDP sees the same parameters used)."""
        if m in self._examples:
            return self.model.encode(m, self._examples[m])[:0]
        return torch.zeros(0, self.model.embed_dim, device=self.device, requires_grad=True)

    def pair_losses(self, batch: dict[str, Any], gather: bool = True) -> dict[str, tuple[torch.Tensor, int]]:
        """``{m: (loss, pairs over all ranks)}`` for this batch."""
        distributed = gather and self._world() > 1
        out = {}
        for m in self.trained:
            x = batch["inputs"].get(m)
            if x is not None:
                emb = self.model.encode(m, x)
                anc = self._anchor_embed(batch["anchors"][m], batch["anchor_keys"][m])
                if distributed:
                    self._examples[m] = x[:1].detach()
            elif distributed:
                emb = self._placeholder(m)
                anc = torch.zeros(0, self.model.embed_dim, device=self.device)
            else:
                continue
            bias = self.logit_bias[m].reshape(()) if self.logit_bias is not None else None
            y = self._whiten(m, anc).to(emb.dtype)
            negatives = mask = hashes = None
            if m in self._queue_size:
                hashes = caption_hashes(batch["anchor_keys"][m] if x is not None else [], self.device)
                if m in self._queue:
                    negatives, queued = (t.to(self.device) for t in self._queue[m])
                    mask = hashes[:, None] == queued[None]
            loss, n = contrastive_loss(
                self._whiten(m, emb),
                y,
                self.model.logit_scale(m),
                kind=self.loss_kind,
                logit_bias=bias,
                gather=gather,
                gather_y_grad=False,
                negatives=negatives,
                negatives_mask=mask,
            )
            if hashes is not None and self.training:
                self._enqueue(m, y.detach().float(), hashes, distributed)
            if m in self._alignment:  # same scaling as the contrastive loss: this rank's sum over the global count
                gap = (1 - F.cosine_similarity(emb.float(), anc.float(), dim=-1)).sum()
                loss = loss + self._alignment[m] * gap * ((self._world() if distributed else 1) / max(n, 1))
            out[m] = (loss, n)
        return out

    def _enqueue(self, m: str, y: torch.Tensor, hashes: torch.Tensor, distributed: bool) -> None:
        """Put this step's loss-space anchors (every rank's, newest first) at the front of ``m``'s queue."""
        if distributed:
            sizes = gather_sizes(y.shape[0], y.device)
            y, hashes = all_gather_rows(y, sizes, with_grad=False), all_gather_rows(hashes, sizes, with_grad=False)
        old_y, old_h = self._queue.get(m, (y[:0], hashes[:0]))
        k = self._queue_size[m]
        self._queue[m] = (torch.cat([y, old_y.to(y.device)])[:k], torch.cat([hashes, old_h.to(y.device)])[:k])

    def augment(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``batch`` with each trained modality's inputs through its plugin's :meth:`~bind.Modality.augment`."""
        inputs = dict(batch["inputs"])
        for m in self.trained:
            if inputs.get(m) is not None:
                inputs[m] = get_modality(m).augment(inputs[m], self.model.preprocess_config(m))
                scale = self._resize_scale(m)
                if scale is not None:
                    inputs[m] = resize_spatial(inputs[m], scale)
        return {**batch, "inputs": inputs}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        self._samples_this_epoch += len(batch["ids"])
        losses = self.pair_losses(self.augment(batch))
        if not losses:
            return None
        total = sum(loss for loss, _ in losses.values())
        sync, bs = self._world() > 1, max(1, len(batch["ids"]))
        self.log("train/loss", total.detach(), prog_bar=True, sync_dist=sync, batch_size=bs)
        for m, (loss, _) in losses.items():
            self.log(f"train/loss/{m}", loss.detach(), sync_dist=sync, batch_size=bs)
            self.log(f"train/logit_scale/{m}", self.model.logit_scale(m).detach(), batch_size=bs)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=bs)
        return total

    def on_train_epoch_start(self) -> None:
        self._samples_this_epoch = 0

    def on_train_epoch_end(self) -> None:
        if self._samples_this_epoch == 0:
            data = getattr(self.trainer, "datamodule", None)
            path = getattr(getattr(data, "bad", None), "path", None)
            where = f"see {path}" if path is not None and Path(path).is_file() else "none could be decoded"
            raise RuntimeError(
                f"no usable training sample in a whole epoch: every sample was skipped as unreadable "
                f"({where}); check the data with `bindspace validate --manifest ...`"
            )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        torch.manual_seed(sample_seed(self.hparams.seed, self.global_step, self.global_rank))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        for m in self.trained:
            scale = self.model.encoder(m).logit_scale
            if isinstance(scale, nn.Parameter):
                clamp_logit_scale_(scale)

    # --- validation ------------------------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        losses = []
        for m in self.trained:
            x = batch["inputs"].get(m)
            if x is None:
                continue
            emb = self.model.encode(m, x)
            anc = self._anchor_embed(batch["anchors"][m], batch["anchor_keys"][m])
            bias = self.logit_bias[m].reshape(()) if self.logit_bias is not None else None
            loss, _ = contrastive_loss(
                self._whiten(m, emb),
                self._whiten(m, anc).to(emb.dtype),
                self.model.logit_scale(m),
                kind=self.loss_kind,
                logit_bias=bias,
                gather=False,
            )
            losses.append(loss)
            self._val.setdefault(m, []).append((emb.float().cpu(), anc.float().cpu(), batch["anchor_keys"][m]))
        if losses:
            self.log("val/loss", sum(losses), prog_bar=True, batch_size=max(1, len(batch["ids"])))

    def on_validation_epoch_end(self) -> None:
        sync = self._world() > 1  # every rank holds the same gathered values: the mean changes nothing
        for name, value in self.validation_metrics().items():
            self.log(name, value, prog_bar=name.startswith("val/R@1/") and "->" + self.anchor in name, sync_dist=sync)
        self._val.clear()

    def validation_metrics(self) -> dict[str, float]:
        """R@1 / R@5 of ``m -> anchor`` and ``anchor -> m`` over the embeddings collected by ``validation_step``
        (gathered from every rank)."""
        from bind.retrieval.metrics import retrieval_metrics_from_embeddings

        metrics = {}
        world = self._world()
        for m in self.trained:  # the same collectives in the same order on every rank
            parts = self._val.get(m, [])
            emb = torch.cat([p[0] for p in parts]) if parts else torch.zeros(0, self.model.embed_dim)
            anc = torch.cat([p[1] for p in parts]) if parts else torch.zeros(0, self.model.embed_dim)
            keys = [k for p in parts for k in p[2]]
            if world > 1:
                dev = self.device
                sizes = gather_sizes(emb.shape[0], dev)
                if sum(sizes) == 0:
                    continue
                emb = all_gather_rows(emb.to(dev), sizes, with_grad=False).cpu()
                anc = all_gather_rows(anc.to(dev), sizes, with_grad=False).cpu()
                all_keys: list[list[str]] = [[] for _ in range(world)]
                torch.distributed.all_gather_object(all_keys, keys)
                keys = [k for ks in all_keys for k in ks]
            if not keys:
                continue
            first: dict[str, int] = {}
            for i, k in enumerate(keys):
                first.setdefault(k, i)
            group = {k: g for g, k in enumerate(first)}
            q_groups = torch.tensor([group[k] for k in keys])
            gallery, g_groups = anc[list(first.values())], torch.arange(len(first))
            fwd = retrieval_metrics_from_embeddings(emb, gallery, q_groups, g_groups, ks=(1, 5))
            bwd = retrieval_metrics_from_embeddings(gallery, emb, g_groups, q_groups, ks=(1, 5))
            for k in (1, 5):
                metrics[f"val/R@{k}/{m}->{self.anchor}"] = fwd[f"recall@{k}"]
                metrics[f"val/R@{k}/{self.anchor}->{m}"] = bwd[f"recall@{k}"]
            metrics[f"val/gallery/{m}"] = float(len(first))
        return metrics

    # --- optimisation ----------------------------------------------------------------------------------------------
    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm=None
    ) -> None:
        """Lightning's clipping, except by norm under FSDP (``strategy: bind_fsdp``), which Lightning refuses
        ("gradient_clip_algorithm='norm' is currently not supported for FSDPPrecision"): there the root FSDP module's
        ``clip_grad_norm_`` takes the norm over every rank's shards, as torch's FSDP documentation prescribes."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        root = self.trainer.model
        if (
            gradient_clip_val
            and gradient_clip_algorithm in (None, "norm")
            and isinstance(root, FullyShardedDataParallel)
        ):
            root.clip_grad_norm_(gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> dict[str, Any]:
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if _no_decay(name, p) else decay).append(p)
        hp = self.hparams
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr,
            betas=tuple(hp.betas),
            eps=hp.eps,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = warmup_cosine_schedule(opt, hp.warmup_steps, total, hp.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": sched}

    def configure_callbacks(self) -> list[L.Callback]:
        attached = self._trainer is not None and any(isinstance(c, AtomicCheckpoints) for c in self.trainer.callbacks)
        return [] if attached else [AtomicCheckpoints()]

    # --- checkpoints: trained parameters + optimizer, the frozen towers by identity -----------------------------
    def rebuildable_towers(self) -> dict[str, str]:
        """``{modality: source}`` of the frozen towers this module rebuilds from a named source when constructed
        (a transformers tower directory, or the saved model it continues from); their weights stay out of
        checkpoints. Randomly initialised frozen encoders have no source and stay in."""
        from bind.model import CONFIG_NAME

        saved = (Path(self.hparams.model) / CONFIG_NAME).is_file()
        out = {}
        for m in self.model.config.frozen:
            tower = self.model.config.encoders[m].tower if m in self.model.config.encoders else None
            if tower or saved:
                out[m] = str(tower or self.hparams.model)
        return out

    def _tower_states(self, state: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
        towers = {}
        for m in self.rebuildable_towers():
            prefix = f"model.encoders.{m}."
            towers[m] = {k: v for k, v in state.items() if k.startswith(prefix)}
        return towers

    def tower_identities(self) -> dict[str, dict[str, str]]:
        """``{modality: {"name", "fingerprint"}}`` of the rebuildable frozen towers as built now (memoised: they are
        frozen)."""
        if self._tower_ids is None:
            sources = self.rebuildable_towers()
            states = self._tower_states(self.state_dict())
            self._tower_ids = {m: {"name": sources[m], "fingerprint": weights_fingerprint(states[m])} for m in sources}
        return self._tower_ids

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._queue:
            checkpoint[QUEUE_KEY] = {m: {"embeddings": e.cpu(), "keys": h.cpu()} for m, (e, h) in self._queue.items()}
        state = checkpoint.get("state_dict")
        if state is None:
            return
        ids = self.tower_identities()
        for m, tower in self._tower_states(state).items():
            if m in ids:
                for k in tower:
                    del state[k]
        checkpoint[TOWERS_KEY] = ids

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for opt in checkpoint.get("optimizer_states") or []:  # runs saved while logit scales were scalars
            for state in (opt.get("state") or {}).values():
                for k, v in state.items():
                    if k != "step" and isinstance(v, torch.Tensor) and v.ndim == 0:
                        state[k] = torch.reshape(v, (1,))  # no parameter is 0-dim now (save_as_scalars)
        queue = checkpoint.get(QUEUE_KEY) or {}
        self._queue = {m: (q["embeddings"], q["keys"]) for m, q in queue.items() if m in self._queue_size}
        saved = checkpoint.get(TOWERS_KEY)
        if saved is None:  # a checkpoint holding every weight
            return
        now = self.tower_identities()
        for m, ident in saved.items():
            if m not in now:
                raise ValueError(
                    f"checkpoint: its frozen {m} tower {ident.get('name')!r} is not part of this "
                    f"model (towers now: {sorted(now) or 'none'}); resume with the run's own config"
                )
            if ident.get("fingerprint") != now[m]["fingerprint"]:
                raise ValueError(
                    f"checkpoint: the frozen {m} tower {ident.get('name')!r} it was trained with (weights "
                    f"{str(ident.get('fingerprint'))[:12]}) differs from the one built now from {now[m]['name']!r} "
                    f"(weights {now[m]['fingerprint'][:12]}); point model.towers.{m} at the tower the run used"
                )
        state = checkpoint.get("state_dict")
        if state is not None:  # Lightning loads the state strictly: put the (verified) tower weights back
            for m, tower in self._tower_states(self.state_dict()).items():
                if m in saved:
                    for k, v in tower.items():
                        state.setdefault(k, v)

    def setup(self, stage: str) -> None:
        if "FSDP" in type(self.trainer.strategy).__name__:  # FSDP loads weights before on_load_checkpoint
            self.strict_loading = False

    # --- reporting / export ----------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.model.mark_untrained([])  # being trained: the sanity-check validation must not warn about random weights
        self.train(self.training)  # frozen towers in eval mode before they embed anything here (no dropout)
        if self.hparams.cache_anchors and "FSDP" not in type(self.trainer.strategy).__name__:  # FSDP: lazily
            n = self.fill_anchor_cache(self._record_captions())
            log.debug("anchor cache: embedded %d captions up front", n)
        if self._whitening_shrinkage:  # every rank computes the same statistics from the same records
            dataset = getattr(self.trainer.datamodule, "train_set", None)
            if dataset is None:
                raise ValueError("anchor_whitening reads the training captions up front: it needs data.manifest")
            source = dataset.spec.caption_source
            self._whitening = self.fit_whitening(
                {
                    m: [c for r in dataset.records for c in r.anchor_captions(m, source)]
                    for m in self._whitening_shrinkage
                }
            )
        run_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # a collective: every rank calls it
        if self.trainer.is_global_zero:
            report = trainable_report(self.model)
            log.debug("trainable parameters:\n%s", format_trainable_report(report))
            log.info(
                "training %s: %s trainable parameters (%s)",
                ", ".join(self.trained),
                f"{sum(int(r['trainable']) for r in report.values()):,}",
                run_dir / "trainable_parameters.json",
            )
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "trainable_parameters.json").write_text(json.dumps(report, indent=2))

    def on_fit_end(self) -> None:
        if not self.hparams.export_dir:
            return
        from lightning.pytorch.strategies import FSDPStrategy

        strategy = self.trainer.strategy
        if isinstance(strategy, FSDPStrategy):
            # FSDP's parameters are views into this rank's shard and its wrappers cannot be copied: gather the full
            # state (a collective, every rank) and export a fresh, unwrapped module holding it
            state = strategy.lightning_module_state_dict()
            if self.trainer.is_global_zero:
                accepted = inspect.signature(type(self)).parameters  # LightningCLI adds "_instantiator"
                module = type(self)(**{k: v for k, v in self.hparams.items() if k in accepted})
                module.load_state_dict(state)
                module.export(self.hparams.export_dir)
        elif self.trainer.is_global_zero:
            self.export(self.hparams.export_dir)

    def export(self, directory: str | Path) -> Path:
        """Write ``model/`` (adapters merged: a plain bind model directory) and, with LoRA, ``adapters/``."""
        directory = Path(directory)
        model = copy.deepcopy(self.model).cpu().float().eval()
        if lora_specs(model):
            save_adapters(model, directory / "adapters")
            merge_lora(model)
        model.save_pretrained(directory / "model")
        log.info("exported the trained model to %s", directory / "model")
        return directory


def export_checkpoint(checkpoint: str | Path, directory: str | Path) -> Path:
    """Rebuild the module of a Lightning checkpoint and :meth:`~BindTrainModule.export` its model to ``directory``."""
    module = BindTrainModule.load_from_checkpoint(str(checkpoint), map_location="cpu")
    return module.export(directory)
