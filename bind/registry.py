"""Registries: modality plugins (by name) and named model configs (by name, timm / open_clip style).

Modality plugins are the modules of the top-level ``modalities`` package plus any third-party plugin exposed
through the entry-point group ``bind.modalities``. Model configs are YAML files under ``configs/models/`` (and any
directory added with :func:`add_model_config_dir` or listed in ``$BIND_MODEL_CONFIGS``, ``os.pathsep``-separated).
A wheel carries ``configs/`` as the package data ``bind/configs`` (see setup.py); a source tree has it beside ``bind``.
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import importlib.resources
import os
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bind.errors import UnknownModalityError

_MODALITIES: dict[str, Any] = {}
_loaded = False


def _shipped_config_dir() -> Path:
    """The named model configs: package data in an installed wheel, else ``configs/models`` of the source tree."""
    packaged = importlib.resources.files("bind") / "configs" / "models"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "configs" / "models"


_CONFIG_DIRS: list[Path] = [_shipped_config_dir()]


def register_modality(cls: type) -> type:
    """Class decorator registering a :class:`bind.modality.Modality` subclass under ``cls.name``."""
    _MODALITIES[cls.name] = cls()
    return cls


def _load_plugins() -> None:
    """Import every module of the top-level ``modalities`` package (scanned; ``_``-prefixed helpers skipped), then
    every entry point of the group ``bind.modalities``; each registers its plugins on import."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    try:
        package = importlib.import_module("modalities")
    except ModuleNotFoundError as e:
        if e.name != "modalities":
            raise
        package = None
    for info in pkgutil.iter_modules(getattr(package, "__path__", [])):
        if not info.name.startswith("_"):
            importlib.import_module(f"modalities.{info.name}")
    for ep in importlib.metadata.entry_points(group="bind.modalities"):
        ep.load()


def get_modality(name: str):
    """The registered plugin for ``name`` (raises :class:`UnknownModalityError` naming the known ones)."""
    _load_plugins()
    try:
        return _MODALITIES[name]
    except KeyError:
        raise UnknownModalityError(f"unknown modality {name!r}; registered: {list_modalities()}") from None


def list_modalities() -> list[str]:
    """Names of every registered modality plugin, in a stable order: by the plugins' ``order`` (the anchor text
    first), then by name."""
    _load_plugins()
    return sorted(_MODALITIES, key=lambda m: (_MODALITIES[m].order, m))


def find_modality(test: Callable[[Any], bool]) -> str | None:
    """The first registered modality (:func:`list_modalities` order) whose plugin passes ``test``, or None; e.g.
    ``find_modality(lambda p: p.tower == "vision")``."""
    return next((m for m in list_modalities() if test(_MODALITIES[m])), None)


def add_model_config_dir(path: str | Path) -> None:
    _CONFIG_DIRS.insert(0, Path(path))


def _config_dirs() -> list[Path]:
    _load_plugins()  # plugins may ship named configs (add_model_config_dir on import)
    env = [Path(p) for p in os.environ.get("BIND_MODEL_CONFIGS", "").split(os.pathsep) if p]
    return env + _CONFIG_DIRS


def _model_config_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in reversed(_config_dirs()):
        if d.is_dir():
            for f in sorted(d.glob("*.yaml")):
                found[f.stem] = f
    return found


def list_models() -> list[str]:
    """Names of every model config that :func:`bind.create_model` accepts."""
    return sorted(_model_config_files())


def model_config_dict(name: str) -> dict[str, Any]:
    """The raw (unexpanded) config dict of a named model."""
    files = _model_config_files()
    if name not in files:
        raise KeyError(f"unknown model {name!r}; known models: {sorted(files)}")
    d = yaml.safe_load(files[name].read_text())
    d.setdefault("name", name)
    return copy.deepcopy(d)
