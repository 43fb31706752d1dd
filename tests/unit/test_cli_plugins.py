"""Commands and bench suites from installed packages: ``bindspace`` loads the entry-point groups ``bind.commands``
and ``bind.bench`` (how the world application, ``examples/world``, adds ``world``, ``demo`` and ``video-reduction``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

HELLO = """
    def _hello(args):
        print(f"hello {args.name}")
        return 0

    def _fail(args):
        raise ValueError("hello: the greeting failed; give another --name")

    def add_commands(sub):
        p = sub.add_parser("hello", help="greet")
        p.add_argument("--name", default="world")
        p.set_defaults(func=_hello)
        sub.add_parser("hello-fail", help="fail").set_defaults(func=_fail)

    def add_suite(sub):
        p = sub.add_parser("hello-bench", help="a bench suite from a plugin")
        p.set_defaults(func=lambda args: print('{"hello": 1}') or 0)
"""


def _site(root: Path) -> Path:
    site = root / "site"
    (site / "hello_cmd").mkdir(parents=True)
    (site / "hello_cmd" / "__init__.py").write_text(textwrap.dedent(HELLO))
    info = site / "hello_cmd-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hello-cmd\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bind.commands]\nhello = hello_cmd\n\n[bind.bench]\nhello = hello_cmd\n")
    return site


def _bindspace(site: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(site)])}
    return subprocess.run(
        [sys.executable, "-m", "bind", *argv], env=env, capture_output=True, text=True, timeout=300, cwd=site
    )


def test_an_installed_package_adds_commands_and_bench_suites(tmp_path):
    site = _site(tmp_path)
    out = _bindspace(site, "hello", "--name", "bind")
    assert out.returncode == 0 and out.stdout.strip() == "hello bind", out.stderr
    assert "hello" in _bindspace(site, "--help").stdout
    bench = _bindspace(site, "bench", "hello-bench")
    assert bench.returncode == 0 and bench.stdout.strip() == '{"hello": 1}', bench.stderr
    assert "encoders" in _bindspace(site, "bench", "--help").stdout  # the built-in suites stay


def test_a_plugin_command_fails_in_one_line(tmp_path):
    out = _bindspace(_site(tmp_path), "hello-fail")
    assert out.returncode == 1
    assert out.stderr.strip() == "bindspace hello-fail: error: hello: the greeting failed; give another --name"
