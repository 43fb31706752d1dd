"""bind finds the point-cloud plugin package only through the ``bind.modalities`` entry point: listed when its
distribution is on the path, absent (and never imported) when it is not. Runs whether or not the package is installed
in this environment: the test puts a dist-info of its own on the path, or hides the installed entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "examples" / "pointcloud_plugin"

_DISCOVER = """
import importlib.metadata as md, json, sys
if {hide}:
    real = md.entry_points
    md.entry_points = lambda **kw: md.EntryPoints(e for e in real(**kw) if e.value.split(".")[0] != "bind_pointcloud") \
        if kw.get("group") == "bind.modalities" else real(**kw)
import bind
print(json.dumps({{"modalities": bind.list_modalities(), "imported": "bind_pointcloud" in sys.modules}}))
"""


def _discover(tmp_path: Path, hide: bool, extra_path: list[Path]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [REPO, *extra_path]))}
    out = subprocess.run(
        [sys.executable, "-c", _DISCOVER.format(hide=hide)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two fresh interpreters importing bind and torch
def test_listed_only_when_its_distribution_is_on_the_path(tmp_path):
    # A dist-info holding only the entry point + the package source on the path = an installed package, whether or
    # not this venv has it installed; hiding the entry point = uninstalled. bind never imports it by name.
    dist = tmp_path / "site" / "bind_pointcloud-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bind-pointcloud\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[bind.modalities]\npointcloud = bind_pointcloud\n")
    with_it = _discover(tmp_path, hide=False, extra_path=[tmp_path / "site", PLUGIN])
    assert "pointcloud" in with_it["modalities"] and with_it["imported"]
    without = _discover(tmp_path, hide=True, extra_path=[])
    assert "pointcloud" not in without["modalities"] and not without["imported"]
    assert {"text", "image", "depth", "imu"} <= set(without["modalities"])
