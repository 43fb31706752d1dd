"""IMU plugin: real CSV / .npy / .npz files -> load -> transform -> encode on bind-tiny; resampling to 200 Hz from
timestamps or a known rate, centre / random windows, padding, and the documented normalisation (acc in g, gyro / pi
or per-window standardisation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import bind
from bind.registry import get_modality
from modalities.imu import infer_time_unit

IMU = get_modality("imu")
G = 9.80665


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return bind.create_model("bind-tiny", modalities=["imu"]).eval()


def write_csv(path, header: list[str], rows: np.ndarray, delimiter: str = ",", fmt: str = "%.9g"):
    np.savetxt(path, rows, delimiter=delimiter, header=delimiter.join(header), comments="", fmt=fmt)
    return path


def motion(n: int, seed: int = 0) -> np.ndarray:
    """[N, 6] accelerometer (m/s^2, gravity on z) + gyroscope (rad/s)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    acc = np.array([0.0, 0.0, G]) + 0.5 * np.sin(t / 7 + np.arange(3)) + 0.05 * rng.standard_normal((n, 3))
    gyro = 0.3 * np.cos(t / 11 + np.arange(3)) + 0.02 * rng.standard_normal((n, 3))
    return np.concatenate([acc, gyro], axis=1)


def test_csv_with_ms_timestamps_is_resampled_to_200hz_and_scaled(tmp_path, model):
    cfg = model.preprocess_config("imu")
    assert (cfg.sample_rate, cfg.window) == (200.0, 200)
    n = 300  # 100 Hz for 2.99 s -> 599 samples at 200 Hz -> centre window starts at 199 (t = 0.995 s)
    t_ms = np.arange(n) * 10
    acc_x = t_ms / 1000 * G  # a ramp: 1 g per second
    rows = np.column_stack(
        [t_ms, acc_x, np.zeros(n), np.full(n, G), np.full(n, math.pi / 2), np.zeros(n), np.full(n, -math.pi)]
    )
    path = write_csv(
        tmp_path / "imu.csv", ["timestamp_ms", "acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"], rows
    )
    raw = IMU.load(path, cfg)
    assert raw.samples.shape == (6, n)
    np.testing.assert_allclose(raw.timestamps_s[-1], 2.99)
    x = IMU.transform(raw, cfg)
    assert x.shape == (6, 200) and x.dtype == torch.float32
    torch.testing.assert_close(x[0], torch.arange(199, 399, dtype=torch.float32) / 200, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x[2], torch.ones(200))  # gravity reads 1 g
    torch.testing.assert_close(x[3], torch.full((200,), 0.5))  # pi/2 rad/s / pi
    torch.testing.assert_close(x[5], torch.full((200,), -1.0))


def test_column_aliases_units_and_semicolons(tmp_path):
    data = motion(400)
    deg = data.copy()
    deg[:, 3:] = np.rad2deg(deg[:, 3:])
    g_units = deg.copy()
    g_units[:, :3] /= G
    times = np.arange(400) / 200.0
    header = ["Time (s)", "AX", "ay", "Az [g]", "gx", "Gyr_Y", "angular velocity z"]
    path = write_csv(tmp_path / "alias.csv", header, np.column_stack([times, g_units]), delimiter=";")
    cfg = IMU.preprocess_config({"accel_unit": "g", "gyro_unit": "deg/s", "window": 400})
    ref = IMU.transform(IMU.load(data, IMU.preprocess_config({"window": 400})), IMU.preprocess_config({"window": 400}))
    torch.testing.assert_close(IMU.process(path, cfg), ref, rtol=1e-5, atol=1e-5)


def test_npy_orientation_and_npz(tmp_path, model):
    cfg = model.preprocess_config("imu")
    data = motion(500).astype(np.float32)
    np.save(tmp_path / "rows.npy", data)  # [N, 6]
    np.save(tmp_path / "chans.npy", data.T)  # [6, N]
    np.savez(tmp_path / "rec.npz", imu=data, timestamps=np.arange(500) * 5_000_000)  # integer ns at 200 Hz
    outs = [
        IMU.process(p, cfg)
        for p in (
            tmp_path / "rows.npy",
            tmp_path / "chans.npy",
            tmp_path / "rec.npz",
            data,
            torch.from_numpy(data.T.copy()),
        )
    ]
    for x in outs[1:]:
        torch.testing.assert_close(x, outs[0])
    square = np.arange(36, dtype=np.float32).reshape(6, 6)  # ambiguous 6x6: channels first
    np.testing.assert_array_equal(IMU.load(square, cfg).samples, square)


def test_known_rate_resampling_is_anti_aliased(tmp_path):
    n = 800  # 400 Hz: 1 + alternating +-1 (the Nyquist tone) must not alias into the 200 Hz output
    data = np.zeros((6, n), np.float32)
    data[0] = 1 + (-1.0) ** np.arange(n)
    cfg = IMU.preprocess_config({"input_rate": 400.0, "window": 300, "accel_unit": "g"})
    x = IMU.process(data, cfg)
    assert x.shape == (6, 300)
    torch.testing.assert_close(x[0], torch.ones(300), rtol=1e-5, atol=1e-5)
    np.savez(tmp_path / "rate.npz", data=data, sample_rate=np.float64(400.0))  # the rate stored with the data
    torch.testing.assert_close(
        IMU.process(tmp_path / "rate.npz", IMU.preprocess_config({"window": 300, "accel_unit": "g"})), x
    )


def test_timestamp_unit_inference():
    assert infer_time_unit(np.arange(10) * 0.005) == "s"
    assert infer_time_unit(np.arange(10) * 5) == "ms"
    assert infer_time_unit(np.arange(10) * 5000) == "us"
    assert infer_time_unit(np.arange(10) * 5_000_000) == "ns"


def test_short_recordings_are_padded(model):
    data = motion(50).T.astype(np.float32)
    repeat = IMU.process(data, IMU.preprocess_config({"window": 120}))
    torch.testing.assert_close(repeat[:, 50:100], repeat[:, :50])
    torch.testing.assert_close(repeat[:, 100:], repeat[:, :20])
    zeros = IMU.process(data, IMU.preprocess_config({"window": 120, "pad": "zeros"}))
    torch.testing.assert_close(zeros[:, :50], repeat[:, :50])
    assert (zeros[:, 50:] == 0).all()


def test_window_standardisation():
    x = IMU.process(motion(900, seed=3), IMU.preprocess_config({"normalization": "window", "window": 600}))
    torch.testing.assert_close(x.mean(1), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(1, unbiased=False), torch.ones(6), atol=1e-4, rtol=0)


def test_eval_centre_window_deterministic_train_random(model):
    cfg = model.preprocess_config("imu")
    raw = IMU.load(motion(1000), cfg)
    a, b = IMU.transform(raw, cfg), IMU.transform(raw, cfg)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    full = IMU.transform(raw, IMU.preprocess_config({"window": 1000}))
    torch.testing.assert_close(a, full[:, 400:600])
    torch.manual_seed(0)
    starts = set()
    for _ in range(5):
        w = IMU.transform(raw, cfg, train=True)
        hits = [s for s in range(801) if torch.equal(full[:, s : s + 200], w)]
        assert len(hits) == 1
        starts.add(hits[0])
    assert len(starts) > 1


def test_encode_csv_and_npy_on_bind_tiny(tmp_path, model):
    data = motion(400, seed=5)
    times = np.arange(400) / 200.0
    csv_path = write_csv(
        tmp_path / "a.csv",
        ["t", "acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"],
        np.column_stack([times, data]),
    )
    np.save(tmp_path / "a.npy", data.astype(np.float32))
    np.save(tmp_path / "b.npy", motion(400, seed=6).astype(np.float32))
    emb = model.embed_sources("imu", [csv_path, tmp_path / "a.npy", tmp_path / "b.npy", csv_path.read_bytes()])
    assert emb.shape == (4, model.embed_dim) and torch.isfinite(emb).all()
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(emb[0], emb[1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(emb[0], emb[3])
    assert (emb[1] - emb[2]).abs().max() > 1e-4
    assert model.encoder("imu").stem(torch.zeros(1, 6, 200)).shape == (1, 25, 32)  # 200 / 8 tokens


def test_csv_bytes_with_bom_crlf_and_bracketed_time_unit():
    header = "\ufeffTime (ms);acc_x;acc_y;acc_z;gyro_x;gyro_y;gyro_z"
    body = "".join(f"{5 * i};0;0;{G};0;0;{math.pi}\r\n" for i in range(40))
    raw = IMU.load((header + "\r\n" + body).encode("utf-8"), IMU.preprocess_config())
    np.testing.assert_allclose(raw.timestamps_s[:3], [0.0, 0.005, 0.01])
    x = IMU.transform(raw, IMU.preprocess_config({"window": 40}))
    torch.testing.assert_close(x[2], torch.ones(40))
    torch.testing.assert_close(x[5], torch.ones(40))
