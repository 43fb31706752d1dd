"""webdataset ``.tar`` shards for training at scale (Aizman et al. 2019, "High Performance I/O For Large Scale Deep
Learning"; the ``webdataset`` package).

A sample is the group of members sharing a key: ``KEY.json`` (``{"id", "text", "captions", "factors", "split"}``,
the manifest fields), optionally ``KEY.txt`` (the caption), and one member per modality named by one of its plugin's
``webdataset_keys`` (double extensions like ``KEY.depth.png`` tell modalities that share a file type apart).
Media bytes go to the plugin's ``load``; a plugin that needs a file gets a temporary one with the member's suffix.

Shards are split over ranks and workers (``split_by_node`` / ``split_by_worker``). Under DDP every rank must see the
same number of batches: give ``epoch_size`` (samples per epoch over all ranks), which resamples shards with
replacement and cuts each rank's stream to ``epoch_size / world_size`` samples.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bind.data.bad_samples import BadSampleLog
from bind.data.dataset import PairSpec, build_pair_sample
from bind.data.manifest import ManifestRecord
from bind.registry import get_modality


def shard_keys(modality: str) -> tuple[str, ...]:
    """Member keys of ``modality`` in a shard, preferred first (the plugin's ``webdataset_keys``)."""
    return tuple(get_modality(modality).webdataset_keys)


def _process_bytes_or_file(modality: str, source: Any, cfg: Any, train: bool) -> Any:
    plugin = get_modality(modality)
    if not isinstance(source, tuple):
        return plugin.process(source, cfg, train=train)
    data, ext = source
    try:
        return plugin.process(data, cfg, train=train)
    except Exception:  # noqa: BLE001 — some decoders only read files: retry with one, report its error if any
        fd, name = tempfile.mkstemp(suffix="." + ext)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return plugin.process(name, cfg, train=train)
        finally:
            os.unlink(name)


class ShardSampleDecoder:
    """Turns one webdataset sample (``{"__key__", "__url__", ext: bytes}``) into a paired sample or ``None``."""

    def __init__(
        self, spec: PairSpec, *, train: bool, bad: BadSampleLog, extensions: dict[str, tuple[str, ...]] | None = None
    ) -> None:
        self.spec, self.train, self.bad = spec, train, bad
        self.extensions = dict(extensions or {})

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any] | None:
        key, url = raw.get("__key__", "?"), raw.get("__url__", "?")
        meta: dict[str, Any] = {}
        if "json" in raw:
            try:
                meta = json.loads(raw["json"])
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                self.bad.record(key, f"{url}#{key}.json", "json", f"not valid JSON ({e})")
                return None
        if "txt" in raw and not meta.get("text"):
            meta["text"] = raw["txt"].decode("utf-8", errors="replace").strip()
        sources, locations = {}, {}
        for m in [*self.spec.modalities, self.spec.anchor]:
            keys = self.extensions.get(m) or shard_keys(m) or tuple(k for k in raw if k.startswith(m + "."))
            for ext in keys:
                if ext in raw:
                    sources[m], locations[m] = (raw[ext], ext), f"{url}#{key}.{ext}"
                    break
        from bind.data.manifest import parse_record

        try:
            rec: ManifestRecord = parse_record({**meta, "id": meta.get("id", key)}, Path("."), f"{url}#{key}", set())
        except Exception as e:  # noqa: BLE001 — a malformed sample is a bad sample
            self.bad.record(key, f"{url}#{key}.json", "json", str(e))
            return None
        return build_pair_sample(
            rec.id,
            sources,
            locations,
            lambda m: rec.anchor_captions(m, self.spec.caption_source),
            self.spec,
            train=self.train,
            bad=self.bad,
            split=rec.split,
            seed=None,
            process=_process_bytes_or_file,
        )


def _is_sample(s: Any) -> bool:
    return s is not None


def webdataset_pairs(
    urls: str | list[str],
    spec: PairSpec,
    *,
    train: bool,
    bad: BadSampleLog | None = None,
    seed: int = 0,
    shuffle_buffer: int = 1000,
    epoch_size: int | None = None,
    world_size: int = 1,
    num_workers: int = 0,
    extensions: dict[str, tuple[str, ...]] | None = None,
):
    """An ``IterableDataset`` of paired samples from webdataset shards (brace patterns like ``a-{000..009}.tar``
    or a list of paths / URLs)."""
    import webdataset as wds

    if world_size > 1 and train and not epoch_size:
        raise ValueError(
            "webdataset training on several ranks needs epoch_size (samples per epoch over all ranks), "
            "so that every rank runs the same number of steps"
        )
    resampled = bool(train and epoch_size)
    ds = wds.WebDataset(
        urls,
        resampled=resampled,
        shardshuffle=(100 if train and not resampled else False),
        nodesplitter=wds.split_by_node,
        empty_check=False,
        seed=seed,
    )
    if train and shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer)
    ds = ds.map(ShardSampleDecoder(spec, train=train, bad=bad or BadSampleLog(), extensions=extensions))
    ds = ds.select(_is_sample)
    if epoch_size:
        ds = ds.with_epoch(max(1, epoch_size // world_size // max(1, num_workers)))
    return ds


def member_key(modality: str, path: Path) -> str:
    """The shard member key of a ``modality`` file: the plugin's key for the file's suffix (``depth.npy`` or
    ``npy``), else its first key; a plugin without keys gets ``<modality>.<suffix>``."""
    suffix = path.suffix.lstrip(".").lower()
    keys = shard_keys(modality)
    for key in (f"{modality}.{suffix}", suffix):
        if key in keys:
            return key
    return keys[0] if keys else f"{modality}.{suffix}"


def write_shards(records: list[ManifestRecord], pattern: str | Path, samples_per_shard: int = 1000) -> list[Path]:
    """Pack manifest records into shards (``pattern`` like ``out/train-%06d.tar``); returns the shard paths."""
    import webdataset as wds

    Path(str(pattern)).parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with wds.ShardWriter(str(pattern), maxcount=samples_per_shard, verbose=0) as sink:
        for rec in records:
            sample: dict[str, Any] = {
                "__key__": rec.id.replace(".", "_"),
                "json": json.dumps(
                    {
                        "id": rec.id,
                        "text": rec.text,
                        "captions": rec.captions,
                        "factors": rec.factors,
                        "split": rec.split,
                    }
                ).encode(),
            }
            for m, path in rec.media.items():
                sample[member_key(m, path)] = path.read_bytes() if path.is_file() else b""
            sink.write(sample)
            if sink.fname and (not written or written[-1] != Path(sink.fname)):
                written.append(Path(sink.fname))
    return written
