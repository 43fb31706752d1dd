"""Write real media files for tests: videos (with or without an audio track) via PyAV, audio via soundfile / PyAV.

Import from any test as ``from media import write_video, write_audio, ...`` (``tests/`` is on ``sys.path`` through
pytest's rootdir conftest insertion) or ``from tests.media import ...`` when the repository root is on the path.

Frames made by :func:`indexed_frames` carry their own index as a flat grey level, so a test can read back which
source frame a decoder returned even after lossy compression (:func:`frame_index_of`).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

#: container suffix -> (video codec, audio codec, pixel format)
VIDEO_CODECS: dict[str, tuple[str, str, str]] = {
    ".mp4": ("libx264", "aac", "yuv420p"),
    ".mkv": ("libx264", "flac", "yuv420p"),
    ".webm": ("libvpx", "libopus", "yuv420p"),
    ".avi": ("mpeg4", "pcm_s16le", "yuv420p"),
    ".mov": ("libx264", "aac", "yuv420p"),
}
#: audio suffixes soundfile writes directly (libsndfile >= 1.1 writes mp3)
SOUNDFILE_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}
#: audio-only suffixes written through PyAV: suffix -> (container format, codec)
PYAV_AUDIO = {".m4a": ("mp4", "aac"), ".opus": ("ogg", "libopus")}


def indexed_frames(num_frames: int, height: int = 48, width: int = 64, levels: int | None = None) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 frames; frame ``i`` is flat grey ``level(i)`` with a small coloured corner marker.

    Grey levels are spread over 16..240 (``levels`` distinct values, default ``num_frames``) so they survive YUV
    conversion and compression; :func:`frame_index_of` inverts the mapping.
    """
    levels = levels or num_frames
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for i in range(num_frames):
        frames[i] = _level(i, levels)
    frames[:, : height // 4, : width // 4] = (200, 40, 40)  # a non-grey corner, so colour channels differ
    return frames


def _level(i: int, levels: int) -> int:
    return int(round(16 + 224 * i / max(levels - 1, 1)))


def frame_index_of(frame: np.ndarray, levels: int) -> int:
    """The index :func:`indexed_frames` encoded in ``frame`` (``[H, W, 3]`` uint8, or ``[3, H, W]`` float 0..1)."""
    frame = np.asarray(frame, dtype=np.float64)
    if frame.shape[0] == 3 and frame.shape[-1] != 3:
        frame = frame.transpose(1, 2, 0)
    if frame.max() <= 1.0:
        frame = frame * 255.0
    h, w = frame.shape[:2]
    grey = float(np.median(frame[h // 2 :, w // 2 :]))
    return int(np.argmin([abs(grey - _level(i, levels)) for i in range(levels)]))


def tone(seconds: float, sr: int = 16000, freq: float = 440.0, channels: int = 1, amplitude: float = 0.5) -> np.ndarray:
    """A sine tone ``[samples]`` (mono) or ``[samples, channels]`` float32; channel ``c`` is at ``freq * (c + 1)``."""
    t = np.arange(int(round(seconds * sr))) / sr
    waves = [amplitude * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)]
    out = np.stack(waves, axis=-1).astype(np.float32)
    return out[:, 0] if channels == 1 else out


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float = 8.0,
    audio: np.ndarray | None = None,
    sr: int = 16000,
    codec: str | None = None,
    audio_codec: str | None = None,
) -> Path:
    """Encode ``frames`` (``[T, H, W, 3]`` uint8, H and W even) into ``path`` (mp4 / mkv / webm / avi / mov).

    ``audio`` (``[samples]`` or ``[samples, channels]`` float in [-1, 1], sample rate ``sr``) adds an audio track.
    Codecs default by suffix (:data:`VIDEO_CODECS`).
    """
    import av

    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be [T, H, W, 3] uint8, got {frames.shape} {frames.dtype}")
    vcodec, acodec, pix_fmt = VIDEO_CODECS[path.suffix.lower()]
    vcodec, acodec = codec or vcodec, audio_codec or acodec
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(vcodec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if vcodec == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast"}
        elif vcodec in ("libvpx", "mpeg4"):
            stream.bit_rate = 4_000_000
        astream = None
        if audio is not None:
            astream = container.add_stream(acodec, rate=_supported_rate(acodec, sr))
            layout = "mono" if np.asarray(audio).ndim == 1 else "stereo"
            astream.layout = layout
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            vf.time_base = 1 / rate
            container.mux(stream.encode(vf))
        container.mux(stream.encode())
        if astream is not None:
            _encode_audio(container, astream, np.asarray(audio, dtype=np.float32), sr)
    return path


def _supported_rate(codec: str, sr: int) -> int:
    """``sr`` if the encoder takes it, else 48 kHz (opus encodes 8 / 12 / 16 / 24 / 48 kHz only)."""
    import av

    rates = av.codec.Codec(codec, "w").audio_rates
    return sr if not rates or sr in rates else 48000


def _encode_audio(container, stream, audio: np.ndarray, sr: int) -> None:
    import av

    planar = audio.reshape(len(audio), -1).T.copy()  # [channels, samples]
    layout = "mono" if planar.shape[0] == 1 else "stereo"
    frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
    frame.sample_rate = sr
    frame.pts = 0
    ctx = stream.codec_context
    resampler = av.AudioResampler(
        format=ctx.format, layout=layout, rate=ctx.sample_rate, frame_size=ctx.frame_size or None
    )
    for part in [*resampler.resample(frame), *resampler.resample(None)]:
        container.mux(stream.encode(part))
    container.mux(stream.encode())


def write_audio(path: str | Path, waveform: np.ndarray, sr: int = 16000) -> Path:
    """Write ``waveform`` (``[samples]`` or ``[samples, channels]`` float in [-1, 1]) to wav / flac / ogg / mp3 with
    soundfile, or m4a / opus with PyAV (by suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    waveform = np.asarray(waveform, dtype=np.float32)
    if suffix in SOUNDFILE_FORMATS:
        import soundfile as sf

        subtype = {"OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}.get(SOUNDFILE_FORMATS[suffix])
        sf.write(str(path), waveform, sr, format=SOUNDFILE_FORMATS[suffix], subtype=subtype)
        return path
    if suffix in PYAV_AUDIO:
        import av

        fmt, codec = PYAV_AUDIO[suffix]
        with av.open(str(path), mode="w", format=fmt) as container:
            stream = container.add_stream(codec, rate=_supported_rate(codec, sr))
            stream.layout = "mono" if waveform.ndim == 1 else "stereo"
            _encode_audio(container, stream, waveform, sr)
        return path
    raise ValueError(
        f"write_audio: unsupported suffix {suffix!r}; use one of {sorted([*SOUNDFILE_FORMATS, *PYAV_AUDIO])}"
    )


def write_corrupt(path: str | Path, size: int = 4096, seed: int = 0, header: bytes = b"") -> Path:
    """A file of ``header`` followed by random bytes (a corrupt media file with a plausible suffix)."""
    path = Path(path)
    path.write_bytes(header + np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def truncate(src: str | Path, dst: str | Path, keep: float = 0.5) -> Path:
    """Copy the first ``keep`` fraction of ``src``'s bytes to ``dst`` (a truncated download)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return Path(dst)
