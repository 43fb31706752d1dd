"""The modality plugin contract as one check: a plugin passes when a small real file of its modality goes through
load -> transform -> collate -> encode -> save/load -> webdataset shard round trip -> zero-shot with nothing in
``bind/`` knowing its name. Used by ``tests/unit/test_modality_contract.py`` for every registered modality and for
a toy plugin registered only through an entry point.

``SAMPLE_WRITERS`` write real small files of the built-in modalities (``write(directory, i) -> Path``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import bind
from bind.data.dataset import PairSpec
from bind.data.manifest import read_manifest, write_manifest
from bind.data.webdataset import webdataset_pairs, write_shards
from bind.encoder import ModalityEncoder, TokenLayout
from bind.factory import expand_config
from bind.registry import model_config_dict
from bind.retrieval.zeroshot import build_classifier, evaluate_zeroshot, templates_for

SampleWriter = Callable[[Path, int], Path]


def _png(array: np.ndarray, path: Path) -> Path:
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


def _text(d: Path, i: int) -> Path:
    path = d / f"caption_{i}.txt"
    path.write_text(["a red circle on the left", "a blue square on the right", "a green star"][i % 3])
    return path


def _image(d: Path, i: int) -> Path:
    rng = np.random.default_rng(i)
    return _png(rng.integers(0, 256, (40 + 4 * i, 48, 3), dtype=np.uint8), d / f"image_{i}.png")


def _video(d: Path, i: int) -> Path:
    from media import indexed_frames, write_video

    return write_video(d / f"video_{i}.mp4", indexed_frames(6 + i, 48, 64), fps=8.0)


def _audio(d: Path, i: int) -> Path:
    from media import tone, write_audio

    return write_audio(d / f"audio_{i}.wav", tone(1.0, freq=330.0 + 110 * i))


def _depth(d: Path, i: int) -> Path:
    rng = np.random.default_rng(i)
    return _png(rng.integers(500, 4000, (40, 48), dtype=np.uint16), d / f"depth_{i}.png")  # 16-bit millimetres


def _thermal(d: Path, i: int) -> Path:
    rng = np.random.default_rng(i)
    return _png(rng.integers(0, 256, (40, 48), dtype=np.uint8), d / f"thermal_{i}.png")


def _imu(d: Path, i: int) -> Path:
    path = d / f"imu_{i}.npy"
    np.save(path, np.random.default_rng(i).standard_normal((6, 300)).astype(np.float32))
    return path


SAMPLE_WRITERS: dict[str, SampleWriter] = {
    "text": _text,
    "image": _image,
    "video": _video,
    "audio": _audio,
    "depth": _depth,
    "thermal": _thermal,
    "imu": _imu,
}
TEXT = {"preprocess": {"tokenizer": "minilm", "context_length": 16}}


def tiny_raw_config(modality: str, encoder: dict[str, Any] | None = None) -> dict[str, Any]:
    """A seconds-on-a-CPU model config with a text encoder and one for ``modality`` (``encoder``: its entry; default:
    the ``bind-tiny`` entry if it has one, else the plugin's defaults)."""
    if encoder is None:
        encoder = model_config_dict("bind-tiny")["encoders"].get(modality, {})
    encoders = {"text": TEXT} if modality == "text" else {"text": TEXT, modality: encoder}
    return {
        "name": f"contract-{modality}",
        "embed_dim": 32,
        "anchor": "text",
        "defaults": {"width": 32, "depth": 1, "heads": 2, "mlp_ratio": 2.0},
        "encoders": encoders,
    }


def check_attributes(plugin: bind.Modality) -> None:
    """The declarative half of the contract."""
    assert isinstance(plugin, bind.Modality) and plugin.name in bind.list_modalities()
    assert dataclasses.is_dataclass(plugin.Preprocess) and dataclasses.is_dataclass(plugin.StemConfig)
    assert isinstance(plugin.extensions, tuple) and all(e.startswith(".") and e == e.lower() for e in plugin.extensions)
    assert isinstance(plugin.webdataset_keys, tuple) and all("/" not in k for k in plugin.webdataset_keys)
    assert plugin.zeroshot_templates and all("{}" in t for t in plugin.zeroshot_templates)
    assert plugin.tower in (None, "text", "vision")


def check_contract(modality: str, write: SampleWriter, tmp_path: Path, encoder: dict[str, Any] | None = None) -> None:
    """Run one modality through the whole contract (see the module docstring)."""
    plugin = bind.get_modality(modality)
    check_attributes(plugin)
    media = tmp_path / "media"
    media.mkdir(parents=True, exist_ok=True)
    files = [write(media, i) for i in range(3)]
    assert all(f.suffix.lower() in plugin.extensions for f in files), (files, plugin.extensions)
    (media / "notes.unknown-suffix").write_text("not media")
    assert plugin.find_files(tmp_path) == sorted(files)  # directory inputs: scanned by the plugin's extensions

    torch.manual_seed(0)
    model = bind.BindModel(expand_config(tiny_raw_config(modality, encoder)), precision="fp32").eval()
    enc_cfg = model.encoder(modality).cfg
    cfg = plugin.preprocess_config(enc_cfg.preprocess)
    stem_cfg = plugin.stem_config(enc_cfg)
    assert isinstance(stem_cfg, plugin.StemConfig)
    with pytest.raises(ValueError, match=rf"^{modality}: unknown stem settings \['not_a_stem_key'\]; known: "):
        plugin.stem_config(dataclasses.replace(enc_cfg, stem={**enc_cfg.stem, "not_a_stem_key": 1}))

    # load -> transform (deterministic in eval) -> collate
    samples = [plugin.transform(plugin.load(Path(f), cfg), cfg, train=False) for f in files]
    assert torch.equal(samples[0], plugin.process(Path(files[0]), cfg))
    assert plugin.process(Path(files[0]), cfg, train=True).shape == samples[0].shape
    batch = plugin.collate(samples)
    assert batch.shape[0] == 3 and batch.dim() in (plugin.sample_ndim + 1, plugin.sample_ndim + 2)

    # encode; forward_features + forward_head is the encoder's forward
    with torch.no_grad():
        emb = model.encode(modality, batch)
        assert emb.shape == (3, 32) and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
        encoder_module = model.encoder(modality)
        if isinstance(encoder_module, ModalityEncoder) and batch.dim() == plugin.sample_ndim + 1:
            tokens, layout = encoder_module.forward_features(batch)
            assert isinstance(layout, TokenLayout) and tokens.shape[0] == 3
            torch.testing.assert_close(encoder_module.forward_head(tokens, layout), emb)

    # save / load
    saved = model.save_pretrained(tmp_path / "model")
    loaded = bind.load_model(saved, precision="fp32")
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed_sources(modality, [Path(f) for f in files]), emb)

    # webdataset shards: every member comes back under the plugin's keys and decodes to the same tensor
    if modality != "text":  # text is the anchor captions of a shard (``KEY.json``), not a media member
        rows = [
            {"id": f"s{i}", "split": "train", "text": f"caption {i}", modality: f"media/{f.name}"}
            for i, f in enumerate(files)
        ]
        records = read_manifest(write_manifest(tmp_path / "manifest.jsonl", rows))
        shards = write_shards(records, tmp_path / "shards" / "train-%04d.tar", samples_per_shard=2)
        spec = PairSpec([modality], "text", {modality: cfg, "text": model.preprocess_config("text")})
        got = {s["id"]: s["inputs"][modality] for s in webdataset_pairs([str(s) for s in shards], spec, train=False)}
        assert sorted(got) == ["s0", "s1", "s2"]
        for i in range(3):
            torch.testing.assert_close(got[f"s{i}"], samples[i])

    # zero-shot: the plugin's templates build a classifier in the space
    templates = templates_for(modality)
    assert templates == list(plugin.zeroshot_templates)
    classifier = build_classifier(model, ["circle", "square", "star"], templates)
    assert classifier.weights.shape == (3, 32)
    metrics = evaluate_zeroshot(classifier, emb, ["circle", "square", "star"])
    assert 0.0 <= metrics["acc1"] <= 100.0
