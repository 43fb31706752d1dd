"""The library never imports an application (open_clip's ``src/open_clip`` vs ``src/open_clip_train`` split).

Applications: the training runner (``bind/train``), every CLI module (``bind/cli.py``, ``bind/*/cli.py``,
``bind/commands.py``, ``bind/__main__.py``), the benches (``bind/bench``), the web page (``bind/serve``) and, outside
``bind/``, the world package with the demo, its QA and the video-reduction bench (``examples/world/bind_world``).
Everything else under ``bind/`` and the plugins in ``modalities/`` is the library; none of it may import an
application, at module level or inside a function.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPLICATION_PACKAGES = ("bind.train", "bind.bench", "bind.serve", "bind_world")
APPLICATION_MODULES = ("bind.cli", "bind.commands", "bind.__main__", "bind.demo")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_application(name: str) -> bool:
    return (
        name in APPLICATION_MODULES
        or name.endswith(".cli")
        or any(name == p or name.startswith(p + ".") for p in APPLICATION_PACKAGES)
    )


def library_modules() -> dict[str, Path]:
    files = [*sorted((ROOT / "bind").rglob("*.py")), *sorted((ROOT / "modalities").glob("*.py"))]
    modules = {_module_name(f): f for f in files}
    return {name: f for name, f in modules.items() if not is_application(name)}


def imported_names(path: Path, module: str) -> set[str]:
    """Every module an ``import`` statement in ``path`` names (relative imports resolved; ``from X import y`` also
    counts ``X.y``, which may be a submodule)."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def test_the_boundary_classifies_the_known_applications():
    assert is_application("bind_world.demo") and is_application("bind.retrieval.cli") and is_application("bind.cli")
    assert is_application("bind.train.run") and is_application("bind_world.video_reduction")
    assert not is_application("bind.qa") and not is_application("bind.model") and not is_application("bind.trainer")
    modules = library_modules()
    assert {"bind.qa", "bind.model", "bind.optim", "bind.retrieval.index"} <= set(modules)
    assert not {"bind_world.qa", "bind_world.experiment", "bind.train.module"} & set(modules)
    assert imported_names(ROOT / "examples/world/bind_world/demo.py", "bind_world.demo") >= {"bind_world.experiment"}


def test_no_library_module_imports_an_application():
    offenders = {
        name: sorted(n for n in imported_names(path, name) if is_application(n))
        for name, path in library_modules().items()
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"library modules importing applications: {offenders}"


def test_importing_every_library_module_loads_no_application():
    """At run time too (what a module imports through another, or through ``bind/__init__``)."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {sorted(library_modules())!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert not [m for m in loaded if m.startswith("bind") and is_application(m)]
