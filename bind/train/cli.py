"""``bind train {fit,validate,...} --config configs/train/NAME.yaml`` (LightningCLI) and ``bind validate --manifest``.

``bind train`` hands its arguments to LightningCLI over :class:`~bind.train.module.BindTrainModule` and
:class:`~bind.train.datamodule.BindDataModule` (``model:`` / ``data:`` / ``trainer:`` sections of the YAML). Precision
defaults to ``bf16-mixed`` when a GPU is present and ``32-true`` on CPU; ``strategy: bind_fsdp`` is FSDP wrapping each
transformer block (``use_orig_params`` so frozen towers and LoRA can share units). Resume with
``--ckpt_path last``. This module imports Lightning only when a command runs, keeping ``bind --help`` fast.
"""

from __future__ import annotations

import argparse
import sys
import warnings


def default_precision() -> str:
    import torch

    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


def register_strategies() -> None:
    """Register ``bind_fsdp``: FSDP with one unit per transformer block (bind's and divided space-time ones)."""
    from lightning.pytorch.strategies import FSDPStrategy, StrategyRegistry

    from bind.nn.transformer import Block, DividedSpaceTimeBlock

    if "bind_fsdp" not in StrategyRegistry:
        StrategyRegistry.register("bind_fsdp", FSDPStrategy, description="FSDP, one unit per bind transformer block",
                                  auto_wrap_policy={Block, DividedSpaceTimeBlock}, use_orig_params=True)


def train_main(argv: list[str] | None = None) -> int:
    """Run LightningCLI on ``argv`` (``fit --config FILE``, ``validate ...``, ``--help``)."""
    import logging

    from lightning.pytorch.cli import LightningCLI

    from bind.train.datamodule import BindDataModule
    from bind.train.module import BindTrainModule

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    register_strategies()
    with warnings.catch_warnings():  # sys.argv stays as launched (DDP re-runs it in the workers), so LightningCLI
        warnings.filterwarnings("ignore", message=".*args parameter is intended.*")  # sees both it and `args`
        LightningCLI(BindTrainModule, BindDataModule, args=list(sys.argv[1:] if argv is None else argv),
                     trainer_defaults={"precision": default_precision()}, seed_everything_default=0,
                     save_config_kwargs={"overwrite": True})
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from bind.data.validate import add_validate_command

    p = sub.add_parser("train", add_help=False, help="train encoders against frozen towers (LightningCLI): "
                       "bind train fit --config configs/train/NAME.yaml")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda a: train_main(a.args))
    add_validate_command(sub)
