"""Video modality: decord decoding (mp4 / webm / mkv / avi / ...), clip and frame sampling, spatial crops,
tubelet stem with joint or divided space-time attention.

Sampling (one clip = ``frames_per_clip`` frames):

* ``clip_seconds`` set — ImageBind (Girdhar et al. 2023; pytorchvideo ``ConstantClipsPerVideoSampler``): ``clips``
  windows of ``clip_seconds`` whose starts are spread uniformly over ``[0, duration - clip_seconds]``; a window covers
  frame indices ``[ceil(fps * start), ceil(fps * end))`` and ``frames_per_clip`` of them are taken uniformly
  (``UniformTemporalSubsample``: first and last for 2 frames).
* ``clip_seconds`` None — LanguageBind (Zhu et al. 2024): the video is split into ``clips`` equal spans (one span = the
  whole video) and ``np.linspace(first, last, frames_per_clip)`` frames are taken from each.

Videos with fewer frames than needed repeat frames (the uniform indices repeat), so any frame count decodes; a still
image (an ``[H, W, 3]`` array) is a one-frame video. In training, window starts are random and frames are drawn at a
random offset inside each of ``frames_per_clip`` equal segments (TSN, Wang et al. 2016).

Spatial (pytorchvideo ``ShortSideScale`` + ImageBind ``SpatialCrop``): short side to ``size`` (bilinear, no
antialias, as the references), then ``spatial_crops`` crops of ``crop_size`` — 1: centre; 3: left / centre / right
(top / centre / bottom for portrait video) — and CLIP mean/std. Training takes one random crop (and, if enabled, a
horizontal flip). Eval is deterministic (LanguageBind's processor random-crops and flips at inference; bind does not).

One sample is ``[C, T, H, W]``; several clips / crops are ``[clips * crops, C, T, H, W]`` (clip-major), and the
encoder averages their embeddings.

Long videos: any frame count runs (temporal positions are interpolated). Joint space-time attention costs grow with
the square of the frame count; ``attention="divided"`` (TimeSformer) grows linearly, and the stem keys
``reduce_time`` / ``reduce_space`` merge tokens across tubelet steps / neighbouring patches before the trunk
(:class:`bind.nn.stems.TubeletStem`), e.g. ``bind.create_model("bind-base", attention="divided",
stem={"reduce_time": 2})`` — ``bindspace bench compare`` measures speed and ``bindspace bench video-reduction``
world retrieval.

Decoding is guarded so that a corrupt file never takes the process down: PyAV (modern FFmpeg, errors are exceptions)
first probes the container — it must open, hold a video stream and decode a first frame — then decord (FFmpeg 4,
which can abort or segfault on some corrupt streams) decodes the sampled frames in a long-lived helper process
(``isolate_decoder``): a crash or hang there becomes a :class:`MediaError` and the helper is restarted. Whenever
decord fails, PyAV decodes the frames in-process instead. Cost: one helper start per process (~0.3 s) and one pipe copy
of the decoded frames per video.

PyAV is imported before decord: both bundle FFmpeg, and with decord's libraries loaded first PyAV's libvpx encoder
fails to open (decoding works either way).
"""

from __future__ import annotations

import atexit
import io
import math
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av  # noqa: I001 — before decord, see the module docstring
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bind.config import EncoderConfig
from bind.errors import MediaError
from bind.modality import Modality
from bind.nn.stems import TubeletStem
from bind.registry import register_modality
from modalities._common import source_bytes_or_path

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class VideoPreprocess:
    clips: int = 1  #: clips per video
    frames_per_clip: int = 8
    clip_seconds: float | None = None  #: None: clips split the whole video (LanguageBind)
    spatial_crops: int = 1  #: 1 (centre) or 3 (left / centre / right)
    size: int = 224  #: short side after resizing
    crop_size: int = 224
    interpolation: str = "bilinear"  # bilinear | bicubic | nearest
    antialias: bool = False
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    train_hflip: bool = False
    train_shift: int = 0  #: training batches move by up to this many pixels (:func:`bind.data.augment.random_shift`)
    backend: str = "decord"  # decord | pyav
    isolate_decoder: bool = True  #: run decord in a helper process (a crash cannot kill this one)
    decode_timeout_s: float = 300.0  #: a helper decode taking longer is killed (a hung decoder)
    array_fps: float = 30.0  #: frame rate assumed for array sources without one
    #: longest video ``load`` accepts, in frames and seconds, read from the container header before decoding
    #: (arrays: their frame count); 0 = no limit
    max_frames: int = 1_000_000
    max_seconds: float = 4 * 3600.0

    def __post_init__(self) -> None:
        if self.clips < 1 or self.frames_per_clip < 1:
            raise ValueError(f"video: clips and frames_per_clip must be >= 1, got {self.clips}, {self.frames_per_clip}")
        if self.spatial_crops not in (1, 3):
            raise ValueError(f"video: spatial_crops must be 1 or 3, got {self.spatial_crops}")
        if self.backend not in ("decord", "pyav"):
            raise ValueError(f"video: backend must be 'decord' or 'pyav', got {self.backend!r}")
        if self.crop_size > self.size:
            raise ValueError(f"video: crop_size {self.crop_size} exceeds the resized short side {self.size}")
        self.mean, self.std = tuple(self.mean), tuple(self.std)


PRESETS: dict[str, dict[str, Any]] = {
    # 5 clips x 2 frames, 2-s clips, 3 spatial crops -> 15 clips of [3, 2, 224, 224] (ImageBind data.py)
    "imagebind": {"clips": 5, "frames_per_clip": 2, "clip_seconds": 2.0, "spatial_crops": 3},
    # 8 frames uniformly over the whole video, centre crop (LanguageBind processing_video.py, decord backend)
    "languagebind": {"clips": 1, "frames_per_clip": 8, "clip_seconds": None, "spatial_crops": 1},
}

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".3gp", ".ogv")


@dataclass
class VideoStemConfig:
    """Tubelet stem (see :class:`VideoModality`)."""

    patch_size: int = 16
    temporal_patch: int = 2  #: frames per tubelet (ImageBind 2, LanguageBind 1)
    in_chans: int = 3
    num_frames: int | None = None  #: length of the temporal position table (default: preprocessing frames_per_clip)
    bias: bool = False
    reduce_time: int = 1  #: token reduction for long videos (:class:`bind.nn.stems.TubeletStem`)
    reduce_space: int = 1
    conv: tuple[int, ...] = ()  #: channels of 3x3 stride-2 conv layers before the patch projection (a conv stem)
    frame_difference: bool = False  #: also feed each frame's difference from the previous one (TSN's RGB difference)
    conv_time_kernel: int = 1  #: frames each ``conv`` kernel spans: 1 per frame (2-D), 3 spatio-temporal (R3D-style)
    conv_time_stride: tuple[int, ...] | None = None  #: each 3-D ``conv`` layer's stride in time (default 1 each)


@dataclass
class VideoFrames:
    """Decoded frames of one video: ``frames`` uint8 ``[clips, T, H, W, 3]`` taken at ``indices`` ``[clips, T]``."""

    frames: torch.Tensor
    indices: np.ndarray
    fps: float
    num_frames: int  #: frames in the source video
    source: Any = None


# --- sampling ---------------------------------------------------------------------------------------------------------
def sample_frame_indices(
    num_frames: int, fps: float, cfg: VideoPreprocess, train: bool = False, generator: np.random.Generator | None = None
) -> np.ndarray:
    """Frame indices ``[clips, frames_per_clip]`` into a video of ``num_frames`` frames at ``fps`` (see module doc)."""
    if num_frames < 1:
        raise ValueError("video has no frames")
    rng = generator or np.random.default_rng()
    spans = []
    if cfg.clip_seconds is None:
        bounds = np.linspace(0, num_frames, cfg.clips + 1)
        spans = [
            (int(math.floor(bounds[k])), max(int(math.floor(bounds[k + 1])), int(math.floor(bounds[k])) + 1))
            for k in range(cfg.clips)
        ]
    else:
        duration = num_frames / fps
        max_start = max(duration - cfg.clip_seconds, 0.0)
        if train:
            starts = np.sort(rng.uniform(0.0, max_start, cfg.clips)) if max_start > 0 else np.zeros(cfg.clips)
        else:
            starts = [max_start * k / max(cfg.clips - 1, 1) for k in range(cfg.clips)]
        for start in starts:
            first = min(math.ceil(fps * start), num_frames - 1)
            end = min(math.ceil(fps * (start + cfg.clip_seconds)), num_frames)
            spans.append((first, max(end, first + 1)))
    out = np.empty((cfg.clips, cfg.frames_per_clip), dtype=np.int64)
    for k, (first, end) in enumerate(spans):
        if train:
            edges = np.linspace(first, end, cfg.frames_per_clip + 1)
            lo, hi = np.floor(edges[:-1]), np.maximum(np.floor(edges[1:]), np.floor(edges[:-1]) + 1)
            out[k] = np.floor(lo + rng.uniform(size=cfg.frames_per_clip) * (hi - lo))
        else:
            out[k] = np.linspace(first, end - 1, cfg.frames_per_clip).astype(np.int64)  # truncation, as the references
    return np.clip(out, 0, num_frames - 1)


# --- decoding ---------------------------------------------------------------------------------------------------------
_AV_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError, RuntimeError)


def _av_input(source: Any, path_or_buffer: str | io.BytesIO) -> str | io.BytesIO:
    return io.BytesIO(bytes(source)) if isinstance(path_or_buffer, io.BytesIO) else path_or_buffer


def probe_video(source: Any, path_or_buffer: str | io.BytesIO, modality: str = "video") -> tuple[int, float]:
    """Open with PyAV, require a video stream and one decodable frame; ``(frames in the stream header or 0, fps)``.

    Raises :class:`MediaError` for containers FFmpeg cannot read, files without a video stream and streams whose
    packets decode to nothing.
    """
    try:
        container = av.open(_av_input(source, path_or_buffer), metadata_errors="ignore")
    except _AV_ERRORS as e:
        raise MediaError(source, modality, f"not a readable media container ({e})") from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise MediaError(source, modality, f"no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        errors = 0
        try:
            for packet in container.demux(stream):
                try:
                    if packet.decode():
                        return int(stream.frames or 0), fps
                except _AV_ERRORS:
                    errors += 1
                    if errors > 64:
                        break
        except _AV_ERRORS as e:
            raise MediaError(source, modality, f"no decodable video frames (demuxing failed: {e})") from None
    raise MediaError(source, modality, "no decodable video frames")


def _pyav_scan(source: Any, path_or_buffer: str | io.BytesIO) -> tuple[int, float]:
    """Count the video packets (no decoding) and read the frame rate."""
    with av.open(_av_input(source, path_or_buffer), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        count = 0
        try:
            for packet in container.demux(stream):
                count += packet.size > 0
        except _AV_ERRORS:
            pass
        return count, float(rate) if rate else 0.0


def _pyav_frames(
    source: Any, path_or_buffer: str | io.BytesIO, wanted: np.ndarray
) -> tuple[dict[int, np.ndarray], int]:
    """Decode sequentially up to the last wanted index; the wanted frames (RGB) and the frames decoded."""
    targets, last = set(int(i) for i in wanted.ravel()), int(wanted.max())
    got: dict[int, np.ndarray] = {}
    index = 0
    with av.open(_av_input(source, path_or_buffer), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except _AV_ERRORS:
                    continue
                for frame in frames:
                    if index in targets:
                        got[index] = frame.to_ndarray(format="rgb24")
                    index += 1
                if index > last:
                    break
        except _AV_ERRORS:
            pass
    return got, index


def _decode_pyav(
    source: Any, path_or_buffer: str | io.BytesIO, cfg: VideoPreprocess, train: bool, modality: str
) -> tuple[np.ndarray, np.ndarray, float, int]:
    count, fps = _pyav_scan(source, path_or_buffer)
    fps = fps or cfg.array_fps
    indices = sample_frame_indices(max(count, 1), fps, cfg, train)
    got, decoded = _pyav_frames(source, path_or_buffer, indices)
    if decoded == 0:
        raise MediaError(source, modality, "no decodable video frames")
    if decoded < count and not set(indices.ravel().tolist()) <= set(got):  # fewer decodable frames than packets
        count = decoded
        indices = sample_frame_indices(count, fps, cfg, train)
        got, _ = _pyav_frames(source, path_or_buffer, indices)
    return np.stack([got[int(i)] for i in np.unique(indices)]), indices, fps, count


class _DecoderFailed(Exception):
    """decord raised, crashed or hung on a file (the message says which)."""


_DECODE_SERVER = r"""
import io, os, pickle, struct, sys
rfd, wfd = int(sys.argv[1]), int(sys.argv[2])
def read(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(rfd, n - len(buf))
        if not chunk:
            sys.exit(0)
        buf += chunk
    return bytes(buf)
def reply(obj):
    data = pickle.dumps(obj, protocol=5)
    os.write(wfd, struct.pack("<Q", len(data)))
    view = memoryview(data)
    while view:
        view = view[os.write(wfd, view):]
try:
    import decord
    decord.logging.set_level(decord.logging.QUIET)
    startup_error = None
except Exception as e:
    startup_error = f"cannot import decord: {e}"
reader = None
while True:
    op, arg = pickle.loads(read(struct.unpack("<Q", read(8))[0]))
    try:
        if startup_error:
            raise RuntimeError(startup_error)
        if op == "open":
            reader = None
            reader = decord.VideoReader(io.BytesIO(arg) if isinstance(arg, bytes) else arg, num_threads=1)
            reply(("ok", (len(reader), float(reader.get_avg_fps()))))
        elif op == "frames":
            reply(("ok", reader.get_batch(list(arg)).asnumpy()))
    except Exception as e:
        reply(("error", f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"))
"""


class _IsolatedDecord:
    """A long-lived helper process running decord; requests and replies are length-prefixed pickles over pipes."""

    def __init__(self) -> None:
        req_r, self._req_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _DECODE_SERVER, str(req_r), str(rep_w)],
            pass_fds=(req_r, rep_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        os.close(req_r)
        os.close(rep_w)
        self.pid = os.getpid()

    def call(self, op: str, arg: Any, timeout: float) -> Any:
        data = pickle.dumps((op, arg), protocol=5)
        try:
            os.write(self._req_w, struct.pack("<Q", len(data)))
            view = memoryview(data)
            while view:
                view = view[os.write(self._req_w, view) :]
            size = struct.unpack("<Q", self._read(8, timeout))[0]
            status, value = pickle.loads(self._read(size, timeout))
        except (BrokenPipeError, EOFError):
            self.close()
            code = self.proc.wait()
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            raise _DecoderFailed(f"decord crashed ({how})") from None
        except TimeoutError:
            self.close()
            raise _DecoderFailed(f"decord did not answer within {timeout:.0f} s") from None
        if status != "ok":
            raise _DecoderFailed(value)
        return value

    def _read(self, n: int, timeout: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            ready, _, _ = select.select([self._rep_r], [], [], timeout)
            if not ready:
                raise TimeoutError
            chunk = os.read(self._rep_r, min(n - len(buf), 1 << 24))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    @property
    def alive(self) -> bool:
        return self.pid == os.getpid() and self.proc.poll() is None

    def close(self) -> None:
        if self.pid != os.getpid():
            return  # inherited through fork: the parent owns the helper
        for fd in (self._req_w, self._rep_r):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


_helper: _IsolatedDecord | None = None
_helper_lock = threading.Lock()


def _close_helper() -> None:
    if _helper is not None:
        _helper.close()


atexit.register(_close_helper)


def _decord_module():
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    return decord


def _decode_decord(
    source: Any,
    path_or_buffer: str | io.BytesIO,
    cfg: VideoPreprocess,
    train: bool,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    arg = path_or_buffer if isinstance(path_or_buffer, str) else bytes(source)
    if cfg.isolate_decoder and os.name == "posix":
        global _helper
        with _helper_lock:
            if _helper is None or not _helper.alive:
                try:
                    _helper = _IsolatedDecord()
                except OSError as e:
                    raise _DecoderFailed(f"cannot start the decord helper process ({e})") from None
            count, fps = _helper.call("open", arg, cfg.decode_timeout_s)
            if count < 1:
                raise _DecoderFailed("decord found no frames")
            indices = sample_frame_indices(count, fps or cfg.array_fps, cfg, train)
            frames = _helper.call("frames", np.unique(indices).tolist(), cfg.decode_timeout_s)
        return frames, indices, fps or cfg.array_fps, count
    decord = _decord_module()
    try:
        reader = decord.VideoReader(io.BytesIO(arg) if isinstance(arg, bytes) else arg, num_threads=1)
        count, fps = len(reader), float(reader.get_avg_fps())
        if count < 1:
            raise _DecoderFailed("decord found no frames")
        indices = sample_frame_indices(count, fps or cfg.array_fps, cfg, train)
        frames = reader.get_batch(np.unique(indices).tolist()).asnumpy()
    except Exception as e:  # noqa: BLE001 — DECORDError and friends: fall back to PyAV
        raise _DecoderFailed(f"{type(e).__name__}: {str(e).strip()[:200]}") from None
    return frames, indices, fps or cfg.array_fps, count


def video_header_length(source: Any, modality: str = "video") -> tuple[int | None, float | None]:
    """``(frames, seconds)`` of the first video stream as its container header states them (None when unstated);
    reads no frames. Unreadable containers are left to the decoder's own error."""
    path_or_buffer = source_bytes_or_path(source, modality)
    with av.logging.Capture():
        try:
            with av.open(_av_input(source, path_or_buffer), metadata_errors="ignore") as container:
                if not container.streams.video:
                    return None, None
                stream = container.streams.video[0]
                seconds = None
                if stream.duration is not None and stream.time_base is not None:
                    seconds = float(stream.duration * stream.time_base)
                elif container.duration is not None:
                    seconds = container.duration / av.time_base
                return (int(stream.frames) or None), seconds
        except _AV_ERRORS:
            return None, None


def decode_video(source: Any, cfg: VideoPreprocess, train: bool = False, modality: str = "video") -> VideoFrames:
    """Decode the sampled frames of a video file or bytes (see the module docstring for the safety layers)."""
    path_or_buffer = source_bytes_or_path(source, modality)
    with av.logging.Capture():  # FFmpeg's complaints about a corrupt file stay out of stderr
        return _decode_video(source, path_or_buffer, cfg, train, modality)


def _decode_video(
    source: Any, path_or_buffer: str | io.BytesIO, cfg: VideoPreprocess, train: bool, modality: str
) -> VideoFrames:
    probe_video(source, path_or_buffer, modality)
    if cfg.backend == "decord":
        try:
            frames, indices, fps, count = _decode_decord(source, path_or_buffer, cfg, train)
        except _DecoderFailed as decord_error:
            try:
                frames, indices, fps, count = _decode_pyav(source, path_or_buffer, cfg, train, modality)
            except MediaError as e:
                raise MediaError(source, modality, f"{e.reason}; decord: {decord_error}") from None
    else:
        frames, indices, fps, count = _decode_pyav(source, path_or_buffer, cfg, train, modality)
    _, inverse = np.unique(indices, return_inverse=True)
    gathered = torch.from_numpy(np.ascontiguousarray(frames))[torch.from_numpy(inverse.reshape(-1))]
    return VideoFrames(gathered.reshape(*indices.shape, *gathered.shape[1:]), indices, fps, count, source)


def frames_from_array(
    source: Any, cfg: VideoPreprocess, train: bool = False, fps: float | None = None, modality: str = "video"
) -> VideoFrames:
    """Sample frames from decoded frames: ``[T, H, W, 3]`` or one ``[H, W, 3]`` image (uint8, or float in [0, 1])."""
    arr = source.detach().cpu() if isinstance(source, torch.Tensor) else torch.from_numpy(np.asarray(source))
    if arr.dim() == 3:
        arr = arr[None]
    if arr.dim() != 4 or arr.shape[-1] != 3 or 0 in arr.shape:
        raise MediaError(
            source, modality, f"expected frames [T, H, W, 3] or an image [H, W, 3], got {tuple(arr.shape)}"
        )
    if arr.is_floating_point():
        if not torch.isfinite(arr).all():
            raise MediaError(source, modality, "frames contain NaN or infinite values")
        arr = (arr.clamp(0, 1) * 255).round().to(torch.uint8)
    elif arr.dtype != torch.uint8:
        raise MediaError(source, modality, f"expected uint8 or float frames, got dtype {arr.dtype}")
    fps = float(fps or cfg.array_fps)
    indices = sample_frame_indices(arr.shape[0], fps, cfg, train)
    frames = arr[torch.from_numpy(indices.reshape(-1))]
    return VideoFrames(frames.reshape(*indices.shape, *arr.shape[1:]), indices, fps, arr.shape[0], source)


# --- spatial transform ------------------------------------------------------------------------------------------------
def short_side_scale(
    x: torch.Tensor, size: int, interpolation: str = "bilinear", antialias: bool = False
) -> torch.Tensor:
    """Resize ``[..., H, W]`` to short side ``size`` (pytorchvideo ``short_side_scale``: the long side is floored)."""
    h, w = x.shape[-2:]
    new_h, new_w = (int(math.floor(h / w * size)), size) if w < h else (size, int(math.floor(w / h * size)))
    if (new_h, new_w) == (h, w):
        return x
    lead = x.shape[:-2]
    x = x.reshape(-1, 1, h, w) if x.dim() != 4 else x
    align = None if interpolation == "nearest" else False
    out = F.interpolate(
        x,
        size=(new_h, new_w),
        mode=interpolation,
        align_corners=align,
        antialias=antialias and interpolation != "nearest",
    )
    return out.reshape(*lead, new_h, new_w)


def crop_offsets(height: int, width: int, size: int, spatial_idx: int) -> tuple[int, int]:
    """ImageBind ``uniform_crop`` offsets: 0 / 1 / 2 = left / centre / right (top / centre / bottom if portrait)."""
    y, x = int(math.ceil((height - size) / 2)), int(math.ceil((width - size) / 2))
    if height > width:
        y = {0: 0, 1: y, 2: height - size}[spatial_idx]
    else:
        x = {0: 0, 1: x, 2: width - size}[spatial_idx]
    return y, x


def video_transform(raw: VideoFrames, cfg: VideoPreprocess, train: bool = False) -> torch.Tensor:
    """Frames -> normalised ``[C, T, H, W]`` (or ``[clips * crops, C, T, H, W]``); deterministic when not training."""
    mean = torch.tensor(cfg.mean).view(-1, 1, 1, 1)
    std = torch.tensor(cfg.std).view(-1, 1, 1, 1)
    out = []
    for clip in raw.frames:  # [T, H, W, 3] uint8
        x = clip.permute(3, 0, 1, 2).float().div_(255.0)  # [C, T, H, W]
        x = short_side_scale(x, cfg.size, cfg.interpolation, cfg.antialias)
        x = (x - mean) / std
        h, w = x.shape[-2:]
        if train:
            y0 = int(torch.randint(0, h - cfg.crop_size + 1, ()))
            x0 = int(torch.randint(0, w - cfg.crop_size + 1, ()))
            crop = x[..., y0 : y0 + cfg.crop_size, x0 : x0 + cfg.crop_size]
            if cfg.train_hflip and bool(torch.rand(()) < 0.5):
                crop = crop.flip(-1)
            out.append(crop)
            continue
        for idx in (1,) if cfg.spatial_crops == 1 else (0, 1, 2):
            y0, x0 = crop_offsets(h, w, cfg.crop_size, idx)
            out.append(x[..., y0 : y0 + cfg.crop_size, x0 : x0 + cfg.crop_size])
    stacked = torch.stack(out).contiguous()
    return stacked[0] if stacked.shape[0] == 1 else stacked


# --- plugin -----------------------------------------------------------------------------------------------------------
@register_modality
class VideoModality(Modality):
    """Video clips ``[C, T, H, W]`` through a Conv3d tubelet stem and a joint or divided space-time trunk.

    Encoder ``stem`` keys: ``patch_size``, ``temporal_patch`` (1 or 2; ImageBind 2, LanguageBind 1), ``in_chans``,
    ``num_frames`` (length of the temporal position table; interpolated for other frame counts; defaults to the
    preprocessing ``frames_per_clip``), ``bias``. ``attention: divided`` gives LanguageBind's layout (per-frame CLS,
    temporal then spatial attention per layer, frame CLS tokens averaged by the head).
    """

    name = "video"
    order = 20
    lora_rank = 16  # LanguageBind's LoRA rank (alpha 16, dropout 0)
    Preprocess = VideoPreprocess
    StemConfig = VideoStemConfig
    extensions = VIDEO_SUFFIXES
    webdataset_keys = ("mp4", "avi", "webm", "mkv", "mov")
    zeroshot_templates = ("a video of a {}.", "a clip of a {}.", "a video of the {}.", "footage of a {}.")
    presets = PRESETS
    default_preset = "languagebind"
    sample_ndim = 4
    sample_formats = ("mp4",)
    encoder_defaults = {
        "ln_pre": True,
        "pool": "cls",
        "attention": "joint",
        "stem": {"patch_size": 16, "temporal_patch": 2, "in_chans": 3},
    }

    def load(self, source: Any, cfg: VideoPreprocess, train: bool = False) -> VideoFrames:
        """Decode and temporally sample a video: a path or bytes (any container FFmpeg reads), decoded frames
        ``[T, H, W, 3]`` (numpy / torch, uint8 or float in [0, 1]), ``(frames, fps)``, or one ``[H, W, 3]`` image.

        ``train`` randomises the clip positions (the training path calls ``process(..., train=True)``).
        """
        if isinstance(source, tuple) and len(source) == 2 and not isinstance(source[0], (str, bytes, os.PathLike)):
            self._check_limits(source, cfg, len(source[0]) if np.ndim(source[0]) == 4 else 1, None)
            return frames_from_array(source[0], cfg, train, fps=source[1], modality=self.name)
        if isinstance(source, (np.ndarray, torch.Tensor)):
            self._check_limits(source, cfg, len(source) if source.ndim == 4 else 1, None)
            return frames_from_array(source, cfg, train, modality=self.name)
        if cfg.max_frames or cfg.max_seconds:
            self._check_limits(source, cfg, *video_header_length(source, self.name))
        return decode_video(source, cfg, train, self.name)

    def _check_limits(self, source: Any, cfg: VideoPreprocess, frames: int | None, seconds: float | None) -> None:
        if cfg.max_frames and frames is not None and frames > cfg.max_frames:
            raise MediaError(
                source,
                self.name,
                f"{frames} frames exceeds preprocess max_frames={cfg.max_frames}; raise max_frames to accept it",
            )
        if cfg.max_seconds and seconds is not None and seconds > cfg.max_seconds:
            raise MediaError(
                source,
                self.name,
                f"{seconds:.1f} s exceeds preprocess max_seconds={cfg.max_seconds:g}; raise max_seconds to accept it",
            )

    def transform(self, raw: VideoFrames, cfg: VideoPreprocess, train: bool = False) -> torch.Tensor:
        return video_transform(raw, cfg, train)

    def process(self, source: Any, cfg: VideoPreprocess, train: bool = False) -> torch.Tensor:
        return self.transform(self.load(source, cfg, train=train), cfg, train)

    def channels(self, cfg: EncoderConfig) -> int:
        return int(self.stem_config(cfg).in_chans)

    def expected_shape(self, cfg: EncoderConfig) -> str:
        return f"[{self.channels(cfg)}, T, H, W]"

    def prepare_encoder_config(self, cfg: EncoderConfig, root=None) -> None:
        cfg.stem.setdefault("num_frames", self.preprocess_config(cfg.preprocess).frames_per_clip)

    def stem(self, cfg: EncoderConfig) -> nn.Module:
        pp = self.preprocess_config(cfg.preprocess)
        s = self.stem_config(cfg)
        return TubeletStem(
            s.in_chans,
            cfg.width,
            s.patch_size,
            pp.crop_size,
            num_frames=s.num_frames or pp.frames_per_clip,
            temporal_patch=s.temporal_patch,
            divided=cfg.attention == "divided",
            bias=s.bias,
            reduce_time=s.reduce_time,
            reduce_space=s.reduce_space,
            conv=s.conv,
            frame_difference=s.frame_difference,
            conv_time_kernel=s.conv_time_kernel,
            conv_time_stride=s.conv_time_stride,
        )

    def example_input(self, cfg: EncoderConfig, batch: int) -> torch.Tensor:
        """A random batch at the configured preprocessing: ``[B, C, T, H, W]`` or ``[B, clips, C, T, H, W]``."""
        pp = self.preprocess_config(cfg.preprocess)
        views = pp.clips * pp.spatial_crops
        shape = (self.channels(cfg), pp.frames_per_clip, pp.crop_size, pp.crop_size)
        return torch.randn(batch, views, *shape) if views > 1 else torch.randn(batch, *shape)

    def preview(self, source: Any, cfg: VideoPreprocess) -> dict[str, Any]:
        """The middle sampled frame as the poster; the page plays the original file."""
        from bind.preview import thumbnail

        frames = self.load(source, cfg).frames  # uint8 [clips, T, H, W, 3]
        return {"picture": thumbnail(frames[frames.shape[0] // 2, frames.shape[1] // 2].numpy()), "play": "video"}

    def write_sample(self, fmt: str, directory: Path, index: int, rng: np.random.Generator) -> Path:
        """3 s of 320x240 H.264 at 24 fps: a slow pan over a smooth random scene."""
        from modalities._common import smooth_field

        path, fps, n = directory / f"{self.name}_{index}.{fmt}", 24, 72
        base = (np.stack([smooth_field(rng, 240, 336) for _ in range(3)], -1) * 255).astype(np.uint8)
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
            stream.options = {"preset": "ultrafast", "crf": "23"}
            for t in range(n):
                shift = t % 16
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, shift : shift + 320]), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        return path
