"""``bind.train.fit(...)``: train a modality encoder from one Python call (what ``bindspace train fit`` does from YAML).

Writes ``RUN_DIR/checkpoints/{last,epoch=..}.ckpt`` (atomic), CSV + TensorBoard logs, ``bad_samples.jsonl``,
``trainable_parameters.json`` and, with ``export=True``, ``RUN_DIR/export/model`` (a plain bind model directory).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class FitResult:
    """What :func:`fit` produced."""

    model: Any  # the trained BindModel (adapters still applied when LoRA was used)
    module: Any
    trainer: Any
    run_dir: Path
    metrics: dict[str, float]  # validation metrics after training
    metrics_before: dict[str, float] = field(default_factory=dict)  # before training, with validate_before
    export_dir: Path | None = None
    bad_samples: int = 0


def fit(
    manifest: str | Path,
    *,
    modalities: list[str],
    model: str = "bind-minilm-tiny",
    anchor: str = "text",
    run_dir: str | Path = "runs/bind",
    max_epochs: int = 10,
    max_steps: int = -1,
    batch_size: int = 32,
    num_workers: int = 0,
    val_manifest: str | None = None,
    val_split: str | None = "val",
    val_every_n_epochs: int = 1,
    accelerator: str = "auto",
    devices: int | str = 1,
    strategy: str = "auto",
    precision: str | None = None,
    seed: int = 0,
    ckpt_path: str | None = None,
    validate_before: bool = False,
    export: bool = True,
    progress_bar: bool = True,
    log_every_n_steps: int = 10,
    every_n_train_steps: int | None = None,
    caption_source: str = "modality",
    sample_cache: Any = None,
    verbose: bool = False,
    callbacks: Sequence[Any] = (),
    **module_kwargs: Any,
) -> FitResult:
    """Train ``modalities`` against a frozen ``anchor`` on a JSONL manifest (see
    :class:`~bind.train.module.BindTrainModule` for ``module_kwargs``: towers, lora, init_from, lr, loss, ...).

    ``sample_cache``: a :class:`~bind.data.dataset.SampleCache` (possibly pre-filled with
    :meth:`~bind.data.dataset.SampleCache.fill`) to train from: media decoded once, eval-mode tensors every epoch.
    ``val_split``: the manifest split to validate on (a manifest without it is an error naming its splits);
    ``None`` trains without validation. ``val_every_n_epochs``: validate during training after every that many
    epochs (Lightning's ``check_val_every_n_epoch``); the fitted model is always validated once more at the end, and
    validation never changes the training run, so a larger value only saves time.

    Quiet unless ``verbose``: progress lines (``progress_bar``) and bind's messages; Lightning's INFO lines, its
    warnings and the model summary only with ``verbose``. ``callbacks``: more Lightning callbacks for the trainer (an
    application's own progress lines)."""
    import warnings

    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from bind.data.bad_samples import summarize
    from bind.precision import lightning_precision
    from bind.train.callbacks import LineProgress, LogEveryEpoch
    from bind.train.cli import default_precision, quiet_lightning, register_strategies
    from bind.train.datamodule import BindDataModule
    from bind.train.module import BindTrainModule

    if int(val_every_n_epochs) < 1:
        raise ValueError(f"val_every_n_epochs must be >= 1, got {val_every_n_epochs}")
    register_strategies()
    quiet_lightning(verbose)
    L.seed_everything(seed, verbose=False)
    run_dir = Path(run_dir)
    export_dir = run_dir / "export" if export else None
    module = BindTrainModule(
        model=model,
        modalities=list(modalities),
        anchor=anchor,
        seed=seed,
        export_dir=str(export_dir) if export_dir else None,
        **module_kwargs,
    )
    data = BindDataModule(
        manifest=str(manifest),
        val_manifest=val_manifest,
        val_split=val_split,
        batch_size=batch_size,
        num_workers=num_workers,
        seed=seed,
        caption_source=caption_source,
        cache_samples=sample_cache is not None,
    )
    data.sample_cache = sample_cache
    ckpt = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", save_last=True, save_top_k=1, every_n_train_steps=every_n_train_steps
    )
    loggers = [CSVLogger(run_dir, name="logs", version=""), TensorBoardLogger(run_dir, name="tb", version="")]
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_epochs=max_epochs,
        max_steps=max_steps,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        precision=lightning_precision(precision) if precision else default_precision(),
        callbacks=[ckpt, LogEveryEpoch(), *([LineProgress()] if progress_bar else []), *callbacks],
        logger=loggers,
        enable_progress_bar=progress_bar,
        log_every_n_steps=log_every_n_steps,
        check_val_every_n_epoch=int(val_every_n_epochs),
        enable_model_summary=verbose,
    )
    before: dict[str, float] = {}
    with warnings.catch_warnings():
        if not verbose:
            warnings.simplefilter("ignore")
        if validate_before:
            out = trainer.validate(module, datamodule=data, verbose=False)
            before = {k: float(v) for k, v in (out[0] if out else {}).items()}
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
        after = trainer.validate(module, datamodule=data, verbose=False)
    bad = summarize(data.bad.path).count if data.bad is not None and data.bad.path else 0
    return FitResult(
        model=module.model,
        module=module,
        trainer=trainer,
        run_dir=run_dir,
        metrics={k: float(v) for k, v in (after[0] if after else {}).items()},
        metrics_before=before,
        export_dir=export_dir,
        bad_samples=bad,
    )
