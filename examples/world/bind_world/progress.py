"""One progress line per training epoch for the world's runs (:class:`EpochLines`), kept apart from
:mod:`bind_world.experiment` so that the ``bindspace`` command line imports Lightning only when it trains."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class EpochLines(L.Callback):
    """One line per training epoch: ``[stage] epoch e/E  step s/S  loss (epoch mean)  val loss (after the epochs
    that validated)  elapsed, ETA``."""

    def __init__(self, stage: str, echo: Callable[[str], Any] = print) -> None:
        self.stage, self.echo = stage, echo

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.t0, self.first_epoch, self.validated = time.perf_counter(), trainer.current_epoch, None

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validated = trainer.current_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.loss, self.batches = 0.0, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self.loss, self.batches = self.loss + float(loss.detach()), self.batches + 1

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        epoch, epochs = trainer.current_epoch + 1, trainer.max_epochs
        done = epoch - self.first_epoch
        elapsed = time.perf_counter() - self.t0
        total_steps = int(trainer.estimated_stepping_batches)
        line = f"[{self.stage}] epoch {epoch}/{epochs}  step {trainer.global_step}/{total_steps}"
        if self.batches:
            line += f"  loss {self.loss / self.batches:.3f}"
        val = trainer.callback_metrics.get("val/loss")
        if val is not None and self.validated == trainer.current_epoch:  # validated after this epoch
            line += f"  val loss {float(val):.3f}"
        eta = elapsed / max(1, done) * max(0, epochs - epoch)
        self.echo(f"{line}  {_duration(elapsed)}, ETA {_duration(eta)}")
