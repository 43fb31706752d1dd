"""``bindspace world generate --out DIR --n N --seed S``: write a procedural multimodal world (see :mod:`bind_world`);
``bindspace demo [--out DIR] [--quick]``: the end-to-end demo on such a world (see :mod:`bind_world.demo`)."""

from __future__ import annotations

import argparse
import time


def _generate_cmd(args: argparse.Namespace) -> int:
    from bind.cli import option_values
    from bind_world.generator import generate
    from bind_world.scene import WorldConfig

    config = WorldConfig(**option_values(WorldConfig, args))
    start = time.perf_counter()
    manifest = generate(**option_values(generate, args), config=config)
    print(f"wrote {args.n} scenes to {manifest} in {time.perf_counter() - start:.1f}s")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from bind.cli import add_command_group, add_options
    from bind_world.generator import generate
    from bind_world.scene import WorldConfig

    world = add_command_group(
        sub, "world", "the procedural multimodal world (generate)", "world_command", "WORLD_COMMAND"
    )
    g = world.add_parser(
        "generate",
        help="render N scenes into image/video/audio/depth/thermal/IMU/points + manifest",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_options(g, generate, skip=("config",))
    add_options(g, WorldConfig, title="media")
    g.set_defaults(func=_generate_cmd)

    from bind_world.demo import add_demo_arguments

    add_demo_arguments(
        sub.add_parser(
            "demo",
            help="generate a world, train six modalities against MiniLM, evaluate every pair (see bind_world.demo)",
            formatter_class=argparse.RawTextHelpFormatter,
        )
    )
