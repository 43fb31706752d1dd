"""Byte-deterministic writers for the world's media files (PNG, WAV, MP4 with AAC audio, NPY, CSV).

MP4 is written by PyAV (FFmpeg) with ``bitexact`` muxer and codec flags (no muxer version string, no creation
time), one encoder thread and a fixed quality (x264 CRF 16 preset veryfast, or MPEG-4 Part 2 at a fixed
quantiser; AAC with the fast coder at 64 kb/s), so the same frames and samples give the same bytes with the same
FFmpeg build (x264 still writes its version and settings in an SEI message: a different x264 build differs).

Two CPU-dependent stages are kept out of the way, so the bytes do not depend on the process or the CPU family:

- x264 runs without its assembly (``asm=0``). Its AVX-512 kernels (picked automatically on AVX-512 CPUs) give
  different bitstreams from one process to the next for the same frames (decoded frames up to ~20 grey levels
  apart), and its AVX2, AVX-512 and C paths do not agree with each other either. The C path is the same on every
  CPU; the world's clips are small, so it costs little.
- RGB is converted to YUV 4:2:0 here, with exact integer arithmetic (:func:`rgb_to_yuv420p`), instead of by
  swscale, whose SIMD paths round differently from its C path (±1 level on a few % of the pixels). MPEG-4 uses
  the C integer DCT for the same reason. (FFmpeg's AAC encoder gives the same bytes with and without SIMD.)
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


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] (H, W even) as a planar yuv420p array [H * 3 / 2, W] (PyAV's layout), BT.601 limited range.

    Integer arithmetic only (the 8-bit coefficients of BT.601; chroma from the 2x2 block sums), so every machine
    gives the same bytes.
    """
    h, w = frame.shape[:2]
    r, g, b = (frame[..., c].astype(np.int32) for c in range(3))
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    rs, gs, bs = (c.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3)) for c in (r, g, b))  # 4x the block mean
    u = ((-38 * rs - 74 * gs + 112 * bs + 512) >> 10) + 128
    v = ((112 * rs - 94 * gs - 18 * bs + 512) >> 10) + 128
    return np.concatenate([y.ravel(), u.ravel(), v.ravel()]).astype(np.uint8).reshape(h * 3 // 2, w)


def write_mp4(
    path: str | Path,
    frames: np.ndarray,
    fps: int,
    waveform: np.ndarray | None = None,
    sample_rate: int = 16000,
    codec: str = "libx264",
) -> None:
    """Encode uint8 RGB frames [T, H, W, 3] (H, W even) and an optional mono waveform as MP4 (H.264/MPEG-4 + AAC)."""
    frames = np.ascontiguousarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_mp4 expects uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"write_mp4 needs an even frame height and width (yuv420p), got {frames.shape[1:3]}")
    height, width = frames.shape[1:3]
    with av.open(str(path), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        video = container.add_stream(codec, rate=Fraction(fps))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.thread_count = 1
        video.codec_context.flags |= av.codec.context.Flags.bitexact
        if codec == "libx264":
            video.options = {"crf": "16", "preset": "veryfast", "x264-params": "asm=0:threads=1:sliced-threads=0"}
        else:
            video.options = {"qscale": "2", "dct": "int"}  # the C integer DCT: FFmpeg's SIMD DCTs round differently
            video.codec_context.qscale = 2
        audio = None
        if waveform is not None:
            audio = container.add_stream("aac", rate=sample_rate, layout="mono")
            audio.codec_context.flags |= av.codec.context.Flags.bitexact
            audio.bit_rate = 64000
            audio.options = {"aac_coder": "fast"}
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")
            vf.pts = i
            container.mux(video.encode(vf))
        container.mux(video.encode())
        if audio is not None:
            samples = np.asarray(waveform, dtype=np.float32)[None]
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout="mono")
            af.sample_rate, af.pts = sample_rate, 0
            container.mux(audio.encode(af))
            container.mux(audio.encode())
