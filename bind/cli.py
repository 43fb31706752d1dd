"""The ``bindspace`` command. Subcommands live beside the code they drive; each module exposes
``add_commands(subparsers)`` and is listed in ``COMMAND_MODULES`` or, from an installed application package (the
world and its demo, ``examples/world``), registered under the entry-point group ``bind.commands``.

Errors: every failure is one line on stderr (``bindspace CMD: error: ...``) and a non-zero exit; the traceback is
printed only with ``--debug`` (anywhere on the command line, or ``BIND_DEBUG=1``)."""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import importlib
import importlib.metadata
import inspect
import json
import logging
import os
import sys
import traceback
import types
import typing
from collections.abc import Callable, Collection, Iterator
from typing import Any

COMMAND_MODULES = [
    "bind.commands",  # info
    "bind.bench",  # bench
    "bind.retrieval.cli",  # embed, index, search, eval
    "bind.train.cli",  # train, validate
    "bind.checkpoints.cli",  # convert
    "bind.serve.cli",  # serve
    "bind.transfer.cli",  # transfer
]
GLOBAL_FLAGS = ("-v", "--verbose", "--debug")
ARGPARSE_METADATA = ("help", "choices", "metavar")  #: dataclass field metadata that :func:`add_options` passes on


def add_command_group(
    sub: argparse._SubParsersAction, name: str, help: str, dest: str, metavar: str
) -> argparse._SubParsersAction:
    """Add command ``name`` whose sub-commands go into the returned action (their name lands in ``args.<dest>``);
    run without one, it prints its help and exits 2."""
    p = sub.add_parser(name, help=help)
    p.set_defaults(func=lambda args: p.print_help() or 2)
    return p.add_subparsers(dest=dest, metavar=metavar)


def add_options(
    parser: argparse.ArgumentParser, target: Callable[..., Any], skip: Collection[str] = (), title: str | None = None
) -> None:
    """One ``--name`` option per parameter of ``target`` (a function, or a dataclass and its fields), so a command's
    options are its Python signature. Type and default come from the annotation and the default: ``Literal`` gives
    the choices, ``list`` / ``tuple`` several values (``tuple[X, X]`` exactly two), ``bool`` a switch, ``dict`` a
    JSON object, no default a required option. Help comes from the field's metadata or the docstring's ``Args:`` /
    ``Attributes:`` section. Parameters in ``skip`` are left to the caller; :func:`option_values` reads them back."""
    import docstring_parser

    hints = typing.get_type_hints(target)
    docs = {d.arg_name: " ".join(d.description.split()) for d in docstring_parser.parse(target.__doc__ or "").params}
    fields = {f.name: f for f in dataclasses.fields(target)} if dataclasses.is_dataclass(target) else {}
    group = parser.add_argument_group(title) if title else parser
    for name, param in inspect.signature(target).parameters.items():
        if name in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = param.default
        if name in fields and fields[name].default_factory is not dataclasses.MISSING:
            default = fields[name].default_factory()
        option = _option(hints.get(name, str), default)
        meta = fields[name].metadata if name in fields else {}
        option.update({"help": docs.get(name), **{k: v for k, v in meta.items() if k in ARGPARSE_METADATA}})
        group.add_argument("--" + name.replace("_", "-"), dest=name, **option)


def _option(hint: Any, default: Any) -> dict[str, Any]:
    """``add_argument`` keywords for a parameter annotated ``hint`` with ``default``."""
    if default is inspect.Parameter.empty:
        out: dict[str, Any] = {"required": True, "default": argparse.SUPPRESS}
    else:
        out = {"default": default}
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None, str | PathLike: the first
        hint, args = args[0], list(typing.get_args(args[0]))
    origin = typing.get_origin(hint)
    if hint is bool:
        return {**out, "action": argparse.BooleanOptionalAction if default is True else "store_true"}
    if origin in (list, tuple, collections.abc.Sequence):
        item = _option(args[0] if args else str, None)
        fixed = origin is tuple and len(args) > 1 and Ellipsis not in args  # tuple[float, float, float]: 3 values
        return {
            **out,
            "nargs": len(args) if fixed else "*",
            **{k: v for k, v in item.items() if k in ("type", "choices")},
        }
    if origin is typing.Literal:
        return {**out, "choices": list(args), "type": type(args[0])}
    if hint is dict or origin is dict:
        return {**out, "type": json_object, "metavar": "JSON"}
    return {**out, "type": hint}


def json_object(text: str) -> dict[str, Any]:
    """An option's JSON object (``--overrides '{"depth": 1}'``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e.msg} at character {e.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object ({{...}}), got {text!r}")
    return value


def option_values(target: Callable[..., Any], args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``target`` read from the options :func:`add_options` made for it."""
    return {name: getattr(args, name) for name in inspect.signature(target).parameters if hasattr(args, name)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bindspace",
        description="One embedding space for text and every modality plugin (`bindspace info` lists them).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error (any position)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in command_modules(COMMAND_MODULES, "bind.commands"):
        module.add_commands(sub)
    return parser


def command_modules(names: Collection[str], group: str) -> Iterator[types.ModuleType]:
    """The modules ``names`` (less one this build lacks), then those that installed packages register under the
    entry-point group ``group``; one of those that fails to import is left out with a one-line warning, so a broken
    package costs its own commands only."""
    for name in names:
        try:
            yield importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or not name.startswith(e.name):
                raise
    for entry in importlib.metadata.entry_points(group=group):
        try:
            module = entry.load()
        except Exception as e:  # noqa: BLE001 - any failure of a third party's import
            print(
                f"bindspace: warning: {group} plugin {entry.name!r} ({entry.value}) failed to load, its commands are "
                f"missing: {type(e).__name__}: {error_message(e)}; reinstall or uninstall its package",
                file=sys.stderr,
            )
            continue
        yield module


def error_message(e: BaseException) -> str:
    """One line saying what went wrong: the exception's own message, made readable for bare ``KeyError`` /
    ``OSError``."""
    from bind.errors import BindError

    if isinstance(e, KeyError) and not isinstance(e, BindError):
        msg = f"missing key {e.args[0]!r}" if e.args else "missing key"
    elif isinstance(e, OSError) and not isinstance(e, BindError) and e.strerror:
        msg = f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    else:
        msg = str(e) or type(e).__name__
    lines = [line.strip() for line in msg.splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(e).__name__


def run_guarded(command: str, func: Callable[[], int | None], debug: bool = False) -> int:
    """Run ``func``; turn any exception into one line on stderr and exit code 1 (2 for an interrupt)."""
    from bind.errors import BindError

    try:
        return int(func() or 0)
    except KeyboardInterrupt:
        print(f"bindspace {command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except (BindError, OSError, ValueError, KeyError) as e:
        if debug:
            traceback.print_exc()
        print(f"bindspace {command}: error: {error_message(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - a bug, not bad input: still one line unless --debug
        if debug:
            traceback.print_exc()
        print(
            f"bindspace {command}: error: {type(e).__name__}: {error_message(e)} (unexpected; run with --debug "
            "for the traceback)",
            file=sys.stderr,
        )
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("BIND_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    lead = 0
    while lead < len(argv) and argv[lead] in GLOBAL_FLAGS:
        lead += 1
    if argv[lead : lead + 1] == ["train"]:  # LightningCLI owns its own argument parsing

        def train() -> int:
            from bind.train.cli import train_main

            verbose = any(a in ("-v", "--verbose") for a in argv[:lead])
            return train_main(argv[lead + 1 :], verbose=verbose, debug=debug)

        return run_guarded("train", train, debug)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    words = [a for a in argv[lead : lead + 3] if not a.startswith("-")]
    command = " ".join(words[:2] if len(words) > 1 and words[1] in sub_commands(parser, words[0]) else words[:1])
    return run_guarded(command or args.command, lambda: args.func(args), debug)


def sub_commands(parser: argparse.ArgumentParser, command: str) -> set[str]:
    """Names of the subcommands of ``command`` (``index`` -> ``{"build", "add"}``)."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        sub = action.choices.get(command)
        if sub is not None and sub._subparsers is not None:
            return {name for a in sub._subparsers._group_actions for name in a.choices}
    return set()


if __name__ == "__main__":
    sys.exit(main())
