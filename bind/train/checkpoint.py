"""Atomic checkpoint writes.

Lightning's ``TorchCheckpointIO`` saves through an fsspec transaction, whose local implementation writes to a
temporary file from ``tempfile.mkstemp()`` (the system temp directory) and ``shutil.move``s it into place: atomic
only when that directory is on the same filesystem as the checkpoint (otherwise the move is a copy that a kill can
interrupt, leaving a truncated ``last.ckpt``), and never ``fsync``ed. :class:`AtomicCheckpointIO` writes a temporary
file *beside* the target, fsyncs it, ``os.replace``s it over the target and fsyncs the directory: a kill at any
moment leaves either the previous checkpoint or the new one, never a partial file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback

from bind.io import atomic_file, remove_stale_temporaries


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` through :func:`bind.io.atomic_file`."""
    with atomic_file(path) as f:
        torch.save(obj, f)
    return Path(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic and durable (remote URLs fall back to Lightning's)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)


class AtomicCheckpoints(Callback):
    """Installs :class:`AtomicCheckpointIO` on strategies using Lightning's default ``TorchCheckpointIO`` and clears
    temporaries of killed writers from the checkpoint directories."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            for cb in trainer.checkpoint_callbacks:
                if getattr(cb, "dirpath", None):
                    remove_stale_temporaries(cb.dirpath)
