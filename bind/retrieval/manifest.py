"""Reading JSONL manifests for embedding, indexing and evaluation.

One JSON object per line, paths relative to the manifest's directory::

    {"id": "s0001", "split": "test", "text": "caption" | ["caption 1", ...], "image": "media/s0001.png",
     "audio": "media/s0001.wav", "captions": {"audio": "modality-specific caption"}, "label": "dog"}

Any modality key may be missing on a line. Text values are the captions themselves (not paths). This reader is
deliberately small; ``bind.data`` holds the training-side manifest machinery.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bind.errors import BindError

#: keys of a manifest line that are not modality sources
RESERVED_KEYS = frozenset({"id", "split", "captions", "factors", "label", "meta"})


@dataclass
class ManifestRecord:
    """One manifest line: ``id``, ``split``, raw ``fields`` and the directory its relative paths resolve against."""

    id: str
    split: str | None
    fields: dict[str, Any]
    root: Path
    label: str | None = None
    captions: dict[str, Any] = field(default_factory=dict)

    def modalities(self) -> list[str]:
        return [k for k, v in self.fields.items() if k not in RESERVED_KEYS and v not in (None, "", [])]

    def has(self, modality: str) -> bool:
        return self.fields.get(modality) not in (None, "", [])

    def texts(self, for_modality: str | None = None) -> list[str]:
        """The captions of this item (a list, possibly empty); ``for_modality`` prefers ``captions[for_modality]``."""
        value = self.captions.get(for_modality) if for_modality else None
        if value in (None, "", []):
            value = self.fields.get("text")
        if value in (None, "", []):
            return []
        return [value] if isinstance(value, str) else [str(v) for v in value]

    def source(self, modality: str) -> Any:
        """The source of ``modality``: the caption string for text, otherwise a path resolved against the root."""
        value = self.fields[modality]
        if modality == "text":
            return value
        path = Path(value)
        return path if path.is_absolute() else self.root / path


class ManifestError(BindError):
    """A manifest line is not valid JSON or lacks what it needs."""


def _dotted(obj: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def read_manifest(path: str | Path, split: str | None = None, label_field: str = "label") -> list[ManifestRecord]:
    """Records of a JSONL manifest (optionally only those of ``split``); ids must be unique. ``label_field`` names
    the class label, dotted for nested keys (``factors.shape``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found")
    records, seen, root = [], set(), path.resolve().parent
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}:{lineno}: not valid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise ManifestError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        rid = str(obj.get("id", f"{path.stem}-{lineno}"))
        if rid in seen:
            raise ManifestError(f"{path}:{lineno}: duplicate id {rid!r}")
        seen.add(rid)
        if split is not None and obj.get("split") != split:
            continue
        captions = obj.get("captions") or {}
        if not isinstance(captions, dict):
            raise ManifestError(f"{path}:{lineno}: 'captions' must be an object {{modality: caption}}")
        label = _dotted(obj, label_field)
        records.append(ManifestRecord(rid, obj.get("split"), obj, root, None if label is None else str(label),
                                      captions))
    return records


def manifest_items(records: list[ManifestRecord], modality: str,
                   for_modality: str | None = None) -> list[tuple[str, Any, int]]:
    """``(id, source, record_index)`` for every record holding ``modality``; each caption of a text list is an item."""
    items = []
    for i, r in enumerate(records):
        if modality == "text":
            items.extend((r.id, t, i) for t in r.texts(for_modality))
        elif r.has(modality):
            items.append((r.id, r.source(modality), i))
    return items
