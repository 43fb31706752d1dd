"""``bindspace bench SUITE ... --json OUT``: benchmarks with JSON output.

Each suite module exposes ``add_suite(subparsers)`` and is listed in ``SUITE_MODULES`` or, from an installed
application package, registered under the entry-point group ``bind.bench`` (the world's ``video-reduction``); shared
measurement helpers live in :mod:`bind.bench.common`.
Ratios should be read from one run (the machines are shared and noisy).
"""

from __future__ import annotations

import argparse

SUITE_MODULES = [
    "bind.bench.attention",
    "bind.bench.encoders",
    "bind.bench.data",
    "bind.bench.memory",
    "bind.bench.retrieval",
    "bind.bench.train",
    "bind.bench.imagebind_parity",
    "bind.bench.compare",
]


def add_commands(sub: argparse._SubParsersAction) -> None:
    from bind.cli import add_command_group, command_modules

    suites = add_command_group(sub, "bench", "benchmarks (JSON out)", "suite", "SUITE")
    for module in command_modules(SUITE_MODULES, "bind.bench"):
        module.add_suite(suites)
