"""The bad-sample policy: an unreadable sample is skipped and logged, never allowed to stop a run.

Every skip appends one JSON line ``{"id", "path", "modality", "reason", "split"}`` to a log file in the run
directory (``bad_samples.jsonl``). Lines are written with a single ``O_APPEND`` ``write``, so data-loader workers and
ranks can share the file; each process logs an ``(id, modality)`` once. :func:`summarize` counts the distinct ones.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("bind.data")
POLICIES = ("skip", "raise")
BAD_SAMPLES_FILE = "bad_samples.jsonl"


class BadSampleLog:
    """Append-only skip log (``path=None`` keeps entries in memory only). ``policy="raise"`` re-raises instead."""

    def __init__(self, path: str | Path | None = None, policy: str = "skip") -> None:
        if policy not in POLICIES:
            raise ValueError(f"bad-sample policy {policy!r}; expected one of {POLICIES}")
        self.path = Path(path) if path is not None else None
        self.policy = policy
        self.entries: list[dict[str, Any]] = []
        self._seen: set[tuple[str, str]] = set()

    def __getstate__(self) -> dict[str, Any]:  # workers start with an empty memory of what was logged
        return {"path": self.path, "policy": self.policy, "entries": [], "_seen": set()}

    def record(self, sample_id: str, path: Any, modality: str, reason: str, split: str | None = None) -> None:
        """Log one unreadable (sample, modality)."""
        key = (str(sample_id), modality)
        if key in self._seen:
            return
        self._seen.add(key)
        entry = {"id": str(sample_id), "path": str(path), "modality": modality, "reason": reason, "split": split}
        self.entries.append(entry)
        log.warning("skipping %s of sample %s (%s): %s", modality, sample_id, path, reason)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (json.dumps(entry) + "\n").encode())
            finally:
                os.close(fd)


@dataclass
class BadSampleSummary:
    count: int  # distinct (id, modality)
    entries: list[dict[str, Any]]
    path: Path | None

    def __str__(self) -> str:
        where = f" (see {self.path})" if self.path else ""
        return f"{self.count} bad sample{'s' if self.count != 1 else ''} skipped{where}"


def summarize(path: str | Path) -> BadSampleSummary:
    """Distinct entries of a skip log (an absent file means none)."""
    path = Path(path)
    if not path.is_file():
        return BadSampleSummary(0, [], path)
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            e = json.loads(line)
            unique.setdefault((e["id"], e["modality"]), e)
    return BadSampleSummary(len(unique), list(unique.values()), path)
