"""The point-cloud plugin through the CLI as a user runs it, with default flags: a world with point clouds ->
``train fit`` with the plugin's shipped config -> ``embed`` / ``index build`` / ``search`` / ``eval`` on point clouds.
No command names the modality anywhere in bind: the plugin comes in through its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("bind_pointcloud", reason="the point-cloud plugin is not installed")

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "examples/pointcloud_plugin/configs/train/pointcloud-minilm.yaml"


def _bind(*args: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "bind", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


def test_train_fit_embed_index_search_eval_on_point_clouds(tmp_path):
    assert CONFIG.read_text().splitlines()[0] == f"# bindspace train fit --config {CONFIG.relative_to(REPO)}"
    _bind("world", "generate", "--out", "runs/pc-world", "--n", "12", "--seed", "0", "--workers", "1", cwd=tmp_path)
    manifest = tmp_path / "runs/pc-world/manifest.jsonl"
    _bind("train", "fit", "--config", str(CONFIG), "--trainer.max_steps", "2", "--data.batch_size", "4", cwd=tmp_path)
    model = tmp_path / "runs/pointcloud-minilm/export/model"
    assert "pointcloud" in json.loads((model / "config.json").read_text())["encoders"]
    _bind(
        "embed",
        "--model",
        str(model),
        "--modality",
        "pointcloud",
        "--manifest",
        str(manifest),
        "--out",
        "emb.safetensors",
        cwd=tmp_path,
    )
    assert (tmp_path / "emb.safetensors").is_file()
    _bind(
        "index",
        "build",
        "--model",
        str(model),
        "--modality",
        "pointcloud",
        "--manifest",
        str(manifest),
        "--out",
        "idx",
        cwd=tmp_path,
    )
    hits = json.loads(
        _bind("search", "--index", "idx", "--text", "a point cloud of a red cube", "-k", "3", "--json", cwd=tmp_path)
    )
    assert len(json.dumps(hits)) and "_points.npy" in json.dumps(hits)
    query = tmp_path / "runs/pc-world/media/000001_points.npy"
    hits = _bind("search", "--index", "idx", "--file", f"pointcloud:{query}", "-k", "1", cwd=tmp_path)
    assert "000001" in hits  # a cloud's nearest neighbour is itself
    _bind(
        "eval",
        "--model",
        str(model),
        "--manifest",
        str(manifest),
        "--label-field",
        "factors.shape",
        "--out",
        "eval",
        cwd=tmp_path,
    )
    assert (tmp_path / "eval/zeroshot_pointcloud.json").is_file() and (tmp_path / "eval/retrieval.json").is_file()
