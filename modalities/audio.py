"""Audio modality: wav / flac / ogg / mp3 (soundfile) and the audio track of any FFmpeg container (PyAV: mp4, mkv,
webm, avi, m4a, opus, ...), resampled to 16 kHz mono, kaldi log-mel filterbanks, AST-style patch stem.

Features (AST, Gong et al. 2021, as used by ImageBind and LanguageBind): ``torchaudio.compliance.kaldi.fbank`` of the
waveform minus its mean with 128 mel bins, 25 ms hanning windows every 10 ms, ``htk_compat``, no dither, no energy
(:func:`waveform_to_fbank`). Waveforms shorter than one window are zero-padded to one window (kaldi rejects them).

Clips (``clip_sampling``):

* ``uniform`` — ImageBind (Girdhar et al. 2023, ``data.py``): ``clips`` windows of ``clip_seconds`` with starts spread
  uniformly over ``[0, duration - clip_seconds]`` (pytorchvideo ``ConstantClipsPerVideoSampler``); each window's fbank
  is cut or **zero-padded** to ``target_length`` frames (2 s -> 198 frames -> 204). Audio shorter than a clip gives
  clips holding the whole (zero-padded) audio. Sample ``[clips, 1, mel, frames]``.
* ``segments`` — LanguageBind (Zhu et al. 2024, ``processing_audio.py``): one fbank of the whole audio; if it is longer
  than ``target_length`` frames, the range of window starts is split in ``clips`` (3) parts and the first start of
  each part is taken (front / middle / back; a random start per part in training); audio shorter than
  ``target_length * 10 ms`` is **repeated** (whole copies) and zero-padded to that length first. The windows are the
  3 channels of one ``[3, mel, frames]`` image.

``pad_mode`` chooses ``zero`` (fbank frames zero-padded, ImageBind) or ``repeat`` (waveform tiled, then zero-padded,
LanguageBind) for short audio in either sampling mode. Normalisation is ``(x - mean) / std``; LanguageBind's
training code divides by ``2 * 4.5689974`` (the AST convention), so its ``std`` here is ``9.1379948`` — ImageBind's
``-4.268`` / ``9.138`` are the same statistics rounded.

Channels: both references feed ``kaldi.fbank`` a multi-channel waveform, which reads channel 0 (LanguageBind indexes
``audio[0]`` explicitly); the presets therefore use ``downmix="first"``; the dataclass default averages channels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bind.config import EncoderConfig
from bind.errors import MediaError
from bind.modality import Modality
from bind.nn.stems import PatchStem2d
from bind.registry import register_modality
from modalities._common import source_bytes_or_path

#: containers read with PyAV directly (soundfile cannot open them)
CONTAINER_SUFFIXES = (
    ".mp4",
    ".m4v",
    ".m4a",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".mpg",
    ".mpeg",
    ".ts",
    ".flv",
    ".3gp",
    ".aac",
    ".opus",
    ".wma",
    ".ac3",
)


@dataclass
class AudioPreprocess:
    sample_rate: int = 16000
    downmix: str = "mean"  # mean | first (channel 0, what the references compute)
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    window_type: str = "hanning"
    target_length: int = 204  #: fbank frames per clip
    clips: int = 3
    clip_seconds: float | None = 2.0  #: ``uniform`` sampling only
    clip_sampling: str = "uniform"  # uniform (ImageBind) | segments (LanguageBind)
    pad_mode: str = "zero"  # zero (pad fbank frames) | repeat (tile the waveform)
    clips_as_channels: bool = False  #: LanguageBind: the clips are the channels of one sample
    mean: float = -4.268
    std: float = 9.138
    #: longest recording ``load`` decodes (from the file header when soundfile can read it, else once decoded);
    #: 0 = no limit
    max_seconds: float = 3600.0
    #: largest file / bytes source ``load`` reads, checked before decoding; 0 = no limit
    max_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        checks = (
            ("downmix", ("mean", "first")),
            ("clip_sampling", ("uniform", "segments")),
            ("pad_mode", ("zero", "repeat")),
        )
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"audio: {name}={getattr(self, name)!r}, expected one of {allowed}")
        if self.clip_sampling == "uniform" and not self.clip_seconds:
            raise ValueError("audio: clip_sampling='uniform' needs clip_seconds")
        if self.clips < 1 or self.target_length < 1:
            raise ValueError(f"audio: clips and target_length must be >= 1, got {self.clips}, {self.target_length}")

    @property
    def window_samples(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def shift_samples(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)


@dataclass
class AudioStemConfig:
    """Patch stem over log-mel spectrograms (see :class:`AudioModality`)."""

    patch_size: int = 16
    stride: int | tuple[int, int] = 10  #: 10: overlapping patches (ImageBind / AST); = patch_size: none
    norm: bool = True  #: LayerNorm after the patch projection
    bias: bool = False
    in_chans: int | None = None  #: default: from the preprocessing (clips as channels or 1)


PRESETS: dict[str, dict[str, Any]] = {
    "imagebind": {
        "downmix": "first",
        "num_mel_bins": 128,
        "target_length": 204,
        "clips": 3,
        "clip_seconds": 2.0,
        "clip_sampling": "uniform",
        "pad_mode": "zero",
        "clips_as_channels": False,
        "mean": -4.268,
        "std": 9.138,
    },
    "languagebind": {
        "downmix": "first",
        "num_mel_bins": 112,
        "target_length": 1036,
        "clips": 3,
        "clip_seconds": None,
        "clip_sampling": "segments",
        "pad_mode": "repeat",
        "clips_as_channels": True,
        "mean": -4.2677393,
        "std": 2 * 4.5689974,
    },
}


# --- decoding ---------------------------------------------------------------------------------------------------------
_AV_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError, RuntimeError)


def _fresh(source: Any, path_or_buffer: str | io.BytesIO) -> str | io.BytesIO:
    return io.BytesIO(bytes(source)) if isinstance(path_or_buffer, io.BytesIO) else path_or_buffer


def _read_soundfile(path_or_buffer: str | io.BytesIO) -> tuple[np.ndarray, int]:
    import soundfile as sf

    data, sr = sf.read(path_or_buffer, dtype="float32", always_2d=True)  # [N, C]
    return data.T, int(sr)


def _read_pyav(source: Any, path_or_buffer: str | io.BytesIO, modality: str) -> tuple[np.ndarray, int]:
    """The first audio stream of any FFmpeg container as float32 ``[C, N]`` at its own rate."""
    with av.logging.Capture():
        try:
            container = av.open(_fresh(source, path_or_buffer), metadata_errors="ignore")
        except _AV_ERRORS as e:
            raise MediaError(source, modality, f"not a decodable audio file ({e})") from None
        with container:
            if not container.streams.audio:
                kinds = sorted({s.type for s in container.streams}) or ["none"]
                raise MediaError(source, modality, f"no audio stream (streams: {', '.join(kinds)})")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp")  # keeps layout and rate: to_ndarray() is [C, n]
            chunks, errors, rate = [], 0, stream.rate or stream.codec_context.sample_rate
            try:
                for packet in container.demux(stream):
                    try:
                        frames = packet.decode()
                    except _AV_ERRORS:
                        errors += 1
                        continue
                    for frame in frames:
                        rate = frame.sample_rate or rate
                        chunks += [out.to_ndarray() for out in resampler.resample(frame)]
                chunks += [out.to_ndarray() for out in resampler.resample(None)]
            except _AV_ERRORS as e:
                if not chunks:
                    raise MediaError(source, modality, f"no decodable audio ({e})") from None
    if not chunks:
        reason = f"no decodable audio ({errors} corrupt packets)" if errors else "zero-length audio (no samples)"
        raise MediaError(source, modality, reason)
    channels = min(c.shape[0] for c in chunks)
    return np.concatenate([c[:channels] for c in chunks], axis=1).astype(np.float32), int(rate)


def decode_audio(source: Any, modality: str = "audio") -> tuple[torch.Tensor, int]:
    """Decode a path or bytes into ``(waveform [C, N] float32 in [-1, 1], sample_rate)``.

    soundfile reads wav / flac / ogg / mp3 (and everything else libsndfile knows); containers it cannot open go
    through PyAV (the first audio stream).
    """
    path_or_buffer = source_bytes_or_path(source, modality)
    suffix = Path(path_or_buffer).suffix.lower() if isinstance(path_or_buffer, str) else ""
    data = None
    if suffix not in CONTAINER_SUFFIXES:
        try:
            data, sr = _read_soundfile(path_or_buffer)
        except Exception as e:  # noqa: BLE001 — soundfile raises LibsndfileError / RuntimeError / TypeError
            soundfile_error = e
    if data is None:
        try:
            data, sr = _read_pyav(source, path_or_buffer, modality)
        except MediaError as e:
            if suffix in CONTAINER_SUFFIXES:
                raise
            raise MediaError(
                source, modality, f"not a decodable audio file (soundfile: {soundfile_error}; FFmpeg: {e.reason})"
            ) from None
    if data.shape[-1] == 0 or data.shape[0] == 0:
        raise MediaError(source, modality, "zero-length audio (no samples)")
    return torch.from_numpy(np.ascontiguousarray(data)), sr


def _waveform_from_array(source: Any, cfg: AudioPreprocess, modality: str) -> tuple[torch.Tensor, int]:
    sr = cfg.sample_rate
    if isinstance(source, tuple):
        source, sr = source
    w = source.detach().cpu() if isinstance(source, torch.Tensor) else torch.from_numpy(np.asarray(source))
    if not w.is_floating_point():
        if w.dtype == torch.int16:
            w = w.float() / 32768.0
        else:
            raise MediaError(source, modality, f"expected a float (or int16) waveform, got dtype {w.dtype}")
    w = w.float()
    if w.dim() == 1:
        w = w[None]
    if w.dim() != 2 or w.shape[0] > 32:
        raise MediaError(
            source, modality, f"expected a waveform [samples] or [channels, samples], got shape {tuple(w.shape)}"
        )
    if w.shape[-1] == 0:
        raise MediaError(source, modality, "zero-length audio (no samples)")
    return w, int(sr)


def to_mono(
    waveform: torch.Tensor, sr: int, cfg: AudioPreprocess, source: Any = None, modality: str = "audio"
) -> torch.Tensor:
    """``[C, N]`` at ``sr`` -> mono ``[N']`` at ``cfg.sample_rate`` (``torchaudio.functional.resample``)."""
    import torchaudio.functional as AF

    if not torch.isfinite(waveform).all():
        raise MediaError(source, modality, "waveform contains NaN or infinite values")
    mono = waveform[0] if cfg.downmix == "first" else waveform.mean(0)
    if sr != cfg.sample_rate:
        mono = AF.resample(mono, orig_freq=sr, new_freq=cfg.sample_rate)
    return mono.contiguous()


# --- features ---------------------------------------------------------------------------------------------------------
def waveform_to_fbank(waveform: torch.Tensor, cfg: AudioPreprocess) -> torch.Tensor:
    """Kaldi log-mel filterbank ``[frames, num_mel_bins]`` of a mono waveform ``[N]`` (minus its mean)."""
    from torchaudio.compliance import kaldi

    w = waveform - waveform.mean()
    if w.numel() < cfg.window_samples:
        w = F.pad(w, (0, cfg.window_samples - w.numel()))
    return kaldi.fbank(
        w[None],
        htk_compat=True,
        sample_frequency=cfg.sample_rate,
        use_energy=False,
        window_type=cfg.window_type,
        num_mel_bins=cfg.num_mel_bins,
        dither=0.0,
        frame_length=cfg.frame_length_ms,
        frame_shift=cfg.frame_shift_ms,
    )


def fit_frames(fbank: torch.Tensor, target_length: int) -> torch.Tensor:
    """Cut or zero-pad ``[frames, mel]`` to ``target_length`` frames."""
    p = target_length - fbank.shape[0]
    return F.pad(fbank, (0, 0, 0, p)) if p > 0 else fbank[:target_length]


def _tile(w: torch.Tensor, length: int) -> torch.Tensor:
    """LanguageBind: ``int(length / n)`` whole copies, then zeros up to ``length``."""
    if w.numel() >= length:
        return w
    w = w.repeat(max(int(length / w.numel()), 1))
    return F.pad(w, (0, length - w.numel()))


def uniform_clip_bounds(num_samples: int, cfg: AudioPreprocess, train: bool = False) -> list[tuple[int, int]]:
    """``(first, end)`` samples of each clip: ``ConstantClipsPerVideoSampler`` with pytorchvideo's exact fractions."""
    clip = Fraction(cfg.clip_seconds)
    max_start = Fraction(max(num_samples / cfg.sample_rate - cfg.clip_seconds, 0))
    if train:
        rng = np.random.default_rng(int(torch.randint(0, 2**31, ())))
        starts = sorted(Fraction(float(s)) for s in rng.uniform(0, float(max_start), cfg.clips))
    else:
        step = Fraction(max_start, max(cfg.clips - 1, 1))
        starts = [step * k for k in range(cfg.clips)]
    return [(int(s * cfg.sample_rate), int((s + clip) * cfg.sample_rate)) for s in starts]


def audio_windows(waveform: torch.Tensor, cfg: AudioPreprocess, train: bool = False) -> list[torch.Tensor]:
    """Unnormalised fbank windows ``[mel, target_length]``, one per clip."""
    if cfg.clip_sampling == "uniform":
        clip_len = int(Fraction(cfg.clip_seconds) * cfg.sample_rate)
        windows = []
        for first, end in uniform_clip_bounds(waveform.numel(), cfg, train):
            seg = waveform[first:end]
            if cfg.pad_mode == "repeat":
                seg = _tile(seg, clip_len)
            windows.append(fit_frames(waveform_to_fbank(seg, cfg), cfg.target_length).T)
        return windows
    max_len = cfg.target_length * cfg.shift_samples
    w = _tile(waveform, max_len) if cfg.pad_mode == "repeat" else waveform
    mel = waveform_to_fbank(w, cfg)
    total = mel.shape[0]
    if waveform.numel() > max_len and total > cfg.target_length:
        parts = np.array_split(np.arange(0, total - cfg.target_length + 1), cfg.clips)
        rng = np.random.default_rng(int(torch.randint(0, 2**31, ()))) if train else None
        starts = [0 if not len(p) else int(rng.choice(p)) if train else int(p[0]) for p in parts]
    else:
        starts = [0] * cfg.clips
    return [fit_frames(mel[s : s + cfg.target_length], cfg.target_length).T for s in starts]


def audio_transform(waveform: torch.Tensor, cfg: AudioPreprocess, train: bool = False) -> torch.Tensor:
    """Mono waveform -> normalised ``[C, mel, frames]`` (``C`` = clips if ``clips_as_channels`` else 1), or
    ``[clips, 1, mel, frames]`` for several clips."""
    windows = torch.stack(audio_windows(waveform, cfg, train))
    x = (windows - cfg.mean) / cfg.std
    if cfg.clips_as_channels:
        return x
    x = x.unsqueeze(1)
    return x[0] if x.shape[0] == 1 else x


# --- plugin -----------------------------------------------------------------------------------------------------------
@register_modality
class AudioModality(Modality):
    """Log-mel spectrogram images through a Conv2d patch stem (ImageBind: 16x16 kernel, stride 10, LayerNorm).

    Encoder ``stem`` keys: ``patch_size``, ``stride`` (10 overlapping as ImageBind / AST, or = patch size),
    ``norm`` (LayerNorm after the patch projection), ``in_chans`` (defaults from the preprocessing), ``bias``.
    Position embeddings are resized when the spectrogram size differs from the configured one.
    """

    name = "audio"
    order = 30
    lora_rank = 16  # LanguageBind's LoRA rank (alpha 16, dropout 0)
    Preprocess = AudioPreprocess
    StemConfig = AudioStemConfig
    extensions = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus", *CONTAINER_SUFFIXES)
    webdataset_keys = ("wav", "flac", "mp3", "ogg", "m4a", "opus")
    zeroshot_templates = ("the sound of a {}.", "a recording of a {}.", "{} can be heard.", "the sound of the {}.")
    presets = PRESETS
    default_preset = "imagebind"
    sample_ndim = 3
    sample_formats = ("wav", "flac")
    encoder_defaults = {"pool": "cls", "stem": {"patch_size": 16, "stride": 10, "norm": True}}

    def load(self, source: Any, cfg: AudioPreprocess) -> torch.Tensor:
        """Decode to a mono float32 waveform ``[N]`` at ``cfg.sample_rate``.

        ``source``: a path or bytes of an audio file or of a video container with an audio track, a waveform array /
        tensor ``[N]`` or ``[C, N]`` (taken to be at ``cfg.sample_rate``), or ``(waveform, sample_rate)``.
        """
        if isinstance(source, (np.ndarray, torch.Tensor)) or (
            isinstance(source, tuple) and len(source) == 2 and isinstance(source[1], (int, float, np.number))
        ):
            waveform, sr = _waveform_from_array(source, cfg, self.name)
        else:
            self._check_limits(source, cfg)
            waveform, sr = decode_audio(source, self.name)
        if cfg.max_seconds and waveform.shape[-1] > cfg.max_seconds * sr:
            raise MediaError(
                source,
                self.name,
                f"{waveform.shape[-1] / sr:.1f} s of audio exceeds preprocess "
                f"max_seconds={cfg.max_seconds:g}; raise max_seconds to accept it",
            )
        return to_mono(waveform, sr, cfg, source, self.name)

    def _check_limits(self, source: Any, cfg: AudioPreprocess) -> None:
        """``max_bytes`` and (from the header, when soundfile knows the format) ``max_seconds`` before decoding."""
        fp = source_bytes_or_path(source, self.name)
        size = len(fp.getvalue()) if isinstance(fp, io.BytesIO) else Path(fp).stat().st_size
        if cfg.max_bytes and size > cfg.max_bytes:
            raise MediaError(
                source,
                self.name,
                f"{size} bytes exceeds preprocess max_bytes={cfg.max_bytes}; raise max_bytes to accept it",
            )
        if cfg.max_seconds:
            import soundfile as sf

            try:
                seconds = sf.info(fp).duration
            except Exception:  # noqa: BLE001 - not a soundfile format: checked once decoded
                return
            if seconds > cfg.max_seconds:
                raise MediaError(
                    source,
                    self.name,
                    f"{seconds:.1f} s of audio (from the header) exceeds preprocess "
                    f"max_seconds={cfg.max_seconds:g}; raise max_seconds to accept it",
                )

    def transform(self, raw: torch.Tensor, cfg: AudioPreprocess, train: bool = False) -> torch.Tensor:
        return audio_transform(raw, cfg, train)

    def channels(self, cfg: EncoderConfig) -> int:
        if self.stem_config(cfg).in_chans is not None:
            return int(self.stem_config(cfg).in_chans)
        pp = self.preprocess_config(cfg.preprocess)
        return pp.clips if pp.clips_as_channels else 1

    def expected_shape(self, cfg: EncoderConfig) -> str:
        return f"[{self.channels(cfg)}, mel, frames]"

    def prepare_encoder_config(self, cfg: EncoderConfig, root=None) -> None:
        cfg.stem.setdefault("in_chans", self.channels(cfg))

    def stem(self, cfg: EncoderConfig) -> nn.Module:
        pp = self.preprocess_config(cfg.preprocess)
        s = self.stem_config(cfg)
        return PatchStem2d(
            self.channels(cfg),
            cfg.width,
            s.patch_size,
            (pp.num_mel_bins, pp.target_length),
            stride=s.stride,
            bias=s.bias,
            norm=s.norm,
        )

    def example_input(self, cfg: EncoderConfig, batch: int) -> torch.Tensor:
        """A random batch at the configured preprocessing: ``[B, C, mel, frames]`` or ``[B, clips, 1, mel, frames]``."""
        pp = self.preprocess_config(cfg.preprocess)
        shape = (self.channels(cfg), pp.num_mel_bins, pp.target_length)
        if pp.clips > 1 and not pp.clips_as_channels:
            return torch.randn(batch, pp.clips, *shape)
        return torch.randn(batch, *shape)

    def preview(self, source: Any, cfg: AudioPreprocess) -> dict[str, Any]:
        """The log-mel spectrogram the encoder sees (whole clip, low frequencies at the bottom) as a colour-mapped
        image; the page plays the original file."""
        from bind.preview import colour_map

        fbank = waveform_to_fbank(self.load(source, cfg), cfg)  # [frames, mel]
        return {"picture": colour_map(fbank.T.flip(0).numpy(), "magma"), "play": "audio"}

    def write_sample(self, fmt: str, directory: Path, index: int, rng: np.random.Generator) -> Path:
        """5 s of CD-rate stereo (the plugin resamples to 16 kHz mono): a random tone in noise."""
        import soundfile as sf

        sr, seconds = 44100, 5.0
        t = np.arange(int(sr * seconds)) / sr
        wave = 0.3 * np.sin(2 * np.pi * (220 + 220 * rng.random()) * t) + 0.05 * rng.standard_normal(len(t))
        path = directory / f"{self.name}_{index}.{fmt}"
        sf.write(str(path), np.stack([wave, wave[::-1]], -1).astype(np.float32), sr)
        return path
