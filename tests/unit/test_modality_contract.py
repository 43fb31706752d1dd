"""The modality plugin contract (issue #15): every registered modality passes one test, a toy plugin that lives only in
a temporary package registered through an entry point passes the same test and trains through ``train fit`` with no
change under ``bind/``, and every named model config builds."""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from contract import SAMPLE_WRITERS, check_contract
from packages import install

import bind
from bind import registry

REPO = Path(__file__).resolve().parents[2]

#: the toy plugin: tactile pressure maps from a taxel grid (``.npy``, newtons per taxel)
TACTILE = '''
"""Tactile pressure maps (a toy plugin): ``.npy`` taxel grids [H, W] in newtons -> [1, size, size]."""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bind.errors import MediaError
from bind.modality import Modality
from bind.nn.stems import PatchStem2d
from bind.registry import register_modality


@dataclass
class TactilePreprocess:
    size: int = 16  # taxel grids are resized to size x size
    max_newtons: float = 10.0  # pressures are divided by this


@dataclass
class TactileStemConfig:
    patch_size: int = 4


@register_modality
class TactileModality(Modality):
    name = "tactile"
    Preprocess = TactilePreprocess
    StemConfig = TactileStemConfig
    extensions = (".npy",)
    webdataset_keys = ("tactile.npy",)
    zeroshot_templates = ("the touch of a {}.", "pressing a {}.")
    sample_ndim = 3
    encoder_defaults = {"pool": "cls"}

    def load(self, source, cfg):
        a = np.load(source, allow_pickle=False) if not isinstance(source, np.ndarray) else source
        if a.ndim != 2:
            raise MediaError(source, self.name, f"expected a taxel grid [H, W], got shape {a.shape}")
        return a.astype(np.float32)

    def transform(self, raw, cfg, train=False):
        x = torch.from_numpy(raw)[None, None] / cfg.max_newtons
        return F.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False)[0]

    def stem(self, cfg):
        s, size = self.stem_config(cfg), self.preprocess_config(cfg.preprocess).size
        return PatchStem2d(1, cfg.width, s.patch_size, (size, size))
'''


def write_tactile(d: Path, i: int) -> Path:
    """A pressed shape on a 12x12 taxel grid: a disc for even ``i``, a bar for odd."""
    yy, xx = np.mgrid[:12, :12]
    grid = ((yy - 6) ** 2 + (xx - 6) ** 2 < 9) if i % 2 == 0 else (abs(yy - 6) < 2)
    path = d / f"tactile_{i}.npy"
    np.save(path, (grid * (4.0 + i % 5) + np.random.default_rng(i).random((12, 12))).astype(np.float32))
    return path


def install_tactile(root: Path) -> Path:
    """A site directory holding the ``tactile`` package and its dist-info with the ``bind.modalities`` entry point."""
    return install(root, "tactile", TACTILE, {"bind.modalities": {"tactile": "tactile"}})


@pytest.fixture
def tactile(tmp_path, monkeypatch):
    """The toy plugin found by entry-point discovery in this process (unregistered afterwards)."""
    site = install_tactile(tmp_path)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    bind.list_modalities()  # the built-ins and installed plugins are loaded before rescanning
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_MODALITIES", dict(registry._MODALITIES))
    monkeypatch.delitem(sys.modules, "tactile", raising=False)
    assert "tactile" in bind.list_modalities()
    yield site
    sys.modules.pop("tactile", None)


@pytest.mark.parametrize("modality", bind.list_modalities())
def test_every_registered_modality_passes_the_contract(modality, tmp_path):
    if modality not in SAMPLE_WRITERS:
        pytest.skip(f"{modality}: a plugin installed from outside this repository (its own package tests it)")
    check_contract(modality, SAMPLE_WRITERS[modality], tmp_path)


def test_discovery_scans_the_modalities_package():
    names = bind.list_modalities()
    on_disk = sorted(p.stem for p in (REPO / "modalities").glob("*.py") if not p.stem.startswith("_"))
    assert set(on_disk) <= set(names)
    assert names[0] == "text" and names[:7] == ["text", "image", "video", "audio", "depth", "thermal", "imu"]
    assert bind.Modality is bind.modality.Modality  # the plugin base class, not a table of names


def test_stem_settings_are_typed_and_checked():
    model = bind.create_model("bind-tiny", modalities=["video"], precision="fp32")
    cfg = model.encoder("video").cfg
    stem = bind.get_modality("video").stem_config(cfg)
    assert (stem.patch_size, stem.temporal_patch, stem.num_frames) == (16, 2, 4)  # num_frames from preprocessing
    with pytest.raises(
        ValueError, match=r"^image: unknown stem settings \['patch_sise'\]; known: \['conv', 'in_chans', "
    ):
        bind.create_model("bind-tiny", modalities=["image"], stem={"patch_sise": 8})


def test_find_files_scans_by_extension_and_stays_inside(tmp_path):
    (tmp_path / "outside.png").write_bytes(b"x")
    d = tmp_path / "inputs"
    (d / "sub").mkdir(parents=True)
    for name in ("a.PNG", "sub/b.jpg", "c.txt", "sub/d.wav"):
        (d / name).write_bytes(b"x")
    (d / "link.png").symlink_to(tmp_path / "outside.png")
    assert bind.get_modality("image").find_files(d) == [d / "a.PNG", d / "sub" / "b.jpg"]
    assert bind.get_modality("audio").find_files(d) == [d / "sub" / "d.wav"]
    with pytest.raises(bind.InputError, match=r"^image: .*c\.txt is not a directory"):
        bind.get_modality("image").find_files(d / "c.txt")


def test_token_layout_tells_qa_pooling_the_time_axis():
    """QA pooling reads forward_features' layout: a reduced video has fewer time steps, an image through a 2-frame
    tubelet (ImageBind vision) has none (sequence pooling), exactly as when it read the stems itself."""
    from bind.qa import encode_tokens, pool_tokens

    torch.manual_seed(0)
    video = bind.create_model("bind-tiny", modalities=["video"], stem={"reduce_time": 2}, precision="fp32")
    tokens, layout = video.encoder("video").forward_features(torch.randn(2, 3, 8, 32, 32))
    assert (layout.num_prefix_tokens, layout.time_steps) == (1, 2)  # 8 frames / tubelet 2 / reduce_time 2
    image = bind.create_model("bind-tiny", modalities=["image"], stem={"temporal_patch": 2}, precision="fp32")
    x = torch.randn(2, 3, 64, 64)
    tokens, layout = image.encoder("image").forward_features(x, norm=True)
    assert layout.time_steps is None and tokens.shape == (2, 1 + 16, 32)
    expected = pool_tokens(tokens, 4, num_cls=1, mode="sequence")
    torch.testing.assert_close(encode_tokens(image, "image", x, 4), expected)


def test_library_core_names_no_modality():
    spec = importlib.util.spec_from_file_location("modality_names", REPO / "tests" / "modality_names.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    found = {}
    for path in sorted((REPO / "bind").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if not rel.startswith(tool.SKIP):
            found.update({f"{rel}:{line}": word for line, word in tool.hits(path)})
    assert found == {}


@pytest.mark.parametrize("name", bind.list_models())
def test_every_named_model_builds_on_the_meta_device(name):
    """Every encoder bind builds itself (transformers towers load pretrained weights: not a meta-device build)."""
    encoders = registry.model_config_dict(name)["encoders"]
    own = [m for m, entry in encoders.items() if not (entry or {}).get("tower")]
    with torch.device("meta"):
        model = bind.create_model(name, modalities=own, precision="fp32")
    assert model.modalities == own and all(p.is_meta for p in model.parameters())


def test_toy_plugin_from_an_entry_point_passes_the_contract(tactile, tmp_path):
    assert type(bind.get_modality("tactile")).__module__ == "tactile"
    in_bind = subprocess.run(["git", "grep", "-il", "tactile", "--", "bind"], cwd=REPO, capture_output=True, text=True)
    assert in_bind.stdout == ""  # nothing under bind/ knows the plugin
    check_contract("tactile", write_tactile, tmp_path, encoder={"preprocess": {"size": 16}, "stem": {"patch_size": 4}})


def test_bench_data_skips_a_plugin_that_writes_no_samples(tactile, tmp_path):
    """``bindspace bench data`` asks each plugin for its samples; one without a writer is reported, not guessed."""
    from bind.bench.data import run_data_bench

    with pytest.raises(NotImplementedError, match="^tactile: the plugin writes no synthetic samples"):
        bind.get_modality("tactile").write_sample("npy", tmp_path, 0, np.random.default_rng(0))
    result = run_data_bench("bind-tiny", ["tactile", "text"], items=1, files=1, loader_workers=[], directory=tmp_path)
    assert [(r["modality"], r["format"]) for r in result["results"]] == [("text", "str")]
    assert [s["modality"] for s in result["skipped"]] == ["tactile"]


@pytest.mark.slow
@pytest.mark.integration
def test_toy_plugin_trains_through_train_fit(tactile, tmp_path):
    """``python -m bind train fit`` in a fresh process finds the plugin through its entry point and trains it."""
    media = tmp_path / "data" / "media"
    media.mkdir(parents=True)
    shapes = ["a disc", "a bar"]
    rows = [
        {
            "id": f"t{i}",
            "split": "train" if i < 16 else "val",
            "text": f"pressing {shapes[i % 2]}",
            "tactile": f"media/{write_tactile(media, i).name}",
        }
        for i in range(20)
    ]
    manifest = tmp_path / "data" / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "max_steps": 4,
            "default_root_dir": str(run),
            "enable_progress_bar": False,
            "log_every_n_steps": 1,
            "num_sanity_val_steps": 0,
            "enable_checkpointing": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(run), "name": "logs"},
            },
        },
        "model": {
            "model": "bind-minilm-tiny",
            "modalities": ["tactile"],
            "lr": 2e-3,
            "warmup_steps": 1,
            "encoders": {"tactile": {"width": 32, "depth": 1, "heads": 2, "stem": {"patch_size": 4}}},
            "export_dir": str(run / "export"),
        },
        "data": {"manifest": str(manifest), "batch_size": 4},
    }
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(cfg))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(tactile)]),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "bind", "train", "fit", "--config", str(tmp_path / "fit.yaml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows_logged = list(csv.DictReader((run / "logs/version_0/metrics.csv").open()))
    losses = [float(r["train/loss"]) for r in rows_logged if r.get("train/loss")]
    assert len(losses) == 4 and all(np.isfinite(losses))
    model = bind.load_model(run / "export" / "model", precision="fp32")
    assert set(model.modalities) == {"text", "tactile"}
    emb = model.embed_sources("tactile", [media / "tactile_0.npy", media / "tactile_1.npy"])
    assert emb.shape == (2, 384)
