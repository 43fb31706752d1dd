"""``bindspace bench SUITE ... --json OUT``: benchmarks with JSON output.

Each suite module exposes ``add_suite(subparsers)``; shared measurement helpers live in :mod:`bind.bench.common`.
Ratios should be read from one run (the machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import importlib

SUITE_MODULES = [
    "bind.bench.encoders",
    "bind.bench.data",
    "bind.bench.memory",
    "bind.bench.retrieval",
    "bind.bench.train",
    "bind.bench.imagebind_parity",
    "bind.bench.video_reduction",
    "bind.bench.compare",
]


def add_commands(sub: argparse._SubParsersAction) -> None:
    from bind.cli import add_command_group

    suites = add_command_group(sub, "bench", "benchmarks (JSON out)", "suite", "SUITE")
    for name in SUITE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        module.add_suite(suites)
