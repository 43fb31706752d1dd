"""Audio plugin: real files (wav / flac / ogg / mp3 via soundfile, the audio track of mp4 / mkv via PyAV) -> 16 kHz
mono -> kaldi fbank clips -> bind-tiny encoder; parity with ImageBind's and LanguageBind's preprocessing."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio.functional as AF
from media import indexed_frames, tone, write_audio, write_corrupt, write_video
from torchaudio.compliance import kaldi

import bind
from bind.config import BindConfig, EncoderConfig
from bind.errors import InputError, MediaError
from bind.registry import get_modality
from modalities.audio import waveform_to_fbank

SR = 16000


@pytest.fixture(scope="module")
def plugin():
    return get_modality("audio")


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audio_media")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return bind.create_model("bind-tiny", modalities=["audio"]).eval()


def _noise(seconds: float, sr: int = SR, channels: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(channels, int(seconds * sr), generator=g) + torch.from_numpy(
        tone(seconds, sr, 300.0, channels=channels).reshape(-1, channels).T.copy()
    )


def _dominant_hz(w: torch.Tensor, sr: int = SR) -> float:
    spectrum = torch.fft.rfft(w).abs()
    return float(spectrum.argmax()) * sr / w.numel()


# --- features ---------------------------------------------------------------------------------------------------------
def test_fbank_equals_direct_kaldi_call(plugin):
    cfg = plugin.preprocess_config({"preset": "imagebind"})
    w = _noise(1.3)[0]
    direct = kaldi.fbank(
        (w - w.mean())[None],
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_length=25,
        frame_shift=10,
    )
    ours = waveform_to_fbank(w, cfg)
    assert ours.shape == (1 + (w.numel() - 400) // 160, 128) and torch.equal(ours, direct)
    assert waveform_to_fbank(w[:100], cfg).shape == (1, 128)  # shorter than one window: padded, not an error


def _imagebind_reference(waveform: torch.Tensor, sr: int) -> torch.Tensor:
    """ImageBind data.load_and_transform_audio_data, written out (3 clips x 2 s, 128 mel, 204 frames)."""
    if sr != 16000:
        waveform = AF.resample(waveform, orig_freq=sr, new_freq=16000)
    duration = waveform.size(1) / 16000
    step = Fraction(Fraction(max(duration - Fraction(2), 0)), 2)
    clips = []
    for k in range(3):
        start, end = step * k, step * k + 2
        clip = waveform[:, int(start * 16000) : int(end * 16000)].clone()
        clip -= clip.mean()
        fb = kaldi.fbank(
            clip,
            htk_compat=True,
            sample_frequency=16000,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=128,
            dither=0.0,
            frame_length=25,
            frame_shift=10,
        ).transpose(0, 1)
        p = 204 - fb.size(1)
        fb = torch.nn.functional.pad(fb, (0, p)) if p > 0 else fb[:, :204]
        clips.append(((fb.unsqueeze(0)) - (-4.268)) / 9.138)
    return torch.stack(clips)


@pytest.mark.parametrize(("seconds", "sr", "channels"), [(5.0, 16000, 1), (7.3, 44100, 2), (1.2, 16000, 1)])
def test_imagebind_preset_matches_reference(plugin, seconds, sr, channels):
    cfg = plugin.preprocess_config({"preset": "imagebind"})
    w = _noise(seconds, sr, channels)
    ours = plugin.process((w, sr), cfg)
    assert ours.shape == (3, 1, 128, 204)
    assert torch.allclose(ours, _imagebind_reference(w, sr), atol=2e-3)


def _languagebind_reference(waveform: torch.Tensor) -> torch.Tensor:
    """LanguageBind AudioTransform (inference: fixed chunk starts), 112 mel, 1036 frames, (x + 4.27) / (2 * 4.57)."""
    audio = waveform[0].clone()
    target, max_len = 1036, 1036 * 16000 // 100

    def mel(a):
        a = a - a.mean()
        return kaldi.fbank(
            a.unsqueeze(0),
            htk_compat=True,
            sample_frequency=16000,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=112,
            dither=0.0,
            frame_length=25,
            frame_shift=10,
        )

    if audio.shape[-1] > max_len:
        m = mel(audio)
        ranges = np.array_split(list(range(0, m.shape[0] - target + 1)), 3)
        fused = torch.stack([m[r[0] : r[0] + target] for r in ranges])
    else:
        if audio.shape[-1] < max_len:
            audio = audio.repeat(int(max_len / len(audio)))
            audio = torch.nn.functional.pad(audio, (0, max_len - len(audio)))
        m = mel(audio)
        fused = torch.stack([m, m, m])
    p = target - fused.shape[1]
    fused = torch.nn.functional.pad(fused, (0, 0, 0, p)) if p > 0 else fused[:, :target]
    return (fused.transpose(1, 2) - (-4.2677393)) / (4.5689974 * 2)


@pytest.mark.parametrize("seconds", [13.0, 3.0, 10.36])
def test_languagebind_preset_matches_reference(plugin, seconds):
    cfg = plugin.preprocess_config({"preset": "languagebind"})
    w = _noise(seconds, channels=2, seed=3)
    ours = plugin.process((w, SR), cfg)
    assert ours.shape == (3, 112, 1036)
    assert torch.allclose(ours, _languagebind_reference(w), atol=1e-4)
    if seconds > 10.36:
        assert not torch.allclose(ours[0], ours[2])  # front and back windows differ


def test_short_audio_zero_padded(plugin):
    cfg = plugin.preprocess_config({"preset": "imagebind"})
    x = plugin.process((_noise(0.5)[0], SR), cfg)  # 0.5 s -> 48 fbank frames, then zeros
    assert x.shape == (3, 1, 128, 204) and torch.equal(x[0], x[2])
    pad_value = (0 - cfg.mean) / cfg.std
    assert torch.allclose(x[0, 0, :, 48:], torch.full((128, 156), pad_value))
    assert not torch.allclose(x[0, 0, :, :48], torch.full((128, 48), pad_value))
    rep = plugin.process((_noise(0.5)[0], SR), plugin.preprocess_config({"preset": "imagebind", "pad_mode": "repeat"}))
    assert not torch.allclose(rep[0, 0, :, 100:], torch.full((128, 104), pad_value))  # tiled, not zeros


def test_eval_deterministic_train_random(plugin):
    cfg = plugin.preprocess_config({"preset": "imagebind"})
    w = _noise(9.0)[0]
    assert torch.equal(plugin.transform(w, cfg), plugin.transform(w, cfg))
    torch.manual_seed(0)
    draws = [plugin.transform(w, cfg, train=True) for _ in range(3)]
    assert all(d.shape == (3, 1, 128, 204) for d in draws)
    assert not torch.equal(draws[0], draws[1])


# --- decoding real files ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3", ".m4a"])
def test_formats_resample_and_downmix(plugin, media_dir, suffix):
    path = write_audio(media_dir / f"stereo{suffix}", tone(2.0, 44100, 440.0, channels=2), 44100)
    first = plugin.load(path, plugin.preprocess_config({"preset": "imagebind"}))
    mixed = plugin.load(path, plugin.preprocess_config({"preset": "imagebind", "downmix": "mean"}))
    assert first.dim() == 1 and abs(first.numel() - 2 * SR) < 0.06 * SR  # codecs add a little padding
    assert abs(_dominant_hz(first) - 440.0) < 5  # channel 0 is 440 Hz, channel 1 880 Hz
    assert abs(_dominant_hz(mixed) - 440.0) < 5 and not torch.allclose(first, mixed)
    assert plugin.transform(first, plugin.preprocess_config({"preset": "imagebind"})).shape == (3, 1, 128, 204)


def test_resampling_is_torchaudio(plugin):
    w = _noise(1.0, 22050)
    got = plugin.load((w, 22050), plugin.preprocess_config({}))
    assert torch.allclose(got, AF.resample(w.mean(0), 22050, 16000), atol=1e-6)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_audio_track_of_a_video(plugin, media_dir, model, suffix):
    path = write_video(media_dir / f"av{suffix}", indexed_frames(16), fps=8.0, audio=tone(2.0, SR, 440.0))
    cfg = model.preprocess_config("audio")
    w = plugin.load(path, cfg)
    assert abs(w.numel() - 2 * SR) < 0.06 * SR and abs(_dominant_hz(w) - 440.0) < 5
    assert plugin.load(path.read_bytes(), cfg).shape == w.shape  # the same from bytes
    with torch.no_grad():
        emb = model.embed_sources("audio", [path])
    assert emb.shape == (1, model.embed_dim) and torch.isfinite(emb).all()


def test_end_to_end_files_to_embeddings(plugin, media_dir, model):
    paths = [
        write_audio(media_dir / "a.wav", tone(1.0, 16000, 300.0), 16000),
        write_audio(media_dir / "b.flac", tone(0.3, 48000, 900.0, channels=2), 48000),
        write_video(media_dir / "c.mp4", indexed_frames(8), fps=8.0, audio=tone(3.0, 22050, 500.0), sr=22050),
    ]
    batch = model.prepare("audio", paths)
    cfg = model.preprocess_config("audio")
    assert batch.shape == (3, cfg.clips, 1, cfg.num_mel_bins, cfg.target_length)
    with torch.no_grad():
        emb = model.encode("audio", batch)
    assert emb.shape == (3, model.embed_dim)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(emb[0], emb[1], atol=1e-3)


# --- bad input --------------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_media_error(plugin, media_dir):
    cfg = plugin.preprocess_config({})
    silent = write_video(media_dir / "silent.mp4", indexed_frames(8), fps=8.0)
    cases = {
        media_dir / "missing.wav": "file not found",
        write_corrupt(media_dir / "corrupt.wav", 3000, header=b"RIFF"): "not a decodable audio file",
        write_corrupt(media_dir / "corrupt.flac", 3000, header=b"fLaC"): "not a decodable audio file",
        write_corrupt(media_dir / "corrupt.mp4", 3000): "not a decodable audio file",
        write_audio(media_dir / "zero.wav", np.zeros(0, np.float32)): "zero-length audio",
        silent: "no audio stream",
    }
    for path, reason in cases.items():
        with pytest.raises(MediaError, match=reason) as err:
            plugin.load(path, cfg)
        assert err.value.modality == "audio" and err.value.source == path and str(path) in str(err.value)
    with pytest.raises(MediaError, match="not a decodable audio file"):
        plugin.load(b"\x01\x02garbage" * 50, cfg)
    with pytest.raises(MediaError, match="zero-length audio"):
        plugin.load(np.zeros(0, np.float32), cfg)
    with pytest.raises(MediaError, match="NaN"):
        plugin.load(np.full(1600, np.nan, np.float32), cfg)
    assert plugin.process(write_audio(media_dir / "ok.wav", tone(0.5)), cfg).shape == (3, 1, 128, 204)


# --- model side -------------------------------------------------------------------------------------------------------
def test_stems_and_channels(plugin, model):
    enc = model.encoder("audio")
    with torch.no_grad():
        assert enc(plugin.example_input(enc.cfg, 2)).shape == (2, model.embed_dim)
        longer = torch.randn(1, 1, 128, 96)  # a longer spectrogram: position embeddings are resized
        assert enc(longer).shape == (1, model.embed_dim)
    with pytest.raises(InputError, match="audio"):
        enc(torch.randn(1, 3, 128, 48))
    lb = EncoderConfig(
        modality="audio",
        width=32,
        depth=1,
        heads=2,
        embed_dim=model.embed_dim,
        stem={"patch_size": 14, "stride": 14, "norm": False},
        preprocess={"preset": "languagebind", "target_length": 64},
    )
    lb_model = bind.BindModel(BindConfig("lb-audio", model.embed_dim, {"audio": lb})).eval()
    lb_enc = lb_model.encoder("audio")
    assert lb_enc.cfg.stem["in_chans"] == 3 and lb_enc.stem.grid == (8, 4)
    x = plugin.process((_noise(2.0)[0], SR), lb_model.preprocess_config("audio"))
    assert x.shape == (3, 112, 64)
    with torch.no_grad():
        assert lb_enc(x[None]).shape == (1, model.embed_dim)
    ib = bind.factory.expand_config(bind.registry.model_config_dict("bind-base"), ["audio"]).encoders["audio"]
    assert plugin.stem(ib).grid == (12, 19)  # ImageBind: 128 x 204 with 16x16 patches at stride 10 -> 228 tokens
