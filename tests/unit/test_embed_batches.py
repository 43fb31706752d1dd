"""The one batched-embedding path (``BindModel.embed_sources`` / ``embed_tensors``): batches, padding trimmed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bind.registry import get_modality

TEXTS = ["a red cube", "a big green sphere moving left fast", "cone", "a small purple torus turning", "a cylinder"]


def test_embed_sources_batches_and_trims_text_padding(tiny_model, monkeypatch):
    encode, widths = tiny_model.encode, []

    def spy(modality, x, **kwargs):
        widths.append(x.shape[1])
        return encode(modality, x, **kwargs)

    full = encode("text", tiny_model.prepare("text", TEXTS))  # one batch, padded to the context length
    monkeypatch.setattr(tiny_model, "encode", spy)
    out = tiny_model.embed_sources("text", TEXTS, batch_size=2)
    context = tiny_model.prepare("text", TEXTS).shape[1]
    lengths = [int((tiny_model.prepare("text", [t]) != 0).sum()) for t in TEXTS]
    assert widths == [max(lengths[0:2]), max(lengths[2:4]), lengths[4]] and max(widths) < context
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)  # trimming is exact

    plugin, cfg = get_modality("text"), tiny_model.preprocess_config("text")
    tensors = [plugin.process(t, cfg) for t in TEXTS]
    torch.testing.assert_close(tiny_model.embed_tensors("text", tensors, batch_size=3), out, atol=1e-5, rtol=1e-5)
    assert tiny_model.embed_sources("text", []).shape == (0, tiny_model.embed_dim)


def test_embed_tensors_of_media_match_one_encode(tiny_model):
    rng = np.random.default_rng(0)
    batch = tiny_model.prepare("image", [rng.integers(0, 255, (40, 48, 3), dtype=np.uint8) for _ in range(5)])
    out = tiny_model.embed_tensors("image", list(batch), batch_size=2)
    torch.testing.assert_close(out, tiny_model.encode("image", batch), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5))


def test_a_fresh_process_loads_a_tower_model_and_embeds_audio(tmp_path):
    """Loading builds the model on the meta device first; a transformers tower imports torchaudio lazily there, whose
    module-level tensors then stayed meta and every later audio fbank failed ("Cannot copy out of meta tensor")."""
    import subprocess
    import sys
    from pathlib import Path

    import bind
    from tests.media import tone, write_audio

    root = Path(__file__).resolve().parents[2]
    bind.create_model("bind-minilm-tiny", modalities=["text", "audio"]).save_pretrained(tmp_path / "model")
    wav = write_audio(tmp_path / "a.wav", tone(1.0))
    model = str(tmp_path / "model")
    code = f"import bind; m = bind.load_model({model!r}); print(tuple(m.embed_sources('audio', [{str(wav)!r}]).shape))"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "(1, 384)"


def _old_embed_items(model, modality, sources, batch_size):
    """The loop ``embed_items`` ran before it went through ``BindModel.embed_sources`` (kept as the reference)."""
    from bind.errors import MediaError

    plugin, cfg = get_modality(modality), model.preprocess_config(modality)
    out, rows, bad = [], [], []
    for start in range(0, len(sources), batch_size):
        good = []
        for i in range(start, min(start + batch_size, len(sources))):
            try:
                good.append((i, plugin.process(sources[i], cfg, train=False)))
            except MediaError as e:
                bad.append((i, str(e)))
        if good:
            out.append(model.encode(modality, plugin.collate([x for _, x in good])).float().cpu())
            rows += [i for i, _ in good]
    return torch.cat(out), rows, bad


def test_embed_items_goes_through_embed_sources_unchanged(tiny_model, tmp_path):
    """``embed_items`` (the ``bindspace embed`` path) now runs ``BindModel.embed_sources``: media embeddings are
    bitwise those of its old loop, undecodable sources are still skipped and listed, the progress bar still counts
    every source; text embeddings are ``embed_sources``' own (padding trimmed) and within rounding of the old ones."""
    from PIL import Image

    from bind.errors import MediaError
    from bind.retrieval.embed import embed_items
    from tests.media import write_corrupt

    rng = np.random.default_rng(1)
    sources = []
    for i in range(7):
        if i in (2, 3):
            sources.append(write_corrupt(tmp_path / f"bad{i}.png", header=b"\x89PNG\r\n\x1a\n"))
        else:
            sources.append(tmp_path / f"ok{i}.png")
            Image.fromarray(rng.integers(0, 255, (30 + i, 40, 3), dtype=np.uint8)).save(sources[-1])
    old, old_rows, old_bad = _old_embed_items(tiny_model, "image", sources, batch_size=3)
    counted = []
    es = embed_items(tiny_model, "image", [(f"id{i}", s) for i, s in enumerate(sources)], batch_size=3)
    assert torch.equal(es.embeddings, old) and es.rows == old_rows == [0, 1, 4, 5, 6]
    assert [(s["id"], s["reason"]) for s in es.skipped] == [(f"id{i}", r) for i, r in old_bad] and len(old_bad) == 2
    assert es.embeddings.device.type == "cpu" and not tiny_model.training

    skipped = []
    emb = tiny_model.embed_sources("image", sources, 3, skipped=skipped, progress=counted.append)
    assert torch.equal(emb, old) and skipped == old_bad and counted == [3, 3, 1]
    with pytest.raises(MediaError):  # without a `skipped` list a broken source is an error, as before
        tiny_model.embed_sources("image", sources, 3)

    texts = [(f"t{i}", t) for i, t in enumerate(TEXTS)]
    old_text = _old_embed_items(tiny_model, "text", TEXTS, batch_size=2)[0]
    new_text = embed_items(tiny_model, "text", texts, batch_size=2).embeddings
    assert torch.equal(new_text, tiny_model.embed_sources("text", TEXTS, 2))
    torch.testing.assert_close(new_text, old_text, atol=1e-6, rtol=0)


def test_embed_tensors_embeds_texts_longest_first_and_returns_them_in_order(tiny_model, monkeypatch):
    """Token-id samples are batched by length (each batch then trims to its own longest text) and the rows come back
    in the caller's order, the same embeddings as one batch."""
    plugin, cfg = get_modality("text"), tiny_model.preprocess_config("text")
    texts = [TEXTS[i % len(TEXTS)] + " and more" * (i % 3) for i in range(11)]
    tensors = [plugin.process(t, cfg) for t in texts]
    encode, widths = tiny_model.encode, []

    def spy(modality, x, **kwargs):
        widths.append(x.shape[1])
        return encode(modality, x, **kwargs)

    full = encode("text", torch.stack(tensors))
    monkeypatch.setattr(tiny_model, "encode", spy)
    out = tiny_model.embed_tensors("text", tensors, batch_size=4)
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)
    lengths = sorted((int((t != 0).sum()) for t in tensors), reverse=True)
    assert widths == [lengths[0], lengths[4], lengths[8]]  # longest first: every batch as wide as its own longest
    assert tiny_model.embed_tensors("text", tensors[:1]).shape == (1, tiny_model.embed_dim)
