"""The console command as a user types it: in an interactive shell it must run bind, not a shell builtin."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
COMMAND = "bindspace"


@pytest.mark.parametrize("shell", ["bash", "sh", "dash", "zsh", "fish"])
def test_command_is_not_a_shell_builtin(shell):
    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} is not installed")
    probe = {"fish": f"builtin -q {COMMAND}; and echo builtin; or echo external"}.get(
        shell, f"command -V {COMMAND} 2>/dev/null | grep -q builtin && echo builtin || echo external"
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run([exe, "-c", probe], capture_output=True, text=True, env=env, timeout=30).stdout
    assert out.strip() == "external"


def test_interactive_bash_runs_the_project_cli():
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        ["bash", "-ic", f"type -t {COMMAND}; {COMMAND} --help"], capture_output=True, text=True, env=env, timeout=120
    )
    lines = proc.stdout.splitlines()
    assert lines[0] == "file" and proc.returncode == 0
    assert "usage: bindspace" in proc.stdout


def test_python_m_bind_matches_the_console_command():
    a = subprocess.run([sys.executable, "-m", "bind", "--help"], capture_output=True, text=True, timeout=120)
    b = subprocess.run([str(BIN / COMMAND), "--help"], capture_output=True, text=True, timeout=120)
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout
