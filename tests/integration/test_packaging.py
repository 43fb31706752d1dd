"""The wheel as a user installs it: built from the repository, imported without the source tree on the path, it
lists and builds the named models (configs are package data), carries the modality plugins, and builds quietly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("wheel")
    src = out / "src"  # a clean copy: no build/ or egg-info left by an earlier build can leak into the wheel
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "runs", "__pycache__", ".*_cache", "lightning_logs"
        ),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        cwd=out,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = out.glob("bind-*.whl")
    return path, proc.stdout + proc.stderr


def test_wheel_build_prints_no_warnings(wheel):
    _, output = wheel
    assert "Deprecat" not in output and "Warning" not in output and "!!" not in output, output


def test_wheel_carries_configs_and_plugins(wheel):
    names = zipfile.ZipFile(wheel[0]).namelist()
    configs = sorted(Path(n).name for n in names if n.startswith("bind/configs/models/"))
    assert configs == sorted(p.name for p in (ROOT / "configs" / "models").glob("*.yaml"))
    assert "modalities/__init__.py" in names and "modalities/image.py" in names
    assert any(n.endswith("/licenses/LICENSE") for n in names)


def test_installed_wheel_lists_and_builds_named_models(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel[0])],
        check=True,
        timeout=600,
    )
    probe = (
        "import sys, bind, modalities\n"
        "from pathlib import Path\n"
        f"root = Path({str(target)!r}).resolve()\n"
        "assert Path(bind.__file__).resolve().is_relative_to(root), bind.__file__\n"
        "assert Path(modalities.__file__).resolve().is_relative_to(root), modalities.__file__\n"
        "names = bind.list_models()\n"
        "assert 'bind-tiny' in names and 'imagebind-huge' in names, names\n"
        "model = bind.create_model('bind-tiny')\n"
        "assert 'image' in model.modalities, model.modalities\n"
        "print('ok', len(names))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(target)},
    )
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stdout + proc.stderr
