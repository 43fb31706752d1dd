"""The ``bind`` command. Subcommands live beside the code they drive; each module exposes
``add_commands(subparsers)`` and is listed in ``COMMAND_MODULES``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMAND_MODULES = [
    "bind.commands",  # info
    "bind.bench",  # bench
    "bind.retrieval.cli",  # embed, index, search, eval
    "bind.train.cli",  # train, validate
    "bind.checkpoints.cli",  # convert
    "bind.world.cli",  # world, demo
    "bind.transfer.cli",  # transfer
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bindspace", description="One embedding space for text, image, video, audio, "
                                     "depth, thermal and IMU.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:  # a command module not present in this build
            if e.name is not None and name.startswith(e.name):
                continue
            raise
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # LightningCLI owns its own argument parsing
        from bind.train.cli import train_main

        return train_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from bind.errors import BindError

    try:
        return int(args.func(args) or 0)
    except (BindError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"bindspace {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
