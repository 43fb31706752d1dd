"""``bindspace validate`` as a user runs it: a subprocess with the default flags (``--workers 4`` threads) on a real
world manifest, and one clear line for input it cannot validate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bind_world import WorldConfig, generate


@pytest.fixture(scope="session")
def world_manifest(tmp_path_factory) -> Path:
    return generate(
        tmp_path_factory.mktemp("validate_world"), 6, seed=0, workers=1, config=WorldConfig(size=32, frames=8)
    )


def _validate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bind", "validate", *args], capture_output=True, text=True, timeout=300
    )


def test_default_workers_validate_a_clean_world(world_manifest):
    # several threads used to import transformers at once: "cannot import name 'AutoTokenizer'"
    proc = _validate("--manifest", str(world_manifest))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().endswith("OK") and "6 samples" in proc.stderr
    assert proc.stdout == ""


def test_a_corrupt_file_is_listed_with_default_workers(world_manifest, tmp_path):
    lines = world_manifest.read_text().splitlines()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join([lines[0].replace('"media/000000.png"', f'"{bad}"'), *lines[1:]]) + "\n")
    (tmp_path / "media").symlink_to(world_manifest.parent / "media")  # the other records' relative paths
    proc = _validate("--manifest", str(manifest))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (problem,) = proc.stdout.splitlines()
    assert problem.startswith("000000\timage\t") and str(bad) in problem


@pytest.mark.parametrize("case", ["empty", "typo", "absent", "split"])
def test_nothing_to_validate_is_one_line_error(case, world_manifest, tmp_path):
    manifest, extra, expect = world_manifest, [], ""
    if case == "empty":
        manifest = tmp_path / "empty.jsonl"
        manifest.write_text("\n")
        expect = "no samples"
    elif case == "typo":
        extra, expect = ["--modalities", "imgae"], "did you mean image"
    elif case == "absent":
        manifest = tmp_path / "images.jsonl"
        manifest.write_text('{"id": "a", "image": "%s"}\n' % (world_manifest.parent / "media" / "000000.png"))
        extra, expect = ["--modalities", "image,audio"], "holds no audio"
    else:
        extra, expect = ["--split", "tset"], "its splits: test, train, val"
    proc = _validate("--manifest", str(manifest), *extra)
    assert proc.returncode != 0
    assert "OK" not in proc.stderr and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("bindspace validate: error:") and expect in line, line
