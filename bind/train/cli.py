"""``bindspace train {fit,validate,...} --config configs/train/NAME.yaml`` (LightningCLI) and
``bindspace validate --manifest``.

``bindspace train`` hands its arguments to LightningCLI over :class:`~bind.train.module.BindTrainModule` and
:class:`~bind.train.datamodule.BindDataModule` (``model:`` / ``data:`` / ``trainer:`` sections of the YAML). Precision
follows bind's ``auto`` policy (``bf16-mixed`` on a bf16 GPU or a CPU with native bf16, else ``32-true``);
``trainer.precision: 32-true | bf16-mixed`` in the YAML (or ``--trainer.precision``) overrides it.
``strategy: bind_fsdp`` is FSDP wrapping each transformer block (``use_orig_params`` so frozen towers and LoRA can
share units). Resume with ``--ckpt_path last``. This module imports Lightning only when a command runs, keeping
``bind --help`` fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import warnings


def default_precision() -> str:
    """Lightning precision for bind's ``auto`` policy: ``bf16-mixed`` on CUDA with bf16 and on CPUs with native bf16
    (AVX-512-BF16 / AMX), else ``32-true``; ``BIND_PRECISION`` overrides (:mod:`bind.precision`)."""
    from bind.precision import lightning_precision

    return lightning_precision("auto")


def register_strategies() -> None:
    """Register ``bind_fsdp``: FSDP with one unit per transformer block (bind's and divided space-time ones)."""
    from lightning.pytorch.strategies import FSDPStrategy, StrategyRegistry

    from bind.nn.transformer import Block, DividedSpaceTimeBlock

    if "bind_fsdp" not in StrategyRegistry:
        StrategyRegistry.register(
            "bind_fsdp",
            FSDPStrategy,
            description="FSDP, one unit per bind transformer block",
            auto_wrap_policy={Block, DividedSpaceTimeBlock},
            use_orig_params=True,
        )


OUTPUT_KEYS = "logger save_dir, ModelCheckpoint dirpath, model.export_dir, data.bad_samples_file"


def _flags(argv: list[str]) -> tuple[list[str], bool, bool]:
    """``argv`` without bind's own flags, and whether ``-v/--verbose`` and ``--debug`` were given."""
    verbose = any(a in ("-v", "--verbose") for a in argv)
    debug = "--debug" in argv
    return [a for a in argv if a not in ("-v", "--verbose", "--debug")], verbose, debug


def _arg_value(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def quiet_lightning(verbose: bool = False) -> None:
    """Lightning / torch / transformers log through the root logger (Lightning's own handler, added when it is
    imported before logging is configured, printed every line twice), at INFO only when ``verbose``."""
    import logging

    import lightning.pytorch  # noqa: F401 — it installs its handlers when first imported: then remove them

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            lg.removeHandler(h)
        lg.propagate = True
        lg.setLevel(logging.INFO if verbose else logging.ERROR)
    for name in ("torchmetrics", "transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)
    if not verbose:
        with contextlib.suppress(ImportError):  # "Loading weights: 100%" of every transformers tower
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()


def configure_output(verbose: bool) -> None:
    """bind's INFO lines once each; Lightning / torch / transformers INFO lines and every library warning only with
    ``verbose`` (a default run prints its progress and bind's own messages, nothing else)."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_lightning(verbose)
    if not verbose:
        warnings.simplefilter("ignore")
        os.environ.setdefault("PYTHONWARNINGS", "ignore")  # DDP workers re-run this command


def _resolve_outputs(cfg, root: str | None) -> None:
    """Place every relative output path of a ``fit`` config under the run directory ``trainer.default_root_dir``, so
    that one key moves logs, checkpoints, the export and the bad-sample log (:data:`OUTPUT_KEYS`)."""
    if not root:
        return

    def under(value):
        return (
            value
            if value is None or os.path.isabs(str(value)) or "://" in str(value)
            else os.path.join(root, str(value))
        )

    trainer = cfg.get("trainer")
    loggers = trainer.get("logger") if trainer is not None else None
    for spec in loggers if isinstance(loggers, list) else [loggers]:
        args = getattr(spec, "init_args", None)
        if args is not None and "save_dir" in args:
            args.save_dir = under(args.save_dir if args.save_dir is not None else ".")
    for spec in (trainer.get("callbacks") or []) if trainer is not None else []:
        args = getattr(spec, "init_args", None)
        if args is not None and str(getattr(spec, "class_path", "")).endswith("ModelCheckpoint"):
            args.dirpath = under(args.dirpath if args.get("dirpath") is not None else "checkpoints")
    model, data = cfg.get("model"), cfg.get("data")
    if model is not None and model.get("export_dir") is not None:
        model.export_dir = under(model.export_dir)
    if data is not None and data.get("bad_samples_file") is not None:
        data.bad_samples_file = under(data.bad_samples_file)


def _cli_class():
    from lightning.pytorch.cli import LightningCLI

    class BindCLI(LightningCLI):
        """LightningCLI whose output paths are relative to one run directory (``trainer.default_root_dir``), with
        bind's progress lines and metrics logged however short the run."""

        def before_instantiate_classes(self) -> None:
            cfg = self.config[self.subcommand] if self.subcommand else self.config
            _resolve_outputs(cfg, cfg.get("trainer", {}).get("default_root_dir"))

        def instantiate_trainer(self, **kwargs):
            from lightning.pytorch.callbacks import TQDMProgressBar
            from lightning.pytorch.callbacks.progress import ProgressBar

            from bind.train.callbacks import LineProgress, LogEveryEpoch

            trainer_cfg = self._get(self.config_init, "trainer", default={})
            callbacks = trainer_cfg.get("callbacks") or []
            callbacks = [*(callbacks if isinstance(callbacks, list) else [callbacks]), LogEveryEpoch()]
            if trainer_cfg.get("enable_progress_bar") is not False and not any(
                isinstance(c, ProgressBar) for c in callbacks
            ):
                callbacks.append(TQDMProgressBar(leave=True) if sys.stderr.isatty() else LineProgress())
            return super().instantiate_trainer(**{**kwargs, "callbacks": callbacks})

    return BindCLI


def train_main(argv: list[str] | None = None, verbose: bool = False, debug: bool = False) -> int:
    """Run LightningCLI on ``argv`` (``fit --config FILE``, ``validate ...``, ``--help``). ``-v/--verbose``: the
    libraries' INFO lines, warnings and the model summary; ``--debug``: tracebacks instead of one-line errors."""
    args, v, d = _flags(list(sys.argv[1:] if argv is None else argv))
    verbose, debug = verbose or v, debug or d
    configure_output(verbose)
    try:
        return _run_cli(args, verbose)
    except Exception as e:  # noqa: BLE001 — one line naming the input, unless --debug
        if debug:
            raise
        print(f"bindspace train: error: {describe_error(e, args)}", file=sys.stderr)
        return 1


def describe_error(e: BaseException, args: list[str]) -> str:
    """The one-line message of a training error (naming the argument / file and the fix)."""
    import pickle

    ckpt = _arg_value(args, "--ckpt_path")
    if isinstance(e, pickle.UnpicklingError) and ckpt:
        return (
            f"--ckpt_path {ckpt}: refused: the file holds pickled objects other than tensors and plain values, "
            "which could run code (it was not written by `bindspace train`); pass a checkpoint of a bind run"
        )
    if ckpt and isinstance(e, FileNotFoundError) and "heckpoint" in str(e):
        return f"--ckpt_path {ckpt}: no such checkpoint; pass a .ckpt file, or `last` to resume the run directory's"
    if isinstance(e, argparse.ArgumentError):
        return _option_error(str(e))
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    from bind.errors import BindError

    known = (BindError, FileNotFoundError, ValueError, KeyError, RuntimeError, OSError)
    return msg if isinstance(e, known) else f"{type(e).__name__}: {msg} (rerun with --debug for the traceback)"


def _option_error(text: str) -> str:
    """jsonargparse's multi-line type error of an option as one line: the option, the value given, what it takes."""
    key = re.search(r'Parser key "([^"]+)"', text)
    if key is None:
        return text.strip().splitlines()[0] if text.strip() else "invalid arguments"
    given = re.search(r"(?:Given|Got) value: (.*)", text)
    types = re.search(r"Subtypes: \[(.*)\]", text) or re.search(r"Expected a (<class '\w+'>)", text)
    expected = re.sub(r"<class '(\w+)'>", r"\1", types.group(1)) if types else "another type"
    value = f" {given.group(1).strip()!r}" if given else ""
    return (
        f"--{key.group(1)}{value}: not a valid value (takes {expected}); "
        "`bindspace train fit --help` lists every option with its type"
    )


def _run_cli(args: list[str], verbose: bool) -> int:
    from bind.train.datamodule import BindDataModule
    from bind.train.module import BindTrainModule

    register_strategies()
    defaults = {"precision": default_precision(), "enable_model_summary": verbose}
    with warnings.catch_warnings():  # sys.argv stays as launched (DDP re-runs it in the workers), so LightningCLI
        warnings.filterwarnings("ignore", message=".*args parameter is intended.*")  # sees both it and `args`
        _cli_class()(
            BindTrainModule,
            BindDataModule,
            args=args,
            trainer_defaults=defaults,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False},  # a bad option value raises: one line (describe_error), no usage
        )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from bind.data.validate import add_validate_command

    p = sub.add_parser(
        "train",
        add_help=False,
        help="train encoders against frozen towers (LightningCLI): "
        "bindspace train fit --config configs/train/NAME.yaml [-v: library output] "
        "[--debug: tracebacks]",
    )
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda a: train_main(a.args, verbose=a.verbose))
    add_validate_command(sub)
