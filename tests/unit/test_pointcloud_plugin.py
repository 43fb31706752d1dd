"""The point-cloud plugin package (examples/pointcloud_plugin): found through the ``bind.modalities`` entry point, PLY /
NPY / text loading on files from independent writers, the bad inputs, preprocessing and the Point-BERT style stem.

Skipped as a whole when the package is not installed (the rest of the suite does not need it); discovery with and
without the package is tested in test_pointcloud_discovery.py.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

pc = pytest.importorskip(
    "bind_pointcloud", reason="the point-cloud plugin is not installed (pip install -e examples/pointcloud_plugin)"
)
plyfile = pytest.importorskip("plyfile")

import bind  # noqa: E402
from bind.errors import MediaError  # noqa: E402


@pytest.fixture(scope="module")
def plugin():
    return bind.get_modality("pointcloud")


def _cfg(plugin, **kw):
    return plugin.preprocess_config(kw)


def _cloud(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(n, 3)).astype(np.uint8)
    normals = rng.normal(size=(n, 3)).astype(np.float32)
    return xyz, rgb, normals / np.linalg.norm(normals, axis=1, keepdims=True)


def _plyfile_write(path: Path, xyz, rgb=None, normals=None, text=False, byte_order="<", extra=()):
    fields = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")] if rgb is not None else []
    fields += [("nx", "f4"), ("ny", "f4"), ("nz", "f4")] if normals is not None else []
    v = np.empty(len(xyz), dtype=fields)
    v["x"], v["y"], v["z"] = xyz.T
    if rgb is not None:
        v["red"], v["green"], v["blue"] = rgb.T
    if normals is not None:
        v["nx"], v["ny"], v["nz"] = normals.T
    elements = [plyfile.PlyElement.describe(v, "vertex"), *extra]
    plyfile.PlyData(elements, text=text, byte_order=byte_order).write(str(path))
    return path


# --- loading: PLY from independent writers ------------------------------------------------------------------------


@pytest.mark.parametrize("text,byte_order", [(False, "<"), (False, ">"), (True, "=")])
def test_ply_from_plyfile_writer_with_colour_and_normals(plugin, tmp_path, text, byte_order):
    xyz, rgb, normals = _cloud()
    path = _plyfile_write(tmp_path / "c.ply", xyz, rgb, normals, text=text, byte_order=byte_order)
    cloud = plugin.load(path, _cfg(plugin, colour=True, normals=True))
    np.testing.assert_allclose(cloud.xyz, xyz, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cloud.rgb, rgb / 255.0, atol=1e-6)
    np.testing.assert_allclose(cloud.normals, normals, atol=1e-6)
    assert plugin.process(path.read_bytes(), _cfg(plugin, colour=True, normals=True, num_points=64)).shape == (9, 64)


def test_ply_mesh_faces_are_ignored_and_plain_xyz_has_no_colour(plugin, tmp_path):
    xyz, _, _ = _cloud(10)
    faces = np.array([([0, 1, 2],), ([2, 3, 4],)], dtype=[("vertex_indices", "i4", (3,))])
    path = _plyfile_write(tmp_path / "mesh.ply", xyz, extra=[plyfile.PlyElement.describe(faces, "face")])
    cloud = plugin.load(path, _cfg(plugin))
    assert cloud.rgb is None and cloud.normals is None and len(cloud) == 10


def test_hand_made_ascii_and_binary_ply(plugin, tmp_path):
    ascii_ply = (
        "ply\nformat ascii 1.0\ncomment made by hand\nelement vertex 3\nproperty float x\nproperty float y\n"
        "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
        "0 0 0 255 0 0\n1 0 0 0 255 0\n0 1 0.5 0 0 255\n"
    )
    (tmp_path / "a.ply").write_text(ascii_ply)
    cloud = plugin.load(tmp_path / "a.ply", _cfg(plugin, colour=True))
    np.testing.assert_allclose(cloud.xyz, [[0, 0, 0], [1, 0, 0], [0, 1, 0.5]])
    np.testing.assert_allclose(cloud.rgb, np.eye(3))
    header = (
        b"ply\nformat binary_big_endian 1.0\nelement vertex 2\nproperty double x\nproperty double y\n"
        b"property double z\nproperty float r\nproperty float g\nproperty float b\nend_header\n"
    )
    body = struct.pack(">3d3f", 1.5, -2.0, 3.25, 0.1, 0.2, 0.3) + struct.pack(">3d3f", 0, 0, 1, 1, 1, 1)
    cloud = plugin.load(header + body, _cfg(plugin, colour=True))
    np.testing.assert_allclose(cloud.xyz, [[1.5, -2.0, 3.25], [0, 0, 1]])
    np.testing.assert_allclose(cloud.rgb, [[0.1, 0.2, 0.3], [1, 1, 1]], atol=1e-6)


# --- loading: arrays and text --------------------------------------------------------------------------------------


def test_npy_npz_and_text_layouts(plugin, tmp_path):
    xyz, rgb, normals = _cloud(50)
    np.save(tmp_path / "p.npy", np.concatenate([xyz, rgb], axis=1))
    cloud = plugin.load(tmp_path / "p.npy", _cfg(plugin))
    np.testing.assert_allclose(cloud.rgb, rgb / 255.0, atol=1e-6)
    np.savez(tmp_path / "p.npz", points=np.concatenate([xyz, rgb / 255.0, normals], axis=1), other=np.zeros(3))
    cloud = plugin.load(tmp_path / "p.npz", _cfg(plugin))
    np.testing.assert_allclose(cloud.normals, normals, atol=1e-6)
    np.save(tmp_path / "n.npy", np.concatenate([xyz, normals], axis=1))
    assert plugin.load(tmp_path / "n.npy", _cfg(plugin, layout="xyznormal")).rgb is None
    lines = ["# x y z r g b"] + [",".join(f"{v:.6f}" for v in row) for row in np.concatenate([xyz, rgb / 255.0], 1)]
    (tmp_path / "p.xyz").write_text("\n".join(lines) + "\n")
    cloud = plugin.load(tmp_path / "p.xyz", _cfg(plugin))
    np.testing.assert_allclose(cloud.xyz, xyz, atol=1e-5)
    np.testing.assert_allclose(cloud.rgb, rgb / 255.0, atol=1e-5)
    arr = plugin.load(torch.from_numpy(xyz), _cfg(plugin))
    np.testing.assert_array_equal(arr.xyz, xyz)


# --- bad inputs ----------------------------------------------------------------------------------------------------


def _ply(text_body: str, elements: str) -> bytes:
    return f"ply\nformat ascii 1.0\n{elements}end_header\n{text_body}".encode()


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda d: np.save(d / "x.npy", np.zeros((0, 3))), "empty point cloud"),
        (lambda d: (d / "x.npy").write_bytes(b""), "empty"),
        (lambda d: (d / "x.xyz").write_text("# nothing\n\n"), "empty point cloud"),
        (
            lambda d: np.save(d / "x.npy", np.array([[0, 0, 0], [np.nan, 1, 1], [np.inf, 0, 0]])),
            "2 of 3 points have NaN",
        ),
        (lambda d: np.save(d / "x.npy", np.zeros((5, 4))), "4 columns per point"),
        (lambda d: np.save(d / "x.npy", np.zeros(12)), r"\[N, 3\+C\]"),
        (lambda d: (d / "x.xyz").write_text("0 0 0\n1 1 1 1\n"), "different column counts"),
        (lambda d: (d / "x.xyz").write_text("0 0 zero\n"), "non-numeric"),
        (
            lambda d: (d / "x.ply").write_bytes(
                _ply(
                    "0 0 0\n",
                    "element vertex 1\nproperty float x\nproperty float y\n"
                    "property float z\nelement camera 1\nproperty float fx\n",
                )
            ),
            "unsupported PLY element",
        ),
        (
            lambda d: (d / "x.ply").write_bytes(_ply("", "element point 0\nproperty float x\n")),
            "unsupported PLY element",
        ),
        (
            lambda d: (d / "x.ply").write_bytes(
                _ply("0 0\n", "element vertex 1\nproperty float x\nproperty float y\n")
            ),
            "need x, y, z",
        ),
        (
            lambda d: (d / "x.ply").write_bytes(
                _ply("0 0 nan\n", "element vertex 1\nproperty float x\nproperty float y\nproperty float z\n")
            ),
            "NaN/inf coordinates",
        ),
        (lambda d: (d / "x.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\n"), "end_header"),
        (
            lambda d: (d / "x.ply").write_bytes(
                _ply("1 2\n", "element vertex 1\nproperty float x\nproperty float y\nproperty float z\n")
            ),
            "unreadable PLY",
        ),
        (lambda d: (d / "x.ply").write_bytes(_ply("", "element vertex 999999999\nproperty float x\n")), "max_points"),
    ],
)
def test_bad_inputs_are_one_line_media_errors(plugin, tmp_path, make, match):
    make(tmp_path)
    (path,) = list(tmp_path.iterdir())
    with pytest.raises(MediaError, match=match) as e:
        plugin.process(path, _cfg(plugin))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("pointcloud: cannot use") and path.name in msg


def test_max_points_and_missing_channels(plugin, tmp_path):
    np.save(tmp_path / "big.npy", np.zeros((101, 3), dtype=np.float32))
    with pytest.raises(MediaError, match="101 points exceed max_points=100"):
        plugin.load(tmp_path / "big.npy", _cfg(plugin, max_points=100))
    xyz, _, _ = _cloud(20)
    with pytest.raises(MediaError, match="no colour"):
        plugin.load(xyz, _cfg(plugin, colour=True))
    with pytest.raises(MediaError, match="no normals"):
        plugin.load(xyz, _cfg(plugin, normals=True))
    grey = plugin.process(xyz, _cfg(plugin, colour=True, missing_colour="grey", num_points=16))
    assert grey.shape == (6, 16) and torch.all(grey[3:] == 0)
    with pytest.raises(ValueError, match="unknown preprocessing fields"):
        plugin.preprocess_config({"num_point": 5})


# --- preprocessing -------------------------------------------------------------------------------------------------


def test_eval_is_deterministic_farthest_point_sampling(plugin):
    xyz, _, _ = _cloud(500)
    xyz[0] = (10, 0, 0)  # an outlier FPS must keep (random subsampling would usually drop it)
    cfg = _cfg(plugin, num_points=32)
    a, b = plugin.process(xyz, cfg), plugin.process(xyz, cfg)
    assert a.shape == (3, 32) and torch.equal(a, b)
    assert float(a.norm(dim=0).max()) == pytest.approx(1.0, abs=1e-5)  # the outlier, on the unit sphere
    shuffled = plugin.process(xyz[np.random.default_rng(1).permutation(len(xyz))], cfg)
    assert torch.allclose(a, shuffled, atol=1e-6)  # same points, same (FPS) order: the file order does not matter
    few = plugin.process(xyz[:5], cfg)
    assert few.shape == (3, 32) and torch.unique(few, dim=1).shape[1] == 5


def test_training_subsamples_and_rotates_about_the_up_axis(plugin):
    xyz, _, _ = _cloud(300)
    cfg = _cfg(plugin, num_points=64, train_jitter=0.0, train_scale=(1.0, 1.0), unit_sphere=False, centre=False)
    torch.manual_seed(0)
    a, b = plugin.process(xyz, cfg, train=True), plugin.process(xyz, cfg, train=True)
    assert a.shape == b.shape == (3, 64) and not torch.equal(a, b)
    z = torch.from_numpy(xyz[:, 2])
    for t in (a, b):  # z (up) is unchanged by the rotation and every point is one of the cloud's
        assert all(torch.isclose(z, v, atol=1e-6).any() for v in t[2])
        radial = torch.from_numpy(np.hypot(xyz[:, 0], xyz[:, 1]))
        assert all(torch.isclose(radial, v, atol=1e-5).any() for v in t[:2].norm(dim=0))


# --- model side ----------------------------------------------------------------------------------------------------


def _tiny_model(tmp_path, **stem):
    raw = {
        "name": "pc-test",
        "embed_dim": 32,
        "defaults": {"width": 32, "depth": 1, "heads": 2, "mlp_ratio": 2.0},
        "encoders": {
            "pointcloud": {
                "stem": {"num_groups": 8, "group_size": 8, "hidden": 16, **stem},
                "preprocess": {"num_points": 64, "colour": True, "missing_colour": "grey"},
            }
        },
    }
    torch.manual_seed(0)
    return bind.BindModel(bind.expand_config(raw), precision="fp32").eval()


def test_encoder_tokens_embeddings_and_round_trip(tmp_path):
    model = _tiny_model(tmp_path)
    enc = model.encoder("pointcloud")
    x = torch.stack([model.prepare("pointcloud", [c])[0] for c in (_cloud(100, s)[0] for s in range(3))])
    assert x.shape == (3, 6, 64)
    assert enc.stem(x).shape == (3, 8, 32)  # one token per group
    with torch.no_grad():
        emb = model.encode("pointcloud", x)
        perm = model.encode("pointcloud", x[:, :, torch.randperm(64)])  # a set: point order is irrelevant
    assert emb.shape == (3, 32) and torch.allclose(emb.norm(dim=-1), torch.ones(3))
    assert torch.allclose(emb, perm, atol=1e-5)
    loaded = bind.load_model(model.save_pretrained(tmp_path / "m"), precision="fp32")
    with torch.no_grad():
        assert torch.allclose(loaded.encode("pointcloud", x), emb, atol=1e-6)
    with pytest.raises(bind.InputError, match="expected 6 channels"):
        model.encode("pointcloud", x[:, :3])


def test_unknown_stem_settings_name_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"pointcloud: unknown stem settings \['groups'\]; known: .*num_groups"):
        _tiny_model(tmp_path, groups=4)


def test_contract_attributes_named_config_and_preview(plugin, tmp_path):
    assert ".ply" in plugin.extensions and plugin.webdataset_keys[0] == "pointcloud.npy"
    assert plugin.tower is None and all("{}" in t for t in plugin.zeroshot_templates)
    assert plugin.StemConfig is pc.PointCloudStemConfig
    assert "pointbert-minilm-tiny" in bind.list_models()  # registered by the plugin on import
    xyz, rgb, _ = _cloud(300)
    preview = plugin.preview(np.concatenate([xyz, rgb], 1), plugin.preprocess_config())
    assert preview["picture"].startswith(b"\x89PNG") and preview["text"] == "300 points"


def test_world_point_clouds_load_through_the_plugin(plugin, tmp_path):
    from bind_world import generate
    from bind_world.scene import DISTANCE_M

    manifest = generate(tmp_path / "w", n=4, seed=3, workers=1)
    for row in map(json.loads, manifest.read_text().splitlines()):
        cloud = plugin.load(tmp_path / "w" / row["pointcloud"], _cfg(plugin, colour=True))
        assert 10 < len(cloud) < 64 * 64 / 2 and cloud.rgb is not None  # the object's segment of the view
        lo, hi = DISTANCE_M[row["factors"]["distance"]]
        assert lo - 0.5 < np.median(cloud.xyz[:, 1]) < hi  # y = forward distance in metres
        assert "pointcloud" in row["captions"]


def write_contract_sample(d: Path, i: int) -> Path:
    """Real small files in three formats: binary PLY with colour (plyfile), ``.npy`` xyz + rgb, ``.xyz`` text."""
    xyz, rgb, _ = _cloud(120 + 10 * i, seed=i)
    if i % 3 == 0:
        return _plyfile_write(d / f"cloud_{i}.ply", xyz, rgb)
    if i % 3 == 1:
        np.save(d / f"cloud_{i}.npy", np.concatenate([xyz, rgb / 255.0], axis=1).astype(np.float32))
        return d / f"cloud_{i}.npy"
    path = d / f"cloud_{i}.xyz"
    path.write_text("".join(" ".join(f"{v:.5f}" for v in row) + "\n" for row in xyz))
    return path


def test_passes_the_modality_contract(tmp_path):
    """The plugin-contract check (tests/contract.py of the contract issue) with the plugin's own defaults."""
    contract = pytest.importorskip("contract", reason="the modality contract check is not in this tree yet")
    contract.check_contract("pointcloud", write_contract_sample, tmp_path)
