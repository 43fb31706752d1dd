"""Commands and bench suites from installed packages: ``bindspace`` loads the entry-point groups ``bind.commands``
and ``bind.bench`` (how the world application, ``examples/world``, adds ``world``, ``demo`` and ``video-reduction``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from packages import install

from bind.cli import build_parser, main, sub_commands

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
    return install(
        root, "hello_cmd", HELLO, {"bind.commands": {"hello": "hello_cmd"}, "bind.bench": {"hello": "hello_cmd"}}
    )


@pytest.fixture
def hello(tmp_path, monkeypatch):
    """The package found through its entry points by this process (``sys.path`` restored afterwards)."""
    monkeypatch.syspath_prepend(str(_site(tmp_path)))
    monkeypatch.delitem(sys.modules, "hello_cmd", raising=False)
    return main


def test_an_installed_package_adds_commands_and_bench_suites(hello, capsys):
    assert hello(["hello", "--name", "bind"]) == 0
    assert capsys.readouterr().out.strip() == "hello bind"
    assert hello(["bench", "hello-bench"]) == 0
    assert capsys.readouterr().out.strip() == '{"hello": 1}'
    parser = build_parser()
    assert "hello" in parser.format_help() and {"hello-bench", "encoders"} <= sub_commands(parser, "bench")


def test_a_plugin_command_fails_in_one_line(hello, capsys):
    assert hello(["hello-fail"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "bindspace hello-fail: error: hello: the greeting failed; give another --name"


def test_a_package_that_fails_to_import_costs_only_its_own_commands(tmp_path, monkeypatch, capsys):
    site = install(
        tmp_path, "broken_cmd", "import not_installed_dependency\n", {"bind.commands": {"broken": "broken_cmd"}}
    )
    monkeypatch.syspath_prepend(str(site))
    parser = build_parser()
    assert {"bench", "embed"} <= set(parser._subparsers._group_actions[0].choices)
    err = capsys.readouterr().err.strip()
    assert err.startswith("bindspace: warning: bind.commands plugin 'broken' (broken_cmd) failed to load")
    assert "not_installed_dependency" in err and len(err.splitlines()) == 1
