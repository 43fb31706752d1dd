"""Callbacks every ``bindspace train`` run gets: one progress line at a time, and metrics that reach the loggers
however short the run is."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.callbacks.progress import ProgressBar


class LogEveryEpoch(Callback):
    """Clamp ``log_every_n_steps`` to the batches of an epoch: with Lightning's rule (log when the step count is a
    multiple of it), an epoch shorter than the interval never logs its training metrics and a short run writes no
    ``metrics.csv``."""

    def on_train_start(self, trainer, pl_module) -> None:
        batches = trainer.num_training_batches
        if isinstance(batches, (int, float)) and math.isfinite(batches) and batches >= 1:
            trainer.log_every_n_steps = max(1, min(trainer.log_every_n_steps, int(batches)))


def _fmt(value: Any) -> str:
    v = float(value)
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


class LineProgress(ProgressBar):
    """Training progress as plain lines (for output that is not a terminal): one every ``every`` batches (default
    the trainer's ``log_every_n_steps``) and one at each epoch end — epoch, step, the progress-bar metrics (loss,
    validation R@1), elapsed time and ETA."""

    def __init__(self, every: int | None = None, stream: Any = None) -> None:
        super().__init__()
        self.every, self.stream = every, stream
        self._enabled = True
        self._t0 = 0.0
        self._step0 = 0

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0, self._step0 = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        every = self.every or trainer.log_every_n_steps
        done = batch_idx + 1
        if done != trainer.num_training_batches and every and done % every == 0:
            self._line(trainer, pl_module, f"batch {done}/{_count(trainer.num_training_batches)}")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._line(trainer, pl_module, "done")

    def _line(self, trainer, pl_module, where: str) -> None:
        if not self._enabled:
            return
        elapsed = time.perf_counter() - self._t0
        total, step = trainer.estimated_stepping_batches, trainer.global_step
        parts = [
            f"epoch {trainer.current_epoch + 1}/{_count(trainer.max_epochs)} {where}",
            f"step {step}/{_count(total)}",
        ]
        parts += [
            f"{k} {_fmt(v)}"
            for k, v in self.get_metrics(trainer, pl_module).items()
            if k != "v_num" and isinstance(v, (int, float))
        ]
        eta = ""
        if math.isfinite(total) and step > self._step0:
            eta = f", ETA {_duration(elapsed / (step - self._step0) * max(0, total - step))}"
        print("  ".join(parts) + f"  ({_duration(elapsed)}{eta})", file=self.stream or sys.stdout, flush=True)


def _count(n: Any) -> str:
    return "?" if n is None or n == -1 or (isinstance(n, float) and not math.isfinite(n)) else str(int(n))
