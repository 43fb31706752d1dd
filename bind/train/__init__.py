"""The training app: train modality encoders into a frozen anchor's space with Lightning.

* :class:`~bind.train.module.BindTrainModule` — LightningModule (losses, schedule, validation retrieval, export);
* :class:`~bind.train.datamodule.BindDataModule` — manifests / webdataset shards -> paired batches;
* :func:`~bind.train.fit.fit` — the same from one Python call; ``bindspace train fit --config configs/train/NAME.yaml``
  from the command line (:mod:`bind.train.cli`).

Names are imported lazily: ``import bind.train.cli`` (done for every ``bind`` command) does not import Lightning.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "BindTrainModule": "bind.train.module",
    "BindDataModule": "bind.train.datamodule",
    "fit": "bind.train.run",
    "FitResult": "bind.train.run",
    "build_train_model": "bind.train.model_builder",
    "AtomicCheckpointIO": "bind.train.checkpoint",
    "export_checkpoint": "bind.train.module",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bind.train' has no attribute {name!r}")
