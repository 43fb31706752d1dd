"""Install a package that exists only inside a test: its module and a dist-info with entry points, in a site directory
that a test puts on ``sys.path`` (in-process) or ``PYTHONPATH`` (a subprocess). ``from packages import install``."""

from __future__ import annotations

import textwrap
from pathlib import Path


def install(root: Path, package: str, source: str, entry_points: dict[str, dict[str, str]]) -> Path:
    """``root/site`` holding ``package/__init__.py`` (``source``, dedented) and ``package-0.1.dist-info`` whose
    ``entry_points.txt`` lists ``{group: {name: value}}``; returns the site directory."""
    site = root / "site"
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text(textwrap.dedent(source))
    info = site / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package.replace('_', '-')}\nVersion: 0.1\n")
    groups = (f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in names.items()) for g, names in entry_points.items())
    (info / "entry_points.txt").write_text("\n".join(groups))
    return site
