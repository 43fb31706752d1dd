"""``BindDataModule``: manifests or webdataset shards -> paired, collated batches for :class:`BindTrainModule`.

The modalities, anchor and preprocessing come from the attached LightningModule (``pair_spec``), so the YAML only
says where the data is. Bad samples are skipped and logged to ``bad_samples.jsonl`` in the run directory; their
count is printed when fitting ends.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from bind.data.bad_samples import BAD_SAMPLES_FILE, BadSampleLog, summarize
from bind.data.collate import PairCollator
from bind.data.dataset import PairedDataset, PairSpec, SampleCache
from bind.data.manifest import ManifestError, ManifestRecord, read_manifest
from bind.data.sampler import ResumableSampler
from bind.registry import get_modality, list_modalities

log = logging.getLogger("bind.train")


def _splits(records: list[ManifestRecord]) -> str:
    names = sorted({str(r.split) for r in records})
    return ", ".join(names) if names else "none"


def read_training_manifest(path: str | Path, key: str) -> list[ManifestRecord]:
    """Every record of a manifest, or a one-line error naming the config key, the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(
            f"{key}: {path} not found; give --{key} PATH of a JSONL manifest (one JSON object per "
            "line; `bindspace world generate --out DIR` writes an example)"
        )
    records = read_manifest(path)
    if not records:
        m = next(get_modality(n) for n in list_modalities() if get_modality(n).extensions)
        row = {"id": "s1", "split": "train", "text": "a caption", m.name: f"media/s1{m.extensions[0]}"}
        raise ManifestError(f"{key}: {path} is empty; it needs one JSON object per line, e.g. {json.dumps(row)}")
    return records


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position Lightning may treat as restorable: the :class:`ResumableSampler` derives it from
    the trainer's step count when a resumed run starts iterating, so there is no state of its own to save."""

    def state_dict(self) -> dict[str, str]:
        return {"position": "derived from trainer.global_step"}

    def load_state_dict(self, state: dict[str, str]) -> None:
        pass


class BindDataModule(L.LightningDataModule):
    """Where the training data is; every argument is a YAML key under ``data:``.

    Args:
        manifest: JSONL manifest (paths relative to it); its ``train_split`` / ``val_split`` lines are used.
        val_manifest: a separate manifest for validation (its ``val_split`` lines if it has any, else all).
        train_split, val_split: split names. A ``manifest`` without a ``val_split`` line is an error naming the
            splits it has (set ``val_split`` to one of them, or ``val_split: null`` to train without validation).
        shards, val_shards: webdataset shards (brace pattern or list) instead of manifests.
        epoch_size: samples per epoch over all ranks for shards (required with several ranks).
        shuffle_buffer: webdataset shuffle buffer.
        batch_size, val_batch_size: per-rank batch sizes.
        num_workers: DataLoader worker processes.
        caption_source: ``modality`` (``captions[m]`` if present, else ``text``) or ``text``.
        bad_samples: ``skip`` (log and continue) or ``raise``.
        seed: data order and augmentation seed.
        bad_samples_file: where to log skips (default: ``bad_samples.jsonl`` in the run directory).
        cache_samples: decode every manifest sample once and reuse the eval-mode tensors in every epoch
            (:class:`~bind.data.dataset.SampleCache`; no augmentation; use with ``num_workers: 0``). Set
            ``sample_cache`` on the instance to start from a pre-filled cache.
    """

    def __init__(
        self,
        manifest: str | None = None,
        val_manifest: str | None = None,
        train_split: str = "train",
        val_split: str | None = "val",
        shards: str | list[str] | None = None,
        val_shards: str | list[str] | None = None,
        epoch_size: int | None = None,
        shuffle_buffer: int = 1000,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        caption_source: str = "modality",
        bad_samples: str = "skip",
        seed: int = 0,
        pin_memory: bool = False,
        bad_samples_file: str | None = None,
        cache_samples: bool = False,
    ) -> None:
        super().__init__()
        if manifest is None and shards is None:
            raise ValueError("data: give a manifest or webdataset shards")
        self.save_hyperparameters()
        self.spec: PairSpec | None = None
        self.bad: BadSampleLog | None = None
        self.train_set = self.val_set = None
        self._sampler: ResumableSampler | None = None
        self.sample_cache: SampleCache | None = None

    # --- setup -------------------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.spec is not None:
            return
        trainer = self.trainer
        run_dir = Path(trainer.log_dir or trainer.default_root_dir) if trainer is not None else Path(".")
        self.prepare(trainer.lightning_module.pair_spec(self.hparams.caption_source), run_dir)

    def prepare(self, spec: PairSpec, run_dir: str | Path) -> None:
        """Build the datasets for ``spec`` (what :meth:`setup` does from the attached module)."""
        hp = self.hparams
        self.spec = spec
        self.bad = BadSampleLog(
            Path(hp.bad_samples_file) if hp.bad_samples_file else Path(run_dir) / BAD_SAMPLES_FILE, hp.bad_samples
        )
        if hp.cache_samples and self.sample_cache is None:
            self.sample_cache = SampleCache()
        if hp.manifest is not None:
            records = read_training_manifest(hp.manifest, "data.manifest")
            self.train_set = PairedDataset(
                [r for r in records if r.split == hp.train_split],
                spec,
                train=True,
                bad=self.bad,
                seed=hp.seed,
                cache=self.sample_cache,
            )
            if len(self.train_set) == 0:
                raise ValueError(
                    f"data.manifest {hp.manifest}: no {hp.train_split!r} sample has any of "
                    f"{spec.modalities} (splits found: {_splits(records)}); set --data.train_split, or "
                    f"add {spec.modalities[0]} paths to the {hp.train_split!r} lines"
                )
        if hp.val_manifest is not None and hp.val_shards is None:
            records = read_training_manifest(hp.val_manifest, "data.val_manifest")
            chosen = [r for r in records if r.split == hp.val_split]  # its val_split lines if any, else all
            val = PairedDataset(
                chosen or records, spec, train=False, bad=self.bad, seed=hp.seed, cache=self.sample_cache
            )
            self.val_set = val if len(val) else None
        elif hp.manifest is not None and hp.val_split and hp.val_shards is None:
            val_records = [r for r in records if r.split == hp.val_split]
            if not val_records:  # never train silently without validation
                raise ValueError(
                    f"data.manifest {hp.manifest}: no {hp.val_split!r} split to validate on (splits "
                    f"found: {_splits(records)}); set --data.val_split NAME to validate on one of them, "
                    "--data.val_manifest FILE, or --data.val_split null to train without validation"
                )
            val = PairedDataset(val_records, spec, train=False, bad=self.bad, seed=hp.seed, cache=self.sample_cache)
            self.val_set = val if len(val) else None
        if self.val_set is None and (hp.val_manifest or hp.val_split) and hp.val_shards is None:
            log.warning("no validation sample has any of %s: training without validation", spec.modalities)

    def _rank_world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _position(self) -> tuple[int, int] | None:
        """``(epoch, batches done in it)`` from the trainer's optimizer steps (resuming mid-epoch included)."""
        t = self.trainer
        if t is None or self._sampler is None:
            return None
        per_epoch = self._sampler.batches_per_epoch
        limit = t.limit_train_batches
        per_epoch = min(per_epoch, int(limit)) if isinstance(limit, int) else max(1, int(per_epoch * limit))
        return divmod(t.global_step * t.accumulate_grad_batches, per_epoch)

    # --- loaders -----------------------------------------------------------------------------------------------------
    def _loader(self, dataset, batch_size: int, sampler=None) -> DataLoader:
        hp = self.hparams
        return ResumableDataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=hp.num_workers,
            collate_fn=PairCollator(self.spec.modalities, self.spec.anchor),
            pin_memory=hp.pin_memory,
            persistent_workers=False,
            drop_last=sampler is not None and sampler.drop_last,
        )

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        rank, world = self._rank_world()
        if hp.shards is not None:
            from bind.data.webdataset import webdataset_pairs

            ds = webdataset_pairs(
                hp.shards,
                self.spec,
                train=True,
                bad=self.bad,
                seed=hp.seed,
                shuffle_buffer=hp.shuffle_buffer,
                epoch_size=hp.epoch_size,
                world_size=world,
                num_workers=hp.num_workers,
            )
            return DataLoader(
                ds,
                batch_size=hp.batch_size,
                num_workers=hp.num_workers,
                collate_fn=PairCollator(self.spec.modalities, self.spec.anchor),
                drop_last=True,
            )
        self._sampler = ResumableSampler(
            len(self.train_set),
            batch_size=hp.batch_size,
            shuffle=True,
            seed=hp.seed,
            rank=rank,
            world_size=world,
            drop_last=True,
            position_fn=self._position,
        )
        return self._loader(self.train_set, hp.batch_size, self._sampler)

    def val_dataloader(self) -> DataLoader | list:
        hp = self.hparams
        bs = hp.val_batch_size or hp.batch_size
        rank, world = self._rank_world()
        if hp.val_shards is not None:
            from bind.data.webdataset import webdataset_pairs

            ds = webdataset_pairs(hp.val_shards, self.spec, train=False, bad=self.bad, world_size=world)
            return DataLoader(
                ds,
                batch_size=bs,
                num_workers=hp.num_workers,
                collate_fn=PairCollator(self.spec.modalities, self.spec.anchor),
            )
        if self.val_set is None:
            return []
        sampler = ResumableSampler(
            len(self.val_set), batch_size=bs, shuffle=False, rank=rank, world_size=world, drop_last=False
        )
        return self._loader(self.val_set, bs, sampler)

    def teardown(self, stage: str | None = None) -> None:
        if stage == "fit" and self.bad is not None and self.bad.path is not None:
            if self.trainer is None or self.trainer.is_global_zero:
                summary = summarize(self.bad.path)  # names the log only when there is one to read
                if summary.count:
                    log.warning("%s", summary)
                else:
                    log.info("no sample was skipped as unreadable")
