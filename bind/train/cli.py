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
                       "bindspace train fit --config configs/train/NAME.yaml")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda a: train_main(a.args))
    add_validate_command(sub)
