"""Image and text plugins: real decoding, CLIP preprocessing constants, tokenizers, towers, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import bind
from bind.errors import MediaError
from modalities.image import CLIP_MEAN, CLIP_STD
from modalities.text import TextPreprocess, load_tokenizer, tokenize


@pytest.fixture
def image_files(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)
    paths = {}
    for ext in ("png", "jpg", "webp"):
        p = tmp_path / f"img.{ext}"
        Image.fromarray(arr).save(p)
        paths[ext] = p
    return arr, paths


def test_image_formats_load_transform_encode(tiny_model, image_files):
    _, paths = image_files
    batch = tiny_model.prepare("image", [paths["png"], paths["jpg"], paths["webp"], paths["png"].read_bytes()])
    assert batch.shape == (4, 3, 64, 64)
    emb = tiny_model.encode("image", batch)
    assert emb.shape == (4, 64)
    torch.testing.assert_close(batch[0], batch[3])  # path and bytes decode identically


def test_image_preprocessing_uses_clip_constants(image_files):
    arr, paths = image_files
    plugin = bind.get_modality("image")
    cfg = plugin.preprocess_config({"preset": "imagebind"})
    assert (cfg.size, cfg.crop_size, cfg.interpolation) == (224, 224, "bicubic")
    assert cfg.mean == CLIP_MEAN and cfg.std == CLIP_STD
    x = plugin.process(paths["png"], cfg)
    assert x.shape == (3, 224, 224)
    # a flat grey image maps to (v/255 - mean) / std exactly
    grey = Image.new("RGB", (300, 250), (128, 128, 128))
    y = plugin.transform(grey, cfg)
    expect = (128 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(y.mean(dim=(1, 2)), expect, atol=1e-4, rtol=0)


def test_image_eval_is_deterministic_train_is_random(image_files):
    _, paths = image_files
    plugin = bind.get_modality("image")
    cfg = plugin.preprocess_config({"size": 64, "crop_size": 64})
    raw = Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    assert torch.equal(plugin.transform(raw, cfg), plugin.transform(raw, cfg))
    torch.manual_seed(0)
    a = plugin.transform(raw, cfg, train=True)
    b = plugin.transform(raw, cfg, train=True)
    assert a.shape == b.shape == (3, 64, 64) and not torch.equal(a, b)


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda p: p / "missing.png", "file not found"),
        (lambda p: (p / "empty.png").write_bytes(b"") and p / "empty.png" or p / "empty.png", "empty"),
        (lambda p: (p / "bad.jpg").write_bytes(b"\xff\xd8garbage" * 10) and p / "bad.jpg", "not a decodable image"),
    ],
)
def test_bad_image_files_raise_media_error_naming_path(tmp_path, make, reason):
    path = make(tmp_path)
    plugin = bind.get_modality("image")
    with pytest.raises(MediaError, match=reason) as e:
        plugin.load(path, plugin.preprocess_config())
    assert e.value.modality == "image" and str(path) in str(e.value)


def test_grey_and_rgba_images_become_rgb(tmp_path):
    plugin = bind.get_modality("image")
    for mode in ("L", "RGBA", "I;16"):
        p = tmp_path / f"{mode.replace(';', '')}.png"
        Image.new(mode, (40, 30)).save(p)
        assert plugin.load(p, None).mode == "RGB"


# --- text ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_tokenizer_dir(tmp_path_factory):
    """A tiny CLIP BPE tokenizer written to disk and loaded back through transformers (no downloads)."""
    from transformers import CLIPTokenizer

    d = tmp_path_factory.mktemp("clip_tok")
    chars = list("abcdefghijklmnopqrstuvwxyz")
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate(chars)})
    merges = ["#version: 0.2", "r e", "c u", "cu b", "cub e</w>"]
    for m in merges[1:]:
        a, b = m.split()
        vocab.setdefault(a + b, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("\n".join(merges) + "\n")
    CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), pad_token="<|endoftext|>").save_pretrained(d)
    return d


def test_clip_bpe_77_tokens_keeps_eot_when_truncating(clip_tokenizer_dir):
    cfg = TextPreprocess(tokenizer=str(clip_tokenizer_dir), context_length=77)
    tok = load_tokenizer(cfg.tokenizer)
    eot, sot = tok.eos_token_id, tok.bos_token_id
    short = tokenize(["a red cube"], cfg)[0]
    assert short.shape == (77,) and short[0] == sot
    long = tokenize(["abc " * 200], cfg)[0]
    assert long.shape == (77,) and long[0] == sot and long[-1] == eot


def test_clip_tokenizer_model_pools_eot(clip_tokenizer_dir):
    torch.manual_seed(0)
    model = bind.create_model(
        "bind-tiny", modalities=["text"], preprocess={"tokenizer": str(clip_tokenizer_dir), "context_length": 77}
    )
    ids = model.prepare("text", ["a red cube", "abc " * 200])
    enc = model.encoder("text")
    _, _, pool_index = enc.forward_tokens(ids)
    assert pool_index.tolist() == [int((ids[0] == enc.cfg.stem["eot_token_id"]).int().argmax()), 76]
    # causal + EOT pooling: tokens after the EOT (padding) cannot change the embedding
    ids2 = ids.clone()
    ids2[0, pool_index[0] + 1 :] = 3
    torch.testing.assert_close(model.encode("text", ids[:1]), model.encode("text", ids2[:1]))


def test_text_sources_and_errors(tiny_model, tmp_path):
    plugin = bind.get_modality("text")
    cfg = tiny_model.preprocess_config("text")
    p = tmp_path / "caption.txt"
    p.write_text("a red cube\n")
    assert plugin.load(p, cfg) == "a red cube"
    assert plugin.load(b"a red cube", cfg) == "a red cube"
    with pytest.raises(MediaError, match="text: .*missing.txt.*file not found"):
        plugin.load(tmp_path / "missing.txt", cfg)
    with pytest.raises(MediaError, match="not UTF-8"):
        plugin.load(b"\xff\xfe\xfa", cfg)


def test_minilm_tower_mean_pooling_matches_sentence_transformers_recipe():
    from transformers import AutoModel, AutoTokenizer

    from bind.towers import minilm_path

    model = bind.create_model("bind-minilm-tiny", modalities=["text"])
    texts = ["a hot red cube moving left", "a cold blue sphere"]
    ours = model.encode("text", model.prepare("text", texts))
    tok, ref = AutoTokenizer.from_pretrained(minilm_path()), AutoModel.from_pretrained(minilm_path()).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = ref(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    expect = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    torch.testing.assert_close(ours, expect, atol=1e-5, rtol=0)
    assert ours.shape == (2, 384)
    assert not any(p.requires_grad for p in model.encoder("text").parameters())  # frozen anchor


def test_minilm_tower_saves_and_reloads_offline(tmp_path):
    model = bind.create_model("bind-minilm-tiny", modalities=["text"])
    ids = model.prepare("text", ["a warm green cone"])
    before = model.encode("text", ids)
    loaded = bind.load_model(model.save_pretrained(tmp_path / "m"))
    assert torch.equal(before, loaded.encode("text", loaded.prepare("text", ["a warm green cone"])))
