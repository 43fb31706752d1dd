"""``bindspace validate --manifest FILE``: decode every sample of a manifest before a run starts and list the bad ones.

Each media file goes through its plugin's ``load`` and ``transform`` (eval mode) with the preprocessing of
``--model`` (or the plugin's defaults); captions are tokenised. Every failure is listed as
``id  modality  path  reason``; the exit code is 1 when there is any. Modalities with no installed plugin are
reported once as warnings (they cannot be checked). An empty manifest (or split), a ``--modalities`` name that is
no registered modality or not in the manifest, and a run that could check nothing are errors.

Records are decoded by ``--workers`` threads. Plugins set themselves up lazily on first use (the text plugin loads
its tokenizer, importing ``transformers``; decoders import their libraries), which is not safe to race: several
threads importing ``transformers`` at once fail with ``cannot import name 'AutoTokenizer'``. So the first record of
each checked modality is decoded in the calling thread before the pool starts, and the threads only find warm
plugins.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bind.data.manifest import ManifestError, ManifestRecord, read_manifest
from bind.errors import UnknownModalityError
from bind.registry import get_modality, list_modalities


@dataclass
class ValidationReport:
    manifest: str
    samples: int = 0
    checked: int = 0  # (sample, modality) pairs decoded
    problems: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "samples": self.samples,
            "checked": self.checked,
            "ok": self.ok,
            "problems": self.problems,
            "warnings": self.warnings,
        }


def _check_record(rec: ManifestRecord, configs: dict[str, Any], modalities: set[str] | None) -> tuple[int, list]:
    from bind.data.dataset import _BUGS, _describe_error

    problems, checked = [], 0
    for m, path in rec.media.items():
        if (modalities is not None and m not in modalities) or m not in configs:
            continue
        checked += 1
        try:
            plugin = get_modality(m)
            plugin.process(path, configs[m], train=False)
        except _BUGS:
            raise
        except Exception as e:  # noqa: BLE001
            problems.append(
                {"id": rec.id, "modality": m, "path": str(path), "reason": _describe_error(e), "line": rec.where}
            )
    if "text" in configs and (modalities is None or "text" in modalities):
        text = get_modality("text")
        for caps in [rec.text, *rec.captions.values()]:
            for cap in caps:
                checked += 1
                try:
                    text.transform(cap, configs["text"])
                except _BUGS:
                    raise
                except Exception as e:  # noqa: BLE001
                    problems.append(
                        {
                            "id": rec.id,
                            "modality": "text",
                            "path": rec.where,
                            "reason": _describe_error(e),
                            "line": rec.where,
                        }
                    )
    return checked, problems


def _record_modalities(rec: ManifestRecord) -> list[str]:
    return [*rec.media, *(["text"] if rec.text or any(rec.captions.values()) else [])]


def _warm_up_records(records: list[ManifestRecord], checked: Iterable[str]) -> list[int]:
    """Indices of the first record holding each modality of ``checked`` (decoded before the threads start)."""
    first: dict[str, int] = {}
    todo = set(checked)
    for i, rec in enumerate(records):
        for m in _record_modalities(rec):
            if m in todo and m not in first:
                first[m] = i
        if len(first) == len(todo):
            break
    return sorted(set(first.values()))


def validate_manifest(
    path: str | Path,
    *,
    model: str | None = None,
    modalities: Iterable[str] | None = None,
    split: str | None = None,
    workers: int = 4,
) -> ValidationReport:
    """Decode every sample of a manifest; see the module docstring. Raises :class:`ManifestError` when there is
    nothing to check (no samples, ``modalities`` naming none that is registered and present)."""
    records = read_manifest(path, split=split)
    if not records:
        if split is not None and (everything := read_manifest(path)):
            splits = sorted({str(r.split) for r in everything})
            raise ManifestError(f"--split: {path} has no samples in split {split!r} (its splits: {', '.join(splits)})")
        raise ManifestError(f"{path}: no samples to validate (a manifest holds one JSON record per line)")
    report = ValidationReport(str(path), samples=len(records))
    wanted = {m.strip() for m in modalities if m.strip()} if modalities is not None else None
    present = sorted({m for r in records for m in _record_modalities(r)})
    if wanted is not None:
        registered = list_modalities()
        unknown = sorted(wanted - set(registered))
        if unknown:
            hints = [h for u in unknown for h in difflib.get_close_matches(u, registered, n=1)]
            hint = f"did you mean {', '.join(hints)}? " if hints else ""
            raise ManifestError(
                f"--modalities: {', '.join(map(repr, unknown))} is no registered modality; {hint}"
                f"(registered: {', '.join(registered)}; in {path}: {', '.join(present)})"
            )
        missing = sorted(wanted - set(present))
        if missing:
            raise ManifestError(
                f"--modalities: {path} holds no {', '.join(missing)} items (it holds: {', '.join(present)})"
            )
    model_cfgs: dict[str, Any] = {}
    if model is not None:
        from bind.factory import expand_config
        from bind.model import CONFIG_NAME
        from bind.registry import model_config_dict

        p = Path(model)
        if (p / CONFIG_NAME).is_file():
            from bind.config import BindConfig

            model_cfgs = {m: e.preprocess for m, e in BindConfig.load(p / CONFIG_NAME).encoders.items()}
        else:
            raw = model_config_dict(model)
            known = [m for m in present if m in raw.get("encoders", {})]
            model_cfgs = {m: e.preprocess for m, e in expand_config(raw, known).encoders.items()}
    configs: dict[str, Any] = {}
    for m in present:
        if wanted is not None and m not in wanted:
            continue
        try:
            plugin = get_modality(m)
        except UnknownModalityError:
            report.warnings.append(f"no plugin for modality {m!r}: its files were not checked")
            continue
        configs[m] = plugin.preprocess_config(model_cfgs.get(m))
    if not configs:
        raise ManifestError(f"{path}: nothing to validate: " + "; ".join(report.warnings))
    results: list[tuple[int, list] | None] = [None] * len(records)
    for i in _warm_up_records(records, configs):  # plugins' lazy set-up happens here, in one thread
        results[i] = _check_record(records[i], configs, wanted)
    rest = [i for i, r in enumerate(results) if r is None]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, result in zip(rest, pool.map(lambda i: _check_record(records[i], configs, wanted), rest)):
            results[i] = result
    for checked, problems in results:
        report.checked += checked
        report.problems.extend(problems)
    return report


def _validate_cmd(args: argparse.Namespace) -> int:
    report = validate_manifest(
        args.manifest,
        model=args.model,
        split=args.split,
        workers=args.workers,
        modalities=args.modalities.split(",") if args.modalities else None,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for w in report.warnings:
            print(f"warning: {w}", file=sys.stderr)
        for p in report.problems:
            print(f"{p['id']}\t{p['modality']}\t{p['path']}\t{p['reason']}")
        status = "OK" if report.ok else f"{len(report.problems)} unreadable"
        print(f"{report.manifest}: {report.samples} samples, {report.checked} items checked, {status}", file=sys.stderr)
    return 0 if report.ok else 1


def add_validate_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="decode every sample of a manifest and list the unreadable ones")
    p.add_argument("--manifest", required=True, help="JSONL manifest")
    p.add_argument("--model", default=None, help="named model or model directory whose preprocessing to use")
    p.add_argument("--modalities", default=None, help="comma-separated subset to check (default: all present)")
    p.add_argument("--split", default=None, help="only this split")
    p.add_argument("--workers", type=int, default=4, help="decoding threads")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_validate_cmd)
