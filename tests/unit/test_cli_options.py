"""Command options generated from a Python signature (``bind.cli.add_options``): one source for names, types,
defaults, choices and help."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from bind.cli import add_options, option_values


def suite(
    out: str,
    frames: Sequence[int] = (8, 16),
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
    dtype: Literal["fp32", "bf16"] = "fp32",
    vision: bool = True,
    compile: bool = False,
    overrides: dict[str, Any] | None = None,
    device: str | None = None,
    tries: int = 3,
) -> dict[str, Any]:
    """A suite.

    Args:
        out: where the result goes
        frames: frame counts, one row each
        splits: train, val and test fractions
        dtype: precision
        vision: the still-picture part
        compile: also torch.compile
        overrides: JSON overrides
        device: torch device
        tries: timed
            rounds (median)
    """
    return dict(locals())


@dataclass
class Spec:
    """How it searches."""

    kind: str = field(default="flat", metadata={"choices": ("flat", "ivf"), "help": "exact or IVF"})
    cells: list[int] = field(default_factory=lambda: [4, 8])


def _parser(target: Any, **kw: Any) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t", exit_on_error=False)
    add_options(p, target, **kw)
    return p


def test_defaults_are_the_signature_s():
    args = _parser(suite).parse_args(["--out", "x"])
    assert suite(**option_values(suite, args)) == suite("x")


def test_every_kind_of_annotation_parses():
    p = _parser(suite)
    argv = ["--out", "o", "--frames", "2", "4", "--splits", "1", "1", "2", "--dtype", "bf16", "--no-vision"]
    argv += ["--compile", "--overrides", '{"depth": 1}', "--device", "cpu", "--tries", "1"]
    got = suite(**option_values(suite, p.parse_args(argv)))
    assert got == dict(
        out="o",
        frames=[2, 4],
        splits=[1.0, 1.0, 2.0],
        dtype="bf16",
        vision=False,
        compile=True,
        overrides={"depth": 1},
        device="cpu",
        tries=1,
    )
    assert option_values(suite, p.parse_args(["--out", "o", "--frames"]))["frames"] == []  # none: skip


@pytest.mark.parametrize(
    "argv",
    [
        ["--frames", "2"],
        ["--out", "o", "--dtype", "fp16"],
        ["--out", "o", "--splits", "1", "1"],
        ["--out", "o", "-x"],
        ["--out", "o", "--overrides", "{depth: 1"],
        ["--out", "o", "--overrides", "[1, 2]"],
    ],
)
def test_bad_options_are_refused(argv):
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        _parser(suite).parse_args(argv)


def test_help_comes_from_the_docstring_and_field_metadata():
    text = _parser(suite).format_help()
    assert "--tries TRIES  timed rounds (median)" in " ".join(text.split()).replace("TRIES timed", "TRIES  timed")
    assert "--no-vision" in text and "{fp32,bf16}" in text
    p = _parser(Spec, title="index")
    assert "exact or IVF" in p.format_help()
    assert Spec(**option_values(Spec, p.parse_args(["--cells", "1", "2"]))) == Spec(cells=[1, 2])
    assert Spec(**option_values(Spec, p.parse_args([]))) == Spec()


def test_skipped_parameters_are_left_to_the_caller():
    p = _parser(suite, skip=("overrides", "device"))
    assert "--overrides" not in p.format_help()
    assert set(option_values(suite, p.parse_args(["--out", "o"]))) == set(suite("o")) - {"overrides", "device"}
