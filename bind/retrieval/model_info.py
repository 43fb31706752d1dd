"""Identity of the model that produced a set of embeddings, so an index never mixes embedding spaces.

Two models built from the same named config have different random weights and therefore different spaces; the
config name alone cannot tell them apart. :func:`model_fingerprint` hashes a fixed, strided sample of every weight
(exact values, device-independent), which changes whenever the weights do and costs milliseconds.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bind.errors import BindError

_SAMPLES_PER_TENSOR = 1024


class ModelMismatchError(BindError):
    """Embeddings from one model (or dimension) were about to be mixed with those of another."""


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hex digest of the model's weights (names, shapes, dtypes and a strided sample of values)."""
    h = hashlib.blake2b(digest_size=12)
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        flat = t.detach().reshape(-1)
        if flat.numel() > _SAMPLES_PER_TENSOR:
            flat = flat[torch.linspace(0, flat.numel() - 1, _SAMPLES_PER_TENSOR, device=flat.device).long()]
        h.update(flat.to("cpu", torch.float64).numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    """``name`` (config name), ``path`` (saved directory or named config it was loaded from), ``fingerprint`` and
    ``embed_dim``."""

    name: str
    path: str
    fingerprint: str
    embed_dim: int

    @classmethod
    def of(cls, model, source: str | Path | None = None) -> ModelInfo:
        """Identity of a :class:`bind.BindModel`; ``source`` is what it was loaded from (a directory or a name)."""
        if source is None:
            source = model.root if getattr(model, "root", None) is not None else model.config.name
        path = Path(source)
        ref = str(path.resolve()) if path.exists() else str(source)
        return cls(model.config.name, ref, model_fingerprint(model), int(model.embed_dim))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        return cls(str(d["name"]), str(d["path"]), str(d["fingerprint"]), int(d["embed_dim"]))

    def describe(self) -> str:
        return f"{self.name!r} from {self.path} (fingerprint {self.fingerprint}, dim {self.embed_dim})"

    def check_compatible(self, other: ModelInfo, what: str = "embeddings") -> None:
        """Raise :class:`ModelMismatchError` unless ``other`` is the same model (same weights, same dimension)."""
        if other.embed_dim != self.embed_dim:
            raise ModelMismatchError(
                f"{what} have dimension {other.embed_dim} (model {other.describe()}) but the "
                f"index holds dimension {self.embed_dim} (model {self.describe()})"
            )
        if other.fingerprint != self.fingerprint:
            raise ModelMismatchError(
                f"{what} come from model {other.describe()}, but the index was built with model "
                f"{self.describe()}: embeddings of different models live in different spaces "
                "and cannot be mixed; rebuild the index or use the model it was built with"
            )
