"""Bad input for the depth, thermal and IMU plugins: every failure is a MediaError naming the source, the modality
and the reason (missing file, corrupt bytes, wrong content), and encoders reject wrong tensors with InputError."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import bind
from bind.errors import InputError, MediaError
from bind.registry import get_modality

MODALITIES = ("depth", "thermal", "imu")


def load(modality: str, source, **cfg):
    plugin = get_modality(modality)
    return plugin.load(source, plugin.preprocess_config(cfg))


def expect_media_error(modality: str, source, reason: str, **cfg) -> MediaError:
    with pytest.raises(MediaError) as info:
        load(modality, source, **cfg)
    err = info.value
    assert err.modality == modality and err.source is source
    assert str(err).startswith(f"{modality}: ")
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        assert (str(source) in str(err)) if not isinstance(source, bytes) else (f"<{len(source)} bytes>" in str(err))
    assert reason.lower() in err.reason.lower(), err.reason
    return err


@pytest.mark.parametrize(
    "modality,ext", [("depth", "png"), ("depth", "npy"), ("thermal", "tif"), ("imu", "csv"), ("imu", "npy")]
)
def test_missing_file(tmp_path, modality, ext):
    expect_media_error(modality, tmp_path / f"nowhere.{ext}", "file not found")


@pytest.mark.parametrize("modality", MODALITIES)
def test_empty_file_and_empty_bytes(tmp_path, modality):
    (tmp_path / "empty.bin").write_bytes(b"")
    expect_media_error(modality, tmp_path / "empty.bin", "empty")
    expect_media_error(modality, b"", "empty")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize(
    "modality,ext,payload,reason",
    [
        ("depth", "png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not a decodable image"),
        ("depth", "npy", b"\x93NUMPY\x01\x00garbage", "not a readable .npy/.npz"),
        ("depth", "npz", b"PK\x03\x04" + b"\x00" * 64, "not a readable .npy/.npz"),
        ("thermal", "tif", b"II*\x00" + bytes(range(256)) * 2, "not a decodable image"),
        ("thermal", "png", b"\x00\x01\x02 definitely not an image", "not a decodable image"),
        ("imu", "npy", b"\x93NUMPY\x01\x00garbage", "not a readable .npy/.npz"),
        ("imu", "npz", b"PK\x03\x04" + b"\x00" * 64, "not a readable .npz"),
        ("imu", "csv", bytes(range(128, 256)) * 8, "neither .npy, .npz nor UTF-8 CSV"),
    ],
)
def test_corrupt_bytes(tmp_path, modality, ext, payload, reason):
    path = tmp_path / f"corrupt.{ext}"
    path.write_bytes(payload)
    expect_media_error(modality, path, reason)
    expect_media_error(modality, payload, reason)


def test_imu_with_three_channels(tmp_path):
    np.save(tmp_path / "acc_only.npy", np.zeros((500, 3), np.float32))
    err = expect_media_error("imu", tmp_path / "acc_only.npy", "expected 6 channels")
    assert "(500, 3)" in err.reason
    expect_media_error("imu", np.zeros((3, 500)), "expected 6 channels")


def test_imu_with_nans(tmp_path):
    data = np.zeros((200, 6), np.float32)
    data[17, 4] = np.nan
    np.save(tmp_path / "nan.npy", data)
    err = expect_media_error("imu", tmp_path / "nan.npy", "NaN")
    assert "gyro_y at sample 17" in err.reason
    rows = ["t,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z"] + [f"{i * 0.005},0,0,9.8,0,0,0" for i in range(10)]
    rows[4] = "0.015,0,nan,9.8,0,0,0"
    (tmp_path / "nan.csv").write_text("\n".join(rows) + "\n")
    assert "acc_y" in expect_media_error("imu", tmp_path / "nan.csv", "NaN").reason


def test_imu_csv_missing_columns_are_listed(tmp_path):
    (tmp_path / "acc.csv").write_text("timestamp,acc_x,acc_y,acc_z,gyro_x\n0,0,0,9.8,0\n0.005,0,0,9.8,0\n")
    err = expect_media_error("imu", tmp_path / "acc.csv", "missing columns for gyro_y, gyro_z")
    assert "gyro_x" not in err.reason.split("(accepted")[0]
    assert "gyr_y" in err.reason and "'timestamp'" in err.reason  # accepted names and the columns found


def test_imu_other_bad_content(tmp_path):
    (tmp_path / "text.csv").write_text("t,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z\n0,0,0,1,0,0,zero\n")
    expect_media_error("imu", tmp_path / "text.csv", "non-numeric")
    (tmp_path / "header.csv").write_text("t,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z\n")
    expect_media_error("imu", tmp_path / "header.csv", "no samples")
    (tmp_path / "back.csv").write_text("t,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z\n0.01,0,0,1,0,0,0\n0.0,0,0,1,0,0,0\n")
    expect_media_error("imu", tmp_path / "back.csv", "strictly increasing")
    np.savez(tmp_path / "two.npz", a=np.zeros((6, 10)), b=np.zeros((6, 10)))
    expect_media_error("imu", tmp_path / "two.npz", "expected 'imu'")


def test_depth_wrong_content(tmp_path):
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / "eight_bit.png")
    expect_media_error("depth", tmp_path / "eight_bit.png", "mode L holds no depth")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    expect_media_error("depth", tmp_path / "rgb.png", "mode RGB holds no depth")
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(tmp_path / "zeros.png")
    expect_media_error("depth", tmp_path / "zeros.png", "no valid depth pixels")
    expect_media_error("depth", np.full((4, 4), -1.0), "negative depth")
    expect_media_error("depth", np.ones((2, 4, 4)), "expected a single-channel depth map")
    np.savez(tmp_path / "two.npz", a=np.ones((4, 4)), b=np.ones((4, 4)))
    expect_media_error("depth", tmp_path / "two.npz", "set npz_key")
    assert load("depth", tmp_path / "two.npz", npz_key="b").shape == (4, 4)


def test_thermal_wrong_content(tmp_path):
    expect_media_error("thermal", np.ones((2, 5, 5), np.float32), "expected a single-channel thermal image")
    bad = np.ones((5, 5), np.float32)
    bad[2, 2] = np.inf
    expect_media_error("thermal", bad, "NaN/inf")
    expect_media_error("thermal", 3.5, "unsupported source type")


def test_encoders_reject_wrong_tensors():
    torch.manual_seed(0)
    model = bind.create_model("bind-tiny", modalities=list(MODALITIES))
    with pytest.raises(InputError, match="depth: expected 1 channels"):
        model.encode("depth", torch.zeros(2, 3, 64, 64))
    with pytest.raises(InputError, match="thermal: expected a floating-point"):
        model.encode("thermal", torch.zeros(2, 1, 64, 64, dtype=torch.long))
    with pytest.raises(InputError, match=r"imu: expected 6 channels"):
        model.encode("imu", torch.zeros(2, 3, 200))
    with pytest.raises(InputError, match="imu: expected a tensor of shape"):
        model.encode("imu", torch.zeros(200))
