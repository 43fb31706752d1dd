"""Paired training samples: each trained modality with its anchor (a caption, or an image for image-anchored runs).

A sample is ``{"id", "inputs": {m: tensor}, "anchors": {m: tensor}, "anchor_keys": {m: str}}``: for every trained
modality ``m`` the record has and could decode, its transformed input, the transformed anchor it is paired with, and
a key naming that anchor (the caption text, or the anchor's sample id) so evaluation can treat identical captions
as the same item. Captions are tokenised before any media is decoded (cheap checks first); a modality that cannot
be decoded is dropped from the sample and logged (:mod:`bind.data.bad_samples`); a sample left with no pair is
``None`` (the collate drops it).

Training randomness (augmentations, caption choice) is seeded per sample from ``(seed, epoch, key)``, so a sample
looks the same whichever worker or process loads it and a resumed run sees exactly what the uninterrupted run saw.

Opt-in :class:`SampleCache`: decode and transform every medium (and tokenise every caption) once, then reuse the
tensors in every epoch — decoding, not the model, dominates small CPU runs (``bindspace bench data``). Cached inputs are
eval-mode (no random augmentation).
"""

from __future__ import annotations

import contextlib
import random
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bind.data.bad_samples import BadSampleLog
from bind.data.manifest import CAPTION_SOURCES, ManifestRecord
from bind.modality import CODE_ERRORS as _BUGS  # bugs in code, not bad data: never swallowed by the skip policy
from bind.registry import get_modality


@dataclass
class PairSpec:
    """What to load: the trained ``modalities``, the ``anchor`` and every modality's preprocessing config."""

    modalities: list[str]
    anchor: str = "text"
    preprocess: dict[str, Any] | None = None  # modality -> plugin Preprocess dataclass
    caption_source: str = "modality"

    def __post_init__(self) -> None:
        if self.caption_source not in CAPTION_SOURCES:
            raise ValueError(f"caption_source {self.caption_source!r}; expected one of {CAPTION_SOURCES}")
        if self.anchor in self.modalities:
            raise ValueError(f"the anchor {self.anchor!r} cannot also be a trained modality")
        pre = dict(self.preprocess or {})
        for m in [*self.modalities, self.anchor]:
            plugin = get_modality(m)
            pre[m] = plugin.preprocess_config(pre.get(m)) if not isinstance(pre.get(m), plugin.Preprocess) else pre[m]
        self.preprocess = pre

    @classmethod
    def from_model(
        cls, model, modalities: list[str], anchor: str = "text", caption_source: str = "modality"
    ) -> PairSpec:
        """Preprocessing as configured in ``model``'s encoders."""
        return cls(
            list(modalities), anchor, {m: model.preprocess_config(m) for m in [*modalities, anchor]}, caption_source
        )


def sample_seed(seed: int, epoch: int, key: Any) -> int:
    return zlib.crc32(f"{seed}:{epoch}:{key}".encode())


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run a block under a fixed seed for torch (CPU), ``random`` and numpy, restoring the outer states after."""
    if seed is None:
        yield
        return
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed also queues CUDA/XPU seeding, 0.7 ms
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def _describe_error(e: BaseException) -> str:
    from bind.errors import MediaError

    return e.reason if isinstance(e, MediaError) else f"{type(e).__name__}: {e}"


class SampleCache:
    """Transformed inputs and tokenised captions memoised by ``(modality, source)`` (opt-in; see the module docstring).

    Every entry is made with the eval-mode transform, whatever mode asks for it: training on a cache sees no random
    augmentation (the trade small CPU runs such as ``bindspace demo`` make).
    Sources that are not paths or strings (bytes,
    arrays) pass through uncached; failures are not cached (the dataset's bad-sample policy sees them every time).
    Each process holds its own copy: :meth:`fill` decodes up front in worker processes, after which training with
    ``num_workers=0`` reads the tensors directly.
    """

    def __init__(self) -> None:
        self._store: dict[tuple[str, str], torch.Tensor] = {}
        self._configs: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._store)

    def _key(self, modality: str, source: Any, cfg: Any) -> tuple[str, str] | None:
        if not isinstance(source, (str, Path)):
            return None
        known = self._configs.setdefault(modality, cfg)
        if known != cfg:
            raise ValueError(f"sample cache: {modality} was cached with preprocessing {known}, now asked for {cfg}")
        return modality, str(source)

    def get(self, modality: str, source: Any, cfg: Any, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The cached tensor of ``source`` or ``compute()`` (stored when ``source`` is a path or a string)."""
        key = self._key(modality, source, cfg)
        if key is None:
            return compute()
        hit = self._store.get(key)
        if hit is None:
            hit = self._store[key] = compute()
        return hit

    def process(self, modality: str, source: Any, cfg: Any, train: bool = False) -> torch.Tensor:
        """``plugin.process(source, cfg, train=False)``, memoised (``train`` is ignored: entries are eval-mode)."""
        return self.get(modality, source, cfg, lambda: get_modality(modality).process(source, cfg, train=False))

    def fill(self, items: Iterable[tuple[str, Any]], preprocess: dict[str, Any], workers: int = 1) -> int:
        """Decode ``(modality, source)`` items not cached yet with ``preprocess[modality]``, in ``workers`` processes;
        returns how many were added (unreadable sources are left out, for the dataset to log when it meets them)."""
        todo = list(
            dict.fromkeys(
                (m, s) for m, s in items if (k := self._key(m, s, preprocess[m])) is not None and k not in self._store
            )
        )
        tasks = [(m, s, preprocess[m]) for m, s in todo]
        if workers <= 1 or len(tasks) < 2:
            results: Iterable[torch.Tensor | None] = map(_process_or_none, tasks)
            pool = None
        else:
            pool = ProcessPoolExecutor(max_workers=workers, initializer=torch.set_num_threads, initargs=(1,))
            results = pool.map(_process_or_none, tasks, chunksize=max(1, min(32, len(tasks) // (8 * workers))))
        added = 0
        try:
            for (m, s), x in zip(todo, results):
                if x is not None:
                    self._store[(m, str(s))] = x
                    added += 1
        finally:
            if pool is not None:
                pool.shutdown()
        return added


def _process_or_none(task: tuple[str, Any, Any]) -> torch.Tensor | None:
    modality, source, cfg = task
    try:
        return get_modality(modality).process(source, cfg, train=False)
    except _BUGS:
        raise
    except Exception:  # noqa: BLE001 — left for the dataset's bad-sample policy
        return None


def build_pair_sample(
    sample_id: str,
    sources: dict[str, Any],
    locations: dict[str, str],
    captions_for: Callable[[str], list[str]],
    spec: PairSpec,
    *,
    train: bool,
    bad: BadSampleLog,
    split: str | None = None,
    seed: int | None = None,
    process: Callable[[str, Any, Any, bool], Any] | None = None,
    cache: SampleCache | None = None,
) -> dict[str, Any] | None:
    """Load one sample's pairs (see the module docstring). ``sources``: modality -> path / bytes;
    ``locations``: modality -> what to print in the skip log; ``process(modality, source, cfg, train)`` replaces
    the plugin's ``process`` (webdataset shards use it to fall back to a temporary file); ``cache`` memoises
    inputs and captions (:class:`SampleCache`)."""
    process = process or (lambda m, src, cfg, tr: get_modality(m).process(src, cfg, train=tr))
    if cache is not None:  # eval-mode entries: only a miss computes, under the sample's seed
        uncached, seed_misses = process, seed if train else None

        def process(m: str, src: Any, cfg: Any, tr: bool) -> Any:
            def compute() -> Any:
                with seeded(seed_misses):
                    return uncached(m, src, cfg, False)

            return cache.get(m, src, cfg, compute)

    wanted = [m for m in spec.modalities if m in sources]
    anchors: dict[str, Any] = {}
    keys: dict[str, str] = {}
    rng = random.Random(seed)

    def fail(m: str, e: Exception) -> None:
        if isinstance(e, _BUGS) or bad.policy == "raise":
            raise e
        bad.record(sample_id, locations.get(m, sources.get(m, "")), m, _describe_error(e), split)

    # seeding saves and restores three generators (0.1 ms; 7 ms a batch of 64): not around cache hits (they draw none)
    with seeded(seed if train and cache is None else None):
        if spec.anchor == "text":  # tokenise first: no media is decoded for a sample without usable captions
            text = get_modality("text")
            for m in wanted:
                caps = captions_for(m)
                if not caps:
                    continue
                cap = rng.choice(caps) if train else caps[0]
                try:
                    tcfg = spec.preprocess["text"]
                    anchors[m] = (
                        text.process(cap, tcfg, train=train) if cache is None else cache.process("text", cap, tcfg)
                    )
                    keys[m] = cap
                except Exception as e:  # noqa: BLE001 — the skip policy
                    fail("text", e)
            wanted = [m for m in wanted if m in anchors]
        else:
            wanted = [m for m in wanted if spec.anchor in sources] if wanted else []
            if wanted:
                try:
                    x = process(spec.anchor, sources[spec.anchor], spec.preprocess[spec.anchor], train)
                except Exception as e:  # noqa: BLE001
                    fail(spec.anchor, e)
                    return None
                anchors = {m: x for m in wanted}
                keys = {m: str(sample_id) for m in wanted}
        inputs = {}
        for m in wanted:
            try:
                inputs[m] = process(m, sources[m], spec.preprocess[m], train)
            except Exception as e:  # noqa: BLE001
                fail(m, e)
    if not inputs:
        return None
    return {
        "id": str(sample_id),
        "inputs": inputs,
        "anchors": {m: anchors[m] for m in inputs},
        "anchor_keys": {m: keys[m] for m in inputs},
    }


class PairedDataset(Dataset):
    """Map-style dataset of manifest records -> paired samples (``None`` for a sample with nothing usable).

    Index with an ``int`` or with the ``(epoch, index)`` keys of :class:`bind.data.sampler.ResumableSampler`
    (the epoch seeds training augmentations).
    """

    def __init__(
        self,
        records: list[ManifestRecord],
        spec: PairSpec,
        *,
        train: bool = True,
        bad: BadSampleLog | None = None,
        seed: int = 0,
        cache: SampleCache | None = None,
    ) -> None:
        self.spec, self.train, self.seed, self.cache = spec, train, seed, cache
        self.bad = bad or BadSampleLog()
        usable = set(spec.modalities)
        self.records = [r for r in records if usable & set(r.media)]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | None:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rec = self.records[index]
        sources: dict[str, Any] = dict(rec.media)
        return build_pair_sample(
            rec.id,
            sources,
            {m: str(p) for m, p in rec.media.items()},
            lambda m: rec.anchor_captions(m, self.spec.caption_source),
            self.spec,
            train=self.train,
            bad=self.bad,
            split=rec.split,
            seed=sample_seed(self.seed, epoch, rec.id),
            cache=self.cache,
        )
