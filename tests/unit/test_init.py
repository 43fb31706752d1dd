"""Initialising modality encoders from pretrained ViTs (tiny transformers CLIP and timm models built here)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.layers import resample_patch_embed

from bind.config import EncoderConfig
from bind.encoder import ModalityEncoder
from bind.init import (
    adapt_in_channels,
    bind_vit_weights,
    inflate_temporal,
    init_encoder_from_vit,
    read_vit_weights,
    vit_encoder_overrides,
)
from bind.nn.stems import PatchStem2d, TubeletStem, resize_pos_2d


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=100,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=24,
    )
    d = tmp_path_factory.mktemp("clip")
    model = CLIPModel(cfg).eval()
    model.save_pretrained(d)
    return d, model


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory):
    import safetensors.torch
    import timm

    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=2,
        embed_dim=32,
        num_heads=2,
        num_classes=0,
    ).eval()
    f = tmp_path_factory.mktemp("timm") / "vit.safetensors"
    safetensors.torch.save_file(vit.state_dict(), str(f))
    return f, vit


def _encoder(overrides, modality="image", in_chans=3, size=32, patch=8, embed_dim=24, **extra):
    cfg = EncoderConfig(
        modality=modality,
        embed_dim=embed_dim,
        stem={"patch_size": patch, "in_chans": in_chans},
        preprocess={"size": size, "crop_size": size},
        **{**overrides, **extra},
    )
    return ModalityEncoder(cfg).eval()


def test_clip_init_reproduces_clip_image_embeddings(clip_dir):
    d, clip = clip_dir
    w = read_vit_weights(d)
    over = vit_encoder_overrides(w)
    assert over["act"] == "quick_gelu" and over["ln_pre"] and over["norm_eps"] == 1e-5
    enc = _encoder(over)
    report = init_encoder_from_vit(enc, w)
    assert not report.skipped and report.loaded > 20
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = clip.get_image_features(pixel_values=x)
        ref = F.normalize(getattr(ref, "pooler_output", ref), dim=-1)
        assert torch.allclose(enc(x), ref, atol=1e-5)


def test_timm_init_reproduces_timm_features(timm_file):
    f, vit = timm_file
    w = read_vit_weights(f, heads=2)
    enc = _encoder(vit_encoder_overrides(w))
    report = init_encoder_from_vit(enc, w)
    assert any("bias folded" in a for a in report.adapted)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens, _, _ = enc.forward_tokens(x)
        ours = enc.head.norm(enc.head.pooled(tokens))
        assert torch.allclose(ours, vit(x), atol=1e-5)


def test_one_channel_stem_and_position_resize(timm_file):
    f, vit = timm_file
    w = read_vit_weights(f, heads=2)
    enc = _encoder(vit_encoder_overrides(w), in_chans=1, size=48)
    report = init_encoder_from_vit(enc, w, channel_init="sum")
    assert any("3 -> 1 channels (sum)" in a for a in report.adapted)
    assert any("(4, 4) -> (6, 6)" in a for a in report.adapted)
    # a grey image seen by the 1-channel stem == the same grey image replicated to RGB in the source
    grey = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        ours = F.conv2d(grey, enc.stem.proj.weight, stride=8)
        theirs = F.conv2d(grey.expand(1, 3, 8, 8), w.patch_weight, stride=8)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_adaptation_helpers():
    w = torch.randn(4, 3, 8, 8)
    assert torch.allclose(adapt_in_channels(w, 1, "mean"), w.mean(1, keepdim=True))
    assert adapt_in_channels(w, 2, "sum").shape == (4, 2, 8, 8)
    patch = torch.randn(1, 3, 8, 8)
    big = F.interpolate(patch, size=(16, 16), mode="bilinear", align_corners=False)
    # PI-resize (timm.layers.resample_patch_embed, bilinear): the enlarged patch gets the old filter's response
    resized = resample_patch_embed(w, [16, 16], interpolation="bilinear", antialias=False)
    assert torch.allclose(F.conv2d(big, resized), F.conv2d(patch, w), atol=1e-4)
    # positions: timm's bicubic resampling is the F.interpolate(bicubic, align_corners=False) it replaced
    pos = torch.randn(1, 4 * 6, 5)
    grid = pos.reshape(1, 4, 6, 5).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(7, 3), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 21, 5)
    torch.testing.assert_close(resize_pos_2d(pos, (4, 6), (7, 3)), want)
    avg, centre = inflate_temporal(w, 2, "average"), inflate_temporal(w, 3, "center")
    assert torch.allclose(avg.sum(2), w) and torch.equal(centre[:, :, 1], w) and centre[:, :, 0].abs().sum() == 0
    with pytest.raises(ValueError, match="channel init"):
        adapt_in_channels(w, 1, "median")


def test_tubelet_inflation_keeps_static_clip_response(timm_file):
    f, _ = timm_file
    w = read_vit_weights(f, heads=2)
    stem = TubeletStem(3, 32, patch_size=8, image_size=32, num_frames=4, temporal_patch=2)
    frame = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        stem.proj.weight.copy_(inflate_temporal(w.patch_weight, 2, "average"))
        clip = frame[:, :, None].expand(1, 3, 2, 8, 8)
        assert torch.allclose(stem.proj(clip).flatten(), F.conv2d(frame, w.patch_weight).flatten(), atol=1e-5)


def test_stem_with_frame_difference_or_conv_layers_keeps_what_the_image_model_means(timm_file):
    f, _ = timm_file
    w = read_vit_weights(f, heads=2)

    def encoder(modality, stem, preprocess):
        cfg = EncoderConfig(
            modality=modality, embed_dim=24, stem=stem, preprocess=preprocess, **vit_encoder_overrides(w)
        )
        return ModalityEncoder(cfg).eval()

    clip = {"size": 32, "crop_size": 32, "frames_per_clip": 4}
    enc = encoder("video", {"patch_size": 8, "temporal_patch": 2, "frame_difference": True}, clip)
    report = init_encoder_from_vit(enc, w)
    assert "frame-difference channels start as copies of the pixel filters" in report.adapted
    weight = enc.stem.proj.weight  # [D, 6, 2, 8, 8]: pixel filters inflated, difference filters the same (TSN)
    assert torch.equal(weight[:, 3:], weight[:, :3])
    torch.testing.assert_close(weight[:, :3].sum(2), w.patch_weight)
    conv = encoder("image", {"patch_size": 8, "conv": [8]}, {"size": 32, "crop_size": 32})
    report = init_encoder_from_vit(conv, w)
    assert any("conv stem" in s for s in report.skipped)  # the projection reads conv features, not pixels


def test_video_starts_as_a_trained_bind_image_encoder(tmp_path):
    """LanguageBind's recipe with a model of one's own: a saved bind image encoder (conv stem included) inflated into
    a video encoder with 3-frame conv kernels and frame-difference channels gives a still clip the image's
    embedding."""
    from bind.train.model_builder import build_train_model

    size = {"size": 32, "crop_size": 32}
    image = {"stem": {"patch_size": 8, "conv": [8, 16]}, "preprocess": size}
    torch.manual_seed(0)
    base = build_train_model("bind-tiny", modalities=["image"], encoders={"image": image})
    with torch.no_grad():  # trained-looking BatchNorm statistics
        for bn in (m for m in base.encoder("image").modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    base.eval().save_pretrained(tmp_path / "base")
    stem = {"patch_size": 8, "conv": [8, 16], "temporal_patch": 2, "conv_time_kernel": 3, "frame_difference": True}
    video = {"stem": stem, "preprocess": {**size, "frames_per_clip": 2}}  # one tubelet step: the image's tokens
    model = build_train_model(
        "bind-tiny",
        modalities=["video"],
        encoders={"video": video},
        init_from={"video": f"{tmp_path / 'base'}#image"},
        init_temporal="center",
    )
    frames = torch.rand(2, 3, 32, 32)
    still = frames[:, :, None].expand(-1, -1, 2, -1, -1).contiguous()  # [B, C, T, H, W]
    with torch.no_grad():
        want = base.encoder("image")(frames)
        got = model.encoder("video").eval()(still)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    first = model.encoder("video").stem
    conv0 = next(m for m in first.modules() if isinstance(m, torch.nn.Conv3d))
    assert torch.equal(conv0.weight[:, 3:], conv0.weight[:, :3])  # frame differences through the same filters
    # a stem without conv layers keeps its own projection: the source's reads conv features, not pixels
    plain = build_train_model("bind-tiny", modalities=["depth"], encoders={"depth": {"stem": {"patch_size": 8}}})
    proj = next(m for m in plain.encoder("depth").modules() if isinstance(m, PatchStem2d)).proj
    before = proj.weight.detach().clone()
    report = init_encoder_from_vit(plain.encoder("depth"), bind_vit_weights(base.encoder("image")))
    assert any("projects conv features" in s for s in report.skipped) and torch.equal(proj.weight, before)
    with pytest.raises(ValueError, match="#image"):  # a bind model without an encoder named
        read_vit_weights(tmp_path / "base")
    with pytest.raises(ValueError, match="2-D patch stem"):
        read_vit_weights(f"{tmp_path / 'base'}#text")


def test_shape_mismatch_and_bad_sources(timm_file, tmp_path):
    f, _ = timm_file
    w = read_vit_weights(f, heads=2)
    with pytest.raises(ValueError, match="blocks"):
        init_encoder_from_vit(_encoder({**vit_encoder_overrides(w), "depth": 3}), w)
    bad = tmp_path / "x.pt"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a timm ViT"):
        read_vit_weights(bad)
    with pytest.raises(FileNotFoundError):
        read_vit_weights(tmp_path / "missing.safetensors")
