"""JSONL training manifests: one JSON object per line, media paths relative to the manifest's directory.

::

    {"id": "s0001", "split": "train", "text": "caption" | ["caption 1", ...], "image": "media/s0001.png",
     "audio": "media/s0001.wav", "captions": {"audio": "modality-specific caption"}, "factors": {...}}

Any modality key may be missing on a line. A key is a modality when it names a registered plugin
(:func:`bind.list_modalities`); other keys are kept in ``extra``.
The anchor caption of modality ``m`` is ``captions[m]`` when present, else ``text`` (``caption_source="modality"``),
or always ``text`` (``caption_source="text"``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bind.errors import BindError

RESERVED_KEYS = frozenset({"id", "split", "text", "captions", "factors", "label", "meta"})
CAPTION_SOURCES = ("modality", "text")


class ManifestError(BindError):
    """A manifest line is not valid JSON or does not hold what a sample needs (names file and line)."""


def _captions(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v for v in value if v.strip()]
    raise ManifestError(f"{where}: expected a caption string or a list of strings, got {value!r}")


def modality_keys() -> set[str]:
    """Names that are read as modality sources: every registered plugin."""
    from bind.registry import list_modalities

    return set(list_modalities())


@dataclass
class ManifestRecord:
    """One line of a manifest: media paths resolved against the manifest's directory."""

    id: str
    split: str | None
    text: list[str]
    media: dict[str, Path]
    captions: dict[str, list[str]] = field(default_factory=dict)
    factors: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    where: str = ""  # "manifest.jsonl:12"
    label: str | None = None  # class label for zero-shot evaluation (``label`` or ``--label-field``)

    def modalities(self) -> list[str]:
        return list(self.media) + (["text"] if self.text else [])

    def has(self, modality: str) -> bool:
        return bool(self.text) if modality == "text" else modality in self.media

    def anchor_captions(self, modality: str, caption_source: str = "modality") -> list[str]:
        """The captions ``modality`` is paired with: ``captions[modality]`` if present (and ``caption_source`` is
        ``modality``), else ``text``."""
        if caption_source not in CAPTION_SOURCES:
            raise ValueError(f"caption_source {caption_source!r}; expected one of {CAPTION_SOURCES}")
        if caption_source == "modality" and self.captions.get(modality):
            return self.captions[modality]
        return self.text

    def texts(self, for_modality: str | None = None) -> list[str]:
        """The captions of this item; ``for_modality`` prefers ``captions[for_modality]``."""
        return self.anchor_captions(for_modality) if for_modality else self.text

    def source(self, modality: str) -> Any:
        """What ``modality``'s plugin loads: the (first) caption for text, else the resolved media path."""
        if not self.has(modality):
            raise KeyError(f"{self.where}: sample {self.id!r} has no {modality!r}")
        return self.text[0] if modality == "text" else self.media[modality]


def _dotted(obj: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def parse_record(
    obj: Any, root: Path, where: str, modalities: set[str] | None = None, label_field: str = "label"
) -> ManifestRecord:
    """Validate one decoded JSON object into a :class:`ManifestRecord` (``where`` names file and line)."""
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "id" not in obj or not isinstance(obj["id"], (str, int)):
        raise ManifestError(f'{where}: every line needs an "id" (string)')
    modalities = modality_keys() if modalities is None else modalities
    media, extra = {}, {}
    for k, v in obj.items():
        if k in RESERVED_KEYS:
            continue
        if k in modalities:
            if v in (None, ""):
                continue
            if not isinstance(v, str):
                raise ManifestError(f"{where}: {k!r} must be a path string relative to the manifest, got {v!r}")
            p = Path(v)
            media[k] = p if p.is_absolute() else root / p
        else:
            extra[k] = v
    caps = obj.get("captions") or {}
    if not isinstance(caps, dict):
        raise ManifestError(f'{where}: "captions" must map modality -> caption(s), got {caps!r}')
    split = obj.get("split")
    if split is not None and not isinstance(split, str):
        raise ManifestError(f'{where}: "split" must be a string, got {split!r}')
    factors = obj.get("factors") or {}
    label = _dotted(obj, label_field)
    return ManifestRecord(
        id=str(obj["id"]),
        split=split,
        text=_captions(obj.get("text"), f"{where}: text"),
        media=media,
        captions={m: _captions(c, f"{where}: captions.{m}") for m, c in caps.items()},
        factors=factors if isinstance(factors, dict) else {"value": factors},
        extra=extra,
        where=where,
        label=None if label is None else str(label),
    )


def read_manifest(path: str | Path, split: str | None = None, label_field: str = "label") -> list[ManifestRecord]:
    """Records of a JSONL manifest (only those of ``split`` when given). Ids must be unique; errors name the line.
    ``label_field`` names the class label, dotted for nested keys (``factors.shape``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found")
    root, keys = path.resolve().parent, modality_keys()
    records, seen = [], {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(
                    f"{where}: not valid JSON ({e.msg} at column {e.colno}); write one JSON object per line"
                ) from None
            rec = parse_record(obj, root, where, keys, label_field)
            if rec.id in seen:
                raise ManifestError(f"{where}: id {rec.id!r} already used on line {seen[rec.id]}")
            seen[rec.id] = lineno
            if split is None or rec.split == split:
                records.append(rec)
    return records


def write_manifest(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` (dicts in the manifest format) as JSONL."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    return path


def manifest_items(
    records: list[ManifestRecord], modality: str, for_modality: str | None = None
) -> list[tuple[str, Any, int]]:
    """``(id, source, record_index)`` for every record holding ``modality``; each caption of a text list is an item."""
    items = []
    for i, r in enumerate(records):
        if modality == "text":
            items.extend((r.id, t, i) for t in r.texts(for_modality))
        elif r.has(modality):
            items.append((r.id, r.media[modality], i))
    return items
