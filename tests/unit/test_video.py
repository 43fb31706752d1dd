"""Video plugin: real files (mp4 / webm / mkv / avi via PyAV) -> decord -> sampling -> crops -> bind-tiny encoder."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from media import frame_index_of, indexed_frames, tone, write_audio, write_corrupt, write_video

import bind
from bind.errors import InputError, MediaError
from bind.registry import get_modality
from modalities import video as video_mod
from modalities.video import crop_offsets, sample_frame_indices

FPS = 8.0


@pytest.fixture(scope="module")
def plugin():
    return get_modality("video")


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("video_media")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return bind.create_model("bind-tiny", modalities=["video"]).eval()


def small_cfg(plugin, **kw):
    return plugin.preprocess_config({"size": 32, "crop_size": 32, **kw})


# --- decoding: every container, the right frames ------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".mkv", ".avi"])
def test_containers_decode_the_sampled_frames(plugin, media_dir, suffix):
    path = write_video(media_dir / f"clip{suffix}", indexed_frames(37), fps=FPS, audio=tone(37 / FPS))
    cfg = small_cfg(plugin, frames_per_clip=8)
    raw = plugin.load(path, cfg)
    assert raw.num_frames == 37 and raw.fps == pytest.approx(FPS)
    expected = np.linspace(0, 36, 8).astype(int)
    assert raw.indices.tolist() == [expected.tolist()]
    assert [frame_index_of(f.numpy(), 37) for f in raw.frames[0]] == expected.tolist()
    x = plugin.transform(raw, cfg)
    assert x.shape == (3, 8, 32, 32) and torch.isfinite(x).all()


def test_decord_and_pyav_backends_agree(plugin, media_dir):
    path = write_video(media_dir / "agree.mp4", indexed_frames(20, 48, 80), fps=FPS)
    a = plugin.load(path, small_cfg(plugin))
    b = plugin.load(path, small_cfg(plugin, backend="pyav"))
    c = plugin.load(path.read_bytes(), small_cfg(plugin, isolate_decoder=False))
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.indices, c.indices)
    assert (a.frames.int() - b.frames.int()).abs().max() <= 2
    assert torch.equal(a.frames, c.frames)


# --- load -> transform -> encode for any frame count ----------------------------------------------------------------
@pytest.mark.parametrize("num_frames", [1, 7, 8, 37])
def test_end_to_end_any_frame_count(plugin, media_dir, model, num_frames):
    path = write_video(
        media_dir / f"n{num_frames}.mp4", indexed_frames(num_frames), fps=FPS, audio=tone(max(num_frames / FPS, 0.2))
    )
    batch = model.prepare("video", [path, path])
    cfg = model.preprocess_config("video")
    assert batch.shape == (2, 3, cfg.frames_per_clip, cfg.crop_size, cfg.crop_size)
    with torch.no_grad():
        emb = model.encode("video", batch)
    assert emb.shape == (2, model.embed_dim)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(emb[0], emb[1], atol=1e-6)


def test_short_video_repeats_frames(plugin, media_dir):
    path = write_video(media_dir / "short7.mp4", indexed_frames(7), fps=FPS)
    raw = plugin.load(path, small_cfg(plugin, frames_per_clip=16))
    idx = raw.indices[0].tolist()
    assert len(idx) == 16 and sorted(set(idx)) == list(range(7)) and idx == sorted(idx)
    assert [frame_index_of(f.numpy(), 7) for f in raw.frames[0]] == idx
    one = plugin.load(write_video(media_dir / "one.mp4", indexed_frames(1), fps=FPS), small_cfg(plugin))
    assert (one.frames == one.frames[:, :1]).all()  # a still is the same frame repeated


def test_arrays_and_images_are_sources(plugin):
    frames = indexed_frames(10)
    cfg = small_cfg(plugin, frames_per_clip=4)
    x = plugin.process(frames, cfg)
    assert x.shape == (3, 4, 32, 32)
    still = plugin.process(frames[3], cfg)
    assert still.shape == (3, 4, 32, 32) and torch.equal(still[:, 0], still[:, 3])
    assert torch.allclose(plugin.process(torch.from_numpy(frames).float() / 255, cfg), x, atol=1e-5)
    with pytest.raises(MediaError, match="expected frames"):
        plugin.load(np.zeros((4, 5, 6)), cfg)


# --- sampling ---------------------------------------------------------------------------------------------------------
def _pytorchvideo_reference(num_frames: int, fps: float, clips: int, clip_seconds: float, frames: int) -> list:
    """ConstantClipsPerVideoSampler + EncodedVideoDecord.get_clip + UniformTemporalSubsample, written out."""
    duration = num_frames / fps
    out = []
    for k in range(clips):
        start = max(duration - clip_seconds, 0) / max(clips - 1, 1) * k
        first, end = math.ceil(fps * start), min(math.ceil(fps * (start + clip_seconds)), num_frames)
        out.append(torch.linspace(0, end - first - 1, frames).clamp(0, end - first - 1).long().add(first).tolist())
    return out


@pytest.mark.parametrize(("num_frames", "fps"), [(300, 30.0), (250, 25.0), (97, 29.97), (45, 30.0)])
def test_imagebind_clip_sampling_matches_pytorchvideo(plugin, num_frames, fps):
    cfg = plugin.preprocess_config({"preset": "imagebind"})
    got = sample_frame_indices(num_frames, fps, cfg)
    assert got.tolist() == _pytorchvideo_reference(num_frames, fps, 5, 2.0, 2)


def test_languagebind_sampling_is_linspace(plugin):
    cfg = plugin.preprocess_config({"preset": "languagebind"})
    for n in (1, 5, 8, 100, 1234):
        assert sample_frame_indices(n, 30.0, cfg).tolist() == [np.linspace(0, n - 1, 8, dtype=int).tolist()]


def test_train_sampling_random_but_in_range(plugin):
    cfg = plugin.preprocess_config({"preset": "imagebind"})
    rng = np.random.default_rng(0)
    draws = [sample_frame_indices(300, 30.0, cfg, train=True, generator=rng) for _ in range(5)]
    assert all(((d >= 0) & (d < 300)).all() for d in draws)
    assert any(not np.array_equal(draws[0], d) for d in draws[1:])


# --- spatial ----------------------------------------------------------------------------------------------------------
def test_three_spatial_crops_and_imagebind_layout(plugin):
    t, h, w = 20, 32, 96
    ramp = np.broadcast_to(np.linspace(0, 255, w).astype(np.uint8)[None, None, :, None], (t, h, w, 3)).copy()
    cfg = plugin.preprocess_config({"preset": "imagebind", "size": 16, "crop_size": 16})
    x = plugin.process((ramp, 10.0), cfg)
    assert x.shape == (15, 3, 2, 16, 16)  # 5 clips x 3 crops, clip-major
    left, centre, right = x[0, 0, 0, 0], x[1, 0, 0, 0], x[2, 0, 0, 0]
    assert left.mean() < centre.mean() < right.mean()
    assert crop_offsets(16, 48, 16, 0) == (0, 0) and crop_offsets(16, 48, 16, 1) == (0, 16)
    assert crop_offsets(16, 48, 16, 2) == (0, 32) and crop_offsets(48, 16, 16, 2) == (32, 0)
    full = torch.from_numpy(ramp[:1]).permute(3, 0, 1, 2).float() / 255
    resized = F.interpolate(full, size=(16, 48), mode="bilinear", align_corners=False)
    mean, std = torch.tensor(cfg.mean).view(3, 1, 1, 1), torch.tensor(cfg.std).view(3, 1, 1, 1)
    assert torch.allclose(x[2, :, :1], ((resized - mean) / std)[..., 32:], atol=1e-5)


def test_eval_is_deterministic_and_train_is_random(plugin, media_dir):
    path = write_video(media_dir / "wide.mp4", indexed_frames(40, 48, 96), fps=FPS)
    cfg = small_cfg(plugin, frames_per_clip=4, train_hflip=True)
    assert torch.equal(plugin.process(path, cfg), plugin.process(path, cfg))
    torch.manual_seed(0)
    train = [plugin.process(path, cfg, train=True) for _ in range(4)]
    assert all(t.shape == (3, 4, 32, 32) for t in train)
    assert any(not torch.equal(train[0], t) for t in train[1:])


# --- bad input --------------------------------------------------------------------------------------------------------
def _zero_mdat(src: Path, dst: Path) -> Path:
    """An mp4 whose container is intact but whose every video packet is zeros: nothing decodes."""
    data, i = bytearray(src.read_bytes()), 0
    while i + 8 <= len(data):
        size, kind = struct.unpack(">I4s", bytes(data[i : i + 8]))
        if kind == b"mdat":
            data[i + 8 : i + size] = bytes(size - 8)
        if size < 8:
            break
        i += size
    dst.write_bytes(bytes(data))
    return dst


def test_bad_inputs_raise_media_error(plugin, media_dir):
    cfg = small_cfg(plugin)
    good = write_video(media_dir / "good.mp4", indexed_frames(12), fps=FPS)
    cases = {
        media_dir / "missing.mp4": "file not found",
        write_corrupt(media_dir / "corrupt.mp4", 5000): "not a readable media container",
        write_corrupt(media_dir / "corrupt.webm", 5000, header=b"\x1aE\xdf\xa3"): "not a readable media container",
        write_audio(media_dir / "voice.m4a", tone(1.0)): "no video stream",
        _zero_mdat(good, media_dir / "nodecode.mp4"): "no decodable video frames",
        media_dir / "empty.mp4": "empty",
    }
    (media_dir / "empty.mp4").write_bytes(b"")
    for path, reason in cases.items():
        with pytest.raises(MediaError, match=reason) as err:
            plugin.load(path, cfg)
        assert err.value.modality == "video" and err.value.source == path and str(path) in str(err.value)
    with pytest.raises(MediaError, match="not a readable media container"):
        plugin.load(b"\x00garbage" * 100, cfg)
    assert plugin.process(good, cfg).shape == (3, 8, 32, 32)  # the process is alive and still decodes


_CRASHING_SERVER = "import os, sys\nos.read(int(sys.argv[1]), 1)\nos.abort()\n"
_HANGING_SERVER = "import os, sys, time\nos.read(int(sys.argv[1]), 1)\ntime.sleep(60)\n"


@pytest.mark.parametrize(
    ("server", "needle"), [(_CRASHING_SERVER, "crashed"), (_HANGING_SERVER, "did not answer")], ids=["crash", "hang"]
)
def test_decoder_crash_or_hang_falls_back_to_pyav(plugin, media_dir, monkeypatch, server, needle):
    path = write_video(media_dir / "fallback.mp4", indexed_frames(9), fps=FPS)
    monkeypatch.setattr(video_mod, "_DECODE_SERVER", server)
    monkeypatch.setattr(video_mod, "_helper", None)
    helper = video_mod._IsolatedDecord()
    with pytest.raises(video_mod._DecoderFailed, match=needle):
        helper.call("open", str(path), timeout=1.0)
    assert not helper.alive
    raw = plugin.load(path, small_cfg(plugin, decode_timeout_s=1.0))  # decord "fails", PyAV decodes
    assert [frame_index_of(f.numpy(), 9) for f in raw.frames[0]] == raw.indices[0].tolist()
    video_mod._close_helper()  # the stub helper; the next load starts a real one
    monkeypatch.undo()
    video_mod._close_helper()
    video_mod._helper = None


# --- model side -------------------------------------------------------------------------------------------------------
def _encoder(attention: str, temporal_patch: int):
    cfg = bind.factory.expand_config(
        bind.registry.model_config_dict("bind-tiny"),
        ["video"],
        {"attention": attention, "stem": {"temporal_patch": temporal_patch}},
    )
    torch.manual_seed(0)
    m = bind.BindModel(cfg).eval()
    enc = m.encoder("video")
    for p in enc.parameters():  # zero-initialised temporal embeddings would hide frame order
        if p.dim() == 3 and p.shape[0] == 1 and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.5)
    return enc


@pytest.mark.parametrize(("attention", "temporal_patch"), [("joint", 2), ("joint", 1), ("divided", 1), ("divided", 2)])
def test_joint_and_divided_any_frame_count(attention, temporal_patch):
    enc = _encoder(attention, temporal_patch)
    assert (attention == "divided") == (type(enc.trunk.blocks[0]).__name__ == "DividedSpaceTimeBlock")
    torch.manual_seed(1)
    with torch.no_grad():
        for t in (1, 2, 7, 8, 37):
            x = torch.randn(2, 3, t, 32, 32)
            emb = enc(x)
            assert emb.shape == (2, 64) and torch.isfinite(emb).all()
        x = torch.randn(1, 3, 8, 32, 32)
        assert not torch.allclose(enc(x), enc(x.flip(2)), atol=1e-4)  # temporal positions matter
        still = torch.randn(1, 3, 1, 32, 32)
        assert torch.allclose(enc(still), enc(still.expand(-1, -1, temporal_patch, -1, -1)), atol=1e-5)


def test_clips_are_averaged_and_example_input(plugin):
    enc = _encoder("joint", 2)
    x = torch.randn(2, 3, 3, 4, 32, 32)
    with torch.no_grad():
        per_clip = enc(x.flatten(0, 1)).reshape(2, 3, -1)
        assert torch.allclose(enc(x), F.normalize(per_clip.mean(1), dim=-1), atol=1e-5)
        assert enc(plugin.example_input(enc.cfg, 2)).shape == (2, 64)
    with pytest.raises(InputError, match="video"):
        enc(torch.randn(2, 1, 4, 32, 32))
    ib = bind.factory.expand_config(bind.registry.model_config_dict("bind-base"), ["video"]).encoders["video"]
    assert plugin.example_input(ib, 1).shape == (1, 15, 3, 2, 224, 224)


@pytest.mark.parametrize("attention", ["joint", "divided"])
def test_token_reduction_merges_steps_and_patches(attention):
    from bind.nn.stems import TubeletStem

    stem = TubeletStem(
        3,
        16,
        patch_size=8,
        image_size=32,
        num_frames=8,
        temporal_patch=1,
        divided=attention == "divided",
        reduce_time=2,
        reduce_space=2,
    )
    full = TubeletStem(
        3, 16, patch_size=8, image_size=32, num_frames=8, temporal_patch=1, divided=attention == "divided"
    )
    full.load_state_dict(stem.state_dict())
    x = torch.randn(2, 3, 7, 32, 32)  # 7 steps: the last group repeats step 6
    reduced, unreduced = stem(x), full(x)
    assert (reduced.time_steps, unreduced.time_steps) == (4, 7)  # the token layout the encoder reports
    out, ref = reduced.tokens, unreduced.tokens
    ref = ref if ref.dim() == 4 else ref.reshape(2, 7, 16, 16)
    ref = torch.cat([ref, ref[:, -1:]], 1).reshape(2, 4, 2, 4, 4, 16).mean(2)  # time pairs, then 2x2 patches
    ref = ref.reshape(2, 4, 2, 2, 2, 2, 16).mean((3, 5)).reshape(2, 4, 4, 16)
    assert out.shape == ((2, 4, 4, 16) if attention == "divided" else (2, 16, 16))
    torch.testing.assert_close(out.reshape(2, 4, 4, 16), ref, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        TubeletStem(3, 16, patch_size=8, image_size=32, num_frames=8, reduce_time=0)


def test_token_reduction_is_a_per_model_switch():
    cfg = bind.factory.expand_config(
        bind.registry.model_config_dict("bind-tiny"), ["video"], {"attention": "divided", "stem": {"reduce_time": 2}}
    )
    model = bind.BindModel(cfg).eval()
    stem = model.encoder("video").stem
    assert (stem.reduce_time, stem.reduce_space) == (2, 1)
    with torch.no_grad():
        tokens, _, _ = model.encoder("video").forward_tokens(torch.randn(1, 3, 16, 32, 32))
        assert model.encode("video", torch.randn(1, 3, 16, 32, 32)).shape == (1, 64)
    steps = 16 // int(cfg.encoders["video"].stem.get("temporal_patch", 2)) // 2
    assert tokens.shape[1] == steps  # [B, T', N, D] with T' halved
