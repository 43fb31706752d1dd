"""Byte-deterministic writers for the world's media files (PNG, WAV, MP4 with AAC audio, NPY, CSV).

MP4 is written by PyAV (FFmpeg) with ``bitexact`` muxer and codec flags (no muxer version string, no creation
time), one encoder thread and a fixed quality (x264 CRF 16 preset veryfast, or MPEG-4 Part 2 at a fixed
quantiser; AAC with the fast coder at 64 kb/s), so the same frames and samples give the same bytes with the same
FFmpeg build (x264 still writes its version and settings in an SEI message: a different x264 build differs).
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image

IMU_CSV_HEADER = "timestamp,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z"


def png_bytes(array: np.ndarray) -> bytes:
    """PNG of uint8 RGB [H, W, 3], uint8 grey [H, W] or uint16 grey [H, W] (PIL mode ``I;16``)."""
    if array.dtype == np.uint16:
        img = Image.fromarray(np.ascontiguousarray(array))  # mode I;16
    elif array.dtype == np.uint8:
        img = Image.fromarray(np.ascontiguousarray(array))
    else:
        raise ValueError(f"png_bytes expects uint8 or uint16, got {array.dtype}")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def wav_bytes(waveform: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM mono WAV."""
    buf = io.BytesIO()
    sf.write(buf, np.asarray(waveform, dtype=np.float32), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def imu_csv_bytes(imu: np.ndarray, rate: int) -> bytes:
    """CSV ``timestamp,acc_x,...,gyro_z`` (seconds, m/s², rad/s) of a [6, N] IMU array."""
    t = np.arange(imu.shape[1]) / rate
    rows = np.concatenate([t[None], imu.astype(np.float64)]).T
    line = ",".join(["%.6f"] * rows.shape[1]) + "\n"
    return (IMU_CSV_HEADER + "\n" + (line * rows.shape[0]) % tuple(rows.ravel().tolist())).encode()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_mp4(path: str | Path, frames: np.ndarray, fps: int, waveform: np.ndarray | None = None,
              sample_rate: int = 16000, codec: str = "libx264") -> None:
    """Encode uint8 RGB frames [T, H, W, 3] (H, W even) and an optional mono waveform as MP4 (H.264/MPEG-4 + AAC)."""
    frames = np.ascontiguousarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_mp4 expects uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    with av.open(str(path), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        video = container.add_stream(codec, rate=Fraction(fps))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.thread_count = 1
        video.codec_context.flags |= av.codec.context.Flags.bitexact
        if codec == "libx264":
            video.options = {"crf": "16", "preset": "veryfast"}
        else:
            video.options = {"qscale": "2"}
            video.codec_context.qscale = 2
        audio = None
        if waveform is not None:
            audio = container.add_stream("aac", rate=sample_rate, layout="mono")
            audio.codec_context.flags |= av.codec.context.Flags.bitexact
            audio.bit_rate = 64000
            audio.options = {"aac_coder": "fast"}
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            container.mux(video.encode(vf))
        container.mux(video.encode())
        if audio is not None:
            samples = np.asarray(waveform, dtype=np.float32)[None]
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout="mono")
            af.sample_rate, af.pts = sample_rate, 0
            container.mux(audio.encode(af))
            container.mux(audio.encode())
