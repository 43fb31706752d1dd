"""IMU modality: accelerometer xyz + gyroscope xyz -> ``[6, window]`` at a fixed rate, patches of 8 samples.

ImageBind (Girdhar et al., CVPR 2023) encodes Ego4D IMU as 6 channels x 2000 samples (10 s at 200 Hz), cut into
patches of 8 samples (48 features) by ``Linear(48, 512, bias=False)`` + LayerNorm -> 250 tokens
(:class:`bind.nn.stems.SequencePatchStem`; ``stem: {patch_size: 8, norm: true}``). ImageBind-Huge's IMU trunk is
512/6/8 with drop path 0.7, head dropout 0.5, fixed logit scale 5 (set by model configs / converters).

Sources
  * ``.npy`` / arrays / tensors: ``[6, N]`` or ``[N, 6]``. The axis of length 6 holds the channels; when both
    are 6 (a 6 x 6 array) the layout is ``[6, N]`` (channels first, ImageBind's). No timestamps: the recording is
    at ``input_rate`` (None = already at ``sample_rate``).
  * ``.npz``: the array ``imu`` (or ``data``, or the only array), optional ``timestamps`` and ``sample_rate``.
  * ``.csv`` (``,`` ``;`` tab): a header row naming the columns, matched case-insensitively after dropping unit
    suffixes in brackets (``acc_x [m/s^2]``) and turning separators into ``_``. Accepted names per axis ``a``:
    ``acc_a accel_a acceleration_a accelerometer_a linear_acceleration_a acca aa`` and ``gyro_a gyr_a gyroscope_a
    angular_velocity_a gyroa ga wa omega_a``. An optional timestamp column (``timestamp time t ts seconds``, with a
    ``_s`` / ``_ms`` / ``_us`` / ``_ns`` suffix or a ``(ms)`` / ``[ms]`` giving its unit) fixes the source rate.
    A CSV missing a column raises :class:`bind.errors.MediaError` listing the missing channels and accepted names.

Resampling (``sample_rate``, 200 Hz): with timestamps (unit from the column suffix, ``timestamp_unit``, or
inferred: fractional values are seconds; integers take the unit that puts the median rate in [10 Hz, 10 kHz)),
or a known source rate, the channels are linearly interpolated onto a uniform ``sample_rate`` grid; when
downsampling by more than 1.5x a moving average over the source samples of one output period is applied first
against aliasing.

Normalisation (no public constants exist; ours): accelerometer in g (``m/s2`` divided by 9.80665, so gravity reads
1), gyroscope in rad/s divided by ``gyro_scale_rad_s`` = pi (180 deg/s -> 1): both land in roughly [-2, 2] for
human motion while keeping gravity (the device's orientation) visible. ``normalization: window`` instead
standardises each channel over the window (zero mean, unit std).

Window (``window`` = 2000 samples): longer recordings are cut to the centre window in eval and a random window in
training; shorter ones are padded to the window after normalisation, by repeating the recording (``pad: repeat``,
default: keeps gravity and motion statistics) or with zeros (``pad: zeros``).
"""

from __future__ import annotations

import csv
import io
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bind.config import EncoderConfig
from bind.errors import MediaError
from bind.modality import Modality
from bind.nn.stems import SequencePatchStem
from bind.registry import register_modality
from modalities._common import source_bytes_or_path
from modalities.depth import NPY_MAGIC, ZIP_MAGIC, read_array, sniff

GRAVITY = 9.80665  # m/s^2 per g
CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
_ACC = ("acc_{a}", "accel_{a}", "acceleration_{a}", "accelerometer_{a}", "linear_acceleration_{a}", "acc{a}", "a{a}")
_GYRO = ("gyro_{a}", "gyr_{a}", "gyroscope_{a}", "angular_velocity_{a}", "gyro{a}", "g{a}", "w{a}", "omega_{a}")
ALIASES = {
    f"{kind}_{a}": tuple(p.format(a=a) for p in pats) for kind, pats in (("acc", _ACC), ("gyro", _GYRO)) for a in "xyz"
}
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_TIME_NAMES = ("timestamp", "time", "t", "ts", "seconds", "secs")


@dataclass
class ImuPreprocess:
    """Every constant of IMU preprocessing (see the module docstring)."""

    sample_rate: float = 200.0  # Hz after resampling
    window: int = 2000  # samples per example (ImageBind: 2000 = 10 s at 200 Hz)
    input_rate: float | None = None  # Hz of sources without timestamps (None = already at sample_rate)
    timestamp_unit: str = "auto"  # auto | s | ms | us | ns (for CSV / .npz timestamps without a unit suffix)
    accel_unit: str = "m/s2"  # m/s2 | g — unit of the source accelerometer
    gyro_unit: str = "rad/s"  # rad/s | deg/s — unit of the source gyroscope
    normalization: str = "fixed"  # fixed (acc in g, gyro / gyro_scale_rad_s) | window (per-channel standardise)
    gyro_scale_rad_s: float = math.pi
    pad: str = "repeat"  # repeat | zeros
    window_eps: float = 1e-6  # added to the std of ``normalization: window``

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("timestamp_unit", self.timestamp_unit, ("auto", *TIME_UNITS)),
            ("accel_unit", self.accel_unit, ("m/s2", "g")),
            ("gyro_unit", self.gyro_unit, ("rad/s", "deg/s")),
            ("normalization", self.normalization, ("fixed", "window")),
            ("pad", self.pad, ("repeat", "zeros")),
        ):
            if value not in allowed:
                raise ValueError(f"imu: {name}={value!r}, expected one of {allowed}")
        if self.sample_rate <= 0 or self.window < 1 or (self.input_rate is not None and self.input_rate <= 0):
            raise ValueError(
                f"imu: need sample_rate > 0, window >= 1, input_rate > 0 (got {self.sample_rate}, "
                f"{self.window}, {self.input_rate})"
            )


@dataclass
class ImuStemConfig:
    patch_size: int = 8  #: samples per token (a linear patch projection over ``[6, patch]``)
    in_chans: int = len(CHANNELS)
    norm: bool = False
    norm_eps: float = 1e-5
    bias: bool = False


@dataclass
class ImuRecording:
    """A decoded recording in source units: ``samples [6, N]`` (acc xyz, gyro xyz), timestamps in seconds or a
    sample rate when known."""

    samples: np.ndarray
    timestamps_s: np.ndarray | None = None
    sample_rate: float | None = None


def _column_key(name: str) -> str:
    name = re.sub(r"[\(\[\{].*?[\)\]\}]", "", name.strip().lower())
    return re.sub(r"[^0-9a-z]+", "_", name).strip("_")


def _time_column(header: list[str], keys: list[str]) -> tuple[int, str | None] | None:
    """Index and unit (from a ``_ms``-style suffix or a bracketed ``(ms)``; None = unknown) of the timestamp column."""
    for i, k in enumerate(keys):
        base, _, suffix = k.rpartition("_")
        if k in _TIME_NAMES:
            bracket = re.search(r"[\(\[]\s*([a-z]+)\s*[\)\]]", header[i].lower())
            return i, bracket.group(1) if bracket and bracket.group(1) in TIME_UNITS else None
        if base in _TIME_NAMES and suffix in TIME_UNITS:
            return i, suffix
    return None


def infer_time_unit(t: np.ndarray) -> str:
    """Seconds for fractional timestamps; for integers the unit that puts the median rate in [10 Hz, 10 kHz)."""
    if not np.all(t == np.round(t)) or len(t) < 2:
        return "s"
    dt = float(np.median(np.diff(t)))
    for unit, scale in TIME_UNITS.items():
        if dt > 0 and 10.0 <= 1.0 / (dt * scale) < 10_000.0:
            return unit
    return "s"


def resample(samples: np.ndarray, times_s: np.ndarray, rate: float) -> np.ndarray:
    """Channels ``[C, N]`` at ``times_s`` -> a uniform ``rate`` grid from the first timestamp (linear; a moving
    average over one output period first when downsampling by more than 1.5x)."""
    if len(times_s) < 2:
        return samples
    src_rate = (len(times_s) - 1) / float(times_s[-1] - times_s[0])
    width = int(round(src_rate / rate))
    if src_rate > 1.5 * rate and width > 1:
        kernel = np.ones(width, dtype=np.float64) / width
        padded = np.pad(samples, ((0, 0), (width // 2, width - 1 - width // 2)), mode="edge")
        samples = np.stack([np.convolve(ch, kernel, mode="valid") for ch in padded])
    n_out = int(math.floor((times_s[-1] - times_s[0]) * rate + 1e-6)) + 1
    grid = times_s[0] + np.arange(n_out) / rate
    return np.stack([np.interp(grid, times_s, ch) for ch in samples]).astype(np.float32)


@register_modality
class ImuModality(Modality):
    """Inertial measurements; ``load`` returns an :class:`ImuRecording`, ``transform`` a ``[6, window]`` tensor."""

    name = "imu"
    order = 60
    Preprocess = ImuPreprocess
    StemConfig = ImuStemConfig
    extensions = (".csv", ".npy", ".npz")
    webdataset_keys = ("imu.npy", "imu.npz", "imu.csv", "npy", "npz", "csv")
    zeroshot_templates = ("a person {}.", "motion of {}.", "someone is {}.")
    presets = {"imagebind": {}}
    default_preset = "imagebind"
    sample_ndim = 2
    sample_formats = ("csv", "npy")
    encoder_defaults = {"pool": "cls", "stem": {"patch_size": 8, "norm": True}}

    # --- decoding -----------------------------------------------------------------------------------------------
    def load(self, source: Any, cfg: ImuPreprocess) -> ImuRecording:
        if isinstance(source, torch.Tensor):
            source = source.detach().cpu().numpy()
        if isinstance(source, np.ndarray):
            rec = ImuRecording(self._channels_first(source, source), sample_rate=cfg.input_rate)
        else:
            head = sniff(source, self.name)
            if head.startswith(NPY_MAGIC):
                rec = ImuRecording(
                    self._channels_first(read_array(source, self.name), source), sample_rate=cfg.input_rate
                )
            elif head.startswith(ZIP_MAGIC):
                rec = self._read_npz(source, cfg)
            else:
                rec = self._read_csv(source, source_bytes_or_path(source, self.name), cfg)
        self._check(rec, source)
        return rec

    def _channels_first(self, a: np.ndarray, source: Any) -> np.ndarray:
        a = np.asarray(a)
        if a.ndim != 2 or 6 not in a.shape:
            raise MediaError(
                source,
                self.name,
                f"expected 6 channels (accelerometer xyz + gyroscope xyz) as [6, N] "
                f"or [N, 6], got shape {tuple(a.shape)}",
            )
        if a.dtype.kind not in "uif":
            raise MediaError(source, self.name, f"expected numeric samples, got dtype {a.dtype}")
        return (a if a.shape[0] == 6 else a.T).astype(np.float32)

    def _read_npz(self, source: Any, cfg: ImuPreprocess) -> ImuRecording:
        fp = source_bytes_or_path(source, self.name)
        try:
            with np.load(fp, allow_pickle=False) as z:
                keys = list(z.keys())
                arrays = {k: z[k] for k in keys}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise MediaError(source, self.name, f"not a readable .npz archive ({e})") from None
        data_key = next((k for k in ("imu", "data") if k in arrays), None)
        data_keys = [k for k in keys if k not in ("timestamps", "sample_rate")]
        if data_key is None and len(data_keys) == 1:
            data_key = data_keys[0]
        if data_key is None:
            raise MediaError(
                source,
                self.name,
                f".npz holds arrays {keys}; expected 'imu' (or 'data'), optionally with 'timestamps' and 'sample_rate'",
            )
        times = arrays.get("timestamps")
        rate = float(arrays["sample_rate"]) if "sample_rate" in arrays else cfg.input_rate
        rec = ImuRecording(self._channels_first(arrays[data_key], source), sample_rate=rate)
        if times is not None:
            rec.timestamps_s = self._seconds(np.asarray(times, dtype=np.float64).reshape(-1), None, cfg)
        return rec

    def _read_csv(self, source: Any, fp: str | io.BytesIO, cfg: ImuPreprocess) -> ImuRecording:
        try:
            text = (
                fp.getvalue().decode("utf-8-sig")
                if isinstance(fp, io.BytesIO)
                else Path(fp).read_text(encoding="utf-8-sig")
            )
        except UnicodeDecodeError:
            raise MediaError(source, self.name, "not an IMU file: neither .npy, .npz nor UTF-8 CSV text") from None
        first, _, body = text.lstrip().partition("\n")
        if not first.strip():
            raise MediaError(source, self.name, "empty CSV")
        delimiter = max(",;\t", key=first.count)
        header = next(csv.reader([first.strip()], delimiter=delimiter))
        keys = [_column_key(h) for h in header]
        cols, missing = [], []
        for channel in CHANNELS:
            idx = next((keys.index(a) for a in ALIASES[channel] if a in keys), None)
            if idx is None:
                missing.append(channel)
            else:
                cols.append(idx)
        if missing:
            accepted = "; ".join(f"{c}: {'/'.join(ALIASES[c])}" for c in missing)
            raise MediaError(
                source,
                self.name,
                f"CSV is missing columns for {', '.join(missing)} (accepted names: {accepted}); found columns {header}",
            )
        if not body.strip():
            raise MediaError(source, self.name, "CSV has a header but no samples")
        time_col = _time_column(header, keys)
        use = cols + ([time_col[0]] if time_col else [])
        try:
            table = np.loadtxt(
                io.StringIO(body), delimiter=delimiter, usecols=use, dtype=np.float64, ndmin=2, encoding=None
            )
        except ValueError as e:
            raise MediaError(source, self.name, f"CSV has a non-numeric value ({e})") from None
        rec = ImuRecording(table[:, :6].T.astype(np.float32), sample_rate=cfg.input_rate)
        if time_col:
            rec.timestamps_s = self._seconds(table[:, 6], time_col[1], cfg)
        return rec

    def _seconds(self, t: np.ndarray, unit: str | None, cfg: ImuPreprocess) -> np.ndarray:
        unit = unit or (cfg.timestamp_unit if cfg.timestamp_unit != "auto" else infer_time_unit(t))
        return (t - t[0]) * TIME_UNITS[unit] if len(t) else t

    def _check(self, rec: ImuRecording, source: Any) -> None:
        x = rec.samples
        if x.shape[1] < 1:
            raise MediaError(source, self.name, "no samples")
        bad = ~np.isfinite(x)
        if bad.any():
            ch, first = np.argwhere(bad)[0]
            per = ", ".join(f"{CHANNELS[c]}: {int(n)}" for c, n in enumerate(bad.sum(1)) if n)
            raise MediaError(
                source, self.name, f"{int(bad.sum())} NaN/inf values ({per}; first: {CHANNELS[ch]} at sample {first})"
            )
        t = rec.timestamps_s
        if t is not None:
            if len(t) != x.shape[1]:
                raise MediaError(source, self.name, f"{len(t)} timestamps for {x.shape[1]} samples")
            if not np.isfinite(t).all() or (len(t) > 1 and np.any(np.diff(t) <= 0)):
                raise MediaError(source, self.name, "timestamps are not finite and strictly increasing")
        if rec.sample_rate is not None and not rec.sample_rate > 0:
            raise MediaError(source, self.name, f"sample rate must be positive, got {rec.sample_rate}")

    # --- preprocessing ------------------------------------------------------------------------------------------
    def transform(self, raw: ImuRecording, cfg: ImuPreprocess, train: bool = False) -> torch.Tensor:
        x = raw.samples.astype(np.float32)
        times = raw.timestamps_s
        if times is None and raw.sample_rate is not None and raw.sample_rate != cfg.sample_rate:
            times = np.arange(x.shape[1]) / raw.sample_rate
        if times is not None:
            x = resample(x, times, cfg.sample_rate)
        x = x.copy()
        if cfg.accel_unit == "m/s2":
            x[:3] /= GRAVITY
        if cfg.gyro_unit == "deg/s":
            x[3:] = np.deg2rad(x[3:])
        n = x.shape[1]
        if n > cfg.window:
            start = int(torch.randint(0, n - cfg.window + 1, ()).item()) if train else (n - cfg.window) // 2
            x = x[:, start : start + cfg.window]
        if cfg.normalization == "fixed":
            x[3:] /= cfg.gyro_scale_rad_s
        else:
            x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + cfg.window_eps)
        if x.shape[1] < cfg.window:
            if cfg.pad == "repeat":
                x = np.tile(x, (1, -(-cfg.window // x.shape[1])))[:, : cfg.window]
            else:
                x = np.pad(x, ((0, 0), (0, cfg.window - x.shape[1])))
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    # --- model side ---------------------------------------------------------------------------------------------
    def channels(self, cfg: EncoderConfig) -> int:
        return int(self.stem_config(cfg).in_chans)

    def expected_shape(self, cfg: EncoderConfig) -> str:
        return f"[{self.channels(cfg)}, L]"

    def stem(self, cfg: EncoderConfig) -> nn.Module:
        s = self.stem_config(cfg)
        return SequencePatchStem(
            s.in_chans,
            cfg.width,
            s.patch_size,
            self.preprocess_config(cfg.preprocess).window,
            bias=s.bias,
            norm=s.norm,
            norm_eps=s.norm_eps,
        )

    def example_input(self, cfg: EncoderConfig, batch: int) -> torch.Tensor:
        """A random batch ``[batch, 6, window]`` (benchmarks)."""
        return torch.randn(batch, self.channels(cfg), self.preprocess_config(cfg.preprocess).window)

    def preview(self, source: Any, cfg: ImuPreprocess) -> dict[str, Any]:
        """A line plot of the six channels: accelerometer and gyroscope panels."""
        from bind.preview import line_plot

        rec = self.load(source, cfg)
        return {
            "picture": line_plot(
                rec.samples, ["acc x", "acc y", "acc z", "gyro x", "gyro y", "gyro z"], groups=[(0, 1, 2), (3, 4, 5)]
            )
        }

    def write_sample(self, fmt: str, directory: Path, index: int, rng: np.random.Generator) -> Path:
        """12 s at 400 Hz with timestamps as CSV (resampled to 200 Hz on load), or ``[6, N]`` at 200 Hz as ``.npy``:
        gravity on z plus a 1.7 Hz sway and noise."""
        rate, n = (400.0, 4800) if fmt == "csv" else (200.0, 2400)
        t = np.arange(n)[:, None] / rate
        phase = rng.random((1, 6)) * 6.28
        signal = np.array([0.0, 0.0, 9.81, 0.0, 0.0, 0.0]) + np.sin(2 * np.pi * 1.7 * t + phase)
        signal = signal + 0.05 * rng.standard_normal((n, 6))
        path = directory / f"{self.name}_{index}.{fmt}"
        if fmt == "npy":
            np.save(path, signal.T.astype(np.float32))
        else:
            header = ",".join(("timestamp", *CHANNELS))
            np.savetxt(path, np.column_stack([t[:, 0], signal]), delimiter=",", fmt="%.6f", comments="", header=header)
        return path
