"""BindModel contract: shapes, unit norm, logit scales beside embeddings, save/load round trip, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

import bind
from bind.errors import InputError, ModelLoadError, UnknownModalityError


def _inputs(model, batch=3):
    torch.manual_seed(1)
    return {
        "text": model.prepare("text", ["a red cube", "a blue sphere", "a hot green cone moving left"][:batch]),
        "image": torch.randn(batch, 3, 64, 64),
    }


def test_registry_lists_models_and_modalities():
    assert {"bind-tiny", "bind-base", "bind-large"} <= set(bind.list_models())
    assert {"text", "image"} <= set(bind.list_modalities())


def test_embeddings_are_unit_norm_with_shape_b_d(tiny_model):
    out = tiny_model.embed(_inputs(tiny_model))
    for m, e in out.items():
        assert e.shape == (3, tiny_model.embed_dim), m
        torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))


def test_logit_scale_kept_beside_embeddings(tiny_model):
    scale = tiny_model.logit_scale("image")
    torch.testing.assert_close(scale, torch.tensor(1 / 0.07))
    enc = tiny_model.encoder("image")
    with torch.no_grad():
        enc.logit_scale.fill_(10.0)  # exp(10) > 100: clamped
    torch.testing.assert_close(tiny_model.logit_scale("image"), torch.tensor(100.0))
    e = tiny_model.encode("image", torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(2))  # scale never baked in


def test_save_pretrained_load_model_bit_identical(tiny_model, tmp_path):
    inputs = _inputs(tiny_model)
    before = tiny_model.embed(inputs)
    out = tiny_model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["config.json", "model.safetensors"]
    assert (out / "tokenizer_text").is_dir()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["encoders"]["text"]["preprocess"]["tokenizer"] == "./tokenizer_text"
    loaded = bind.load_model(out)
    texts = ["a red cube", "a blue sphere", "a hot green cone moving left"]
    after = loaded.embed({"text": loaded.prepare("text", texts), "image": inputs["image"]})
    for m in before:
        assert torch.equal(before[m], after[m]), m


def test_save_overwrites_atomically(tiny_model, tmp_path):
    d = tmp_path / "m"
    tiny_model.save_pretrained(d)
    tiny_model.save_pretrained(d)  # replacing an existing model leaves exactly one, loadable
    assert bind.load_model(d).modalities == tiny_model.modalities
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_load_refuses_mismatched_weights(tiny_model, tmp_path):
    d = tiny_model.save_pretrained(tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["encoders"]["image"]["depth"] = 3
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="model.safetensors: .*missing .*trunk.blocks.2"):
        bind.load_model(d)


def test_unknown_modality_is_named(tiny_model):
    with pytest.raises(UnknownModalityError, match="has no 'smell' encoder"):
        tiny_model.encode("smell", torch.randn(1, 3))
    with pytest.raises(KeyError, match="unknown modality 'smell'"):
        bind.get_modality("smell")
    with pytest.raises(KeyError, match="unknown model"):
        bind.create_model("bind-nonexistent")


@pytest.mark.parametrize(
    "x,match",
    [
        (torch.randn(2, 64, 64), r"image: expected a tensor of shape \[B, 3, H, W\]"),
        (torch.randn(2, 1, 64, 64), r"image: expected 3 channels"),
        (torch.randint(0, 255, (2, 3, 64, 64)), r"image: expected a floating-point tensor"),
        ([1, 2, 3], r"image: expected a torch.Tensor"),
    ],
)
def test_bad_image_tensor_names_modality_and_shape(tiny_model, x, match):
    with pytest.raises(InputError, match=match):
        tiny_model.encode("image", x)


def test_bad_text_tensor_is_refused(tiny_model):
    with pytest.raises(InputError, match=r"text: expected integer token ids \[B, L\]"):
        tiny_model.encode("text", torch.randn(2, 8))


def test_multiple_clips_are_averaged_and_renormalised(tiny_model):
    x = torch.randn(2, 3, 3, 64, 64)  # [B, clips, C, H, W]
    e = tiny_model.encode("image", x)
    per_clip = torch.nn.functional.normalize(
        tiny_model.encode("image", x.flatten(0, 1)).reshape(2, 3, -1).mean(1), dim=-1
    )
    torch.testing.assert_close(e, per_clip, atol=1e-6, rtol=0)


def test_backend_override_gives_same_embeddings():
    torch.manual_seed(0)
    a = bind.create_model("bind-tiny", modalities=["image"], attn_backend="sdpa")
    b = bind.create_model("bind-tiny", modalities=["image"], attn_backend="math")
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(a.encode("image", x), b.encode("image", x), atol=1e-5, rtol=0)


def test_freeze_by_modality(tiny_model):
    tiny_model.freeze(["text"])
    assert not any(p.requires_grad for p in tiny_model.encoder("text").parameters())
    assert all(p.requires_grad for p in tiny_model.encoder("image").parameters())
    assert tiny_model.config.frozen == ["text"]


def test_config_json_round_trip():
    cfg = bind.expand_config(bind.registry.model_config_dict("bind-base"), modalities=["image", "text"])
    assert cfg.encoders["image"].width == 768 and cfg.encoders["image"].depth == 12
    assert bind.BindConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_patch_dropout_only_in_training():
    torch.manual_seed(0)
    m = bind.create_model("bind-tiny", modalities=["image"], patch_dropout=0.5)
    x = torch.randn(2, 3, 64, 64)
    m.eval()
    torch.testing.assert_close(m.encode("image", x), m.encode("image", x))
    enc = m.encoder("image").train()
    tokens, _, _ = enc.forward_tokens(x)
    assert tokens.shape[1] == 1 + 8  # CLS + half of 16 patches


def test_add_encoders_joins_a_modality_trained_against_the_same_anchor(tmp_path):
    torch.manual_seed(0)
    base = bind.create_model("bind-tiny", modalities=["text"])
    other = bind.create_model("bind-tiny", modalities=["text", "image"])
    other.encoder("text").load_state_dict(base.encoder("text").state_dict())
    with pytest.raises(ValueError, match="not in this model's space"):  # nothing frozen: no shared anchor
        base.add_encoders(other, ["image"])
    base.freeze(["text"])
    other.freeze(["text"])
    image = _inputs(other)["image"]
    want = other.embed({"image": image})["image"]
    base.add_encoders(other, ["image"])
    assert base.modalities == ["text", "image"]
    loaded = bind.load_model(base.save_pretrained(tmp_path / "joined"))
    assert torch.equal(loaded.embed({"image": image})["image"], want)
    stranger = bind.create_model("bind-tiny", modalities=["text", "audio"])
    stranger.freeze(["text"])
    with pytest.raises(ValueError, match="frozen text towers differ"):
        base.add_encoders(stranger, ["audio"])
    with pytest.raises(UnknownModalityError):
        base.add_encoders(other, ["thermal"])
