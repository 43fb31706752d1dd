"""``bindspace world generate --out DIR --n N --seed S``: write a procedural multimodal world (see :mod:`bind.world`);
``bindspace demo [--out DIR] [--quick]``: the end-to-end demo on such a world (see :mod:`bind.world.demo`)."""

from __future__ import annotations

import argparse
import time


def _splits(text: str) -> tuple[float, float, float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected TRAIN,VAL,TEST fractions, got {text!r}")
    return parts[0], parts[1], parts[2]


def _generate_cmd(args: argparse.Namespace) -> int:
    from bind.cli import dataclass_from_args
    from bind.world.generator import generate
    from bind.world.scene import WorldConfig

    config = dataclass_from_args(WorldConfig, args)
    start = time.perf_counter()
    manifest = generate(args.out, args.n, seed=args.seed, workers=args.workers, config=config, splits=args.splits)
    print(f"wrote {args.n} scenes to {manifest} in {time.perf_counter() - start:.1f}s")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from bind.cli import add_command_group

    world = add_command_group(
        sub, "world", "the procedural multimodal world (generate)", "world_command", "WORLD_COMMAND"
    )
    g = world.add_parser(
        "generate",
        help="render N scenes into image/video/audio/depth/thermal/IMU/points + manifest",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g.add_argument("--out", required=True, help="output directory (manifest.jsonl, world.json, media/)")
    g.add_argument("--n", type=int, required=True, help="number of scenes")
    g.add_argument("--seed", type=int, default=0, help="world seed (same seed, same bytes)")
    g.add_argument("--workers", type=int, default=None, help="worker processes (default: all CPUs)")
    g.add_argument("--size", type=int, default=64, help="image/video/depth/thermal side in pixels (even)")
    g.add_argument("--frames", type=int, default=16, help="video frames")
    g.add_argument("--fps", type=int, default=8, help="video frame rate; clip length = frames / fps seconds")
    g.add_argument("--sample-rate", type=int, default=16000, help="audio sample rate (Hz)")
    g.add_argument("--imu-rate", type=int, default=200, help="IMU sample rate (Hz)")
    g.add_argument("--video-codec", choices=("libx264", "mpeg4"), default="libx264")
    g.add_argument("--splits", type=_splits, default=(0.8, 0.1, 0.1), help="train,val,test fractions")
    g.set_defaults(func=_generate_cmd)

    from bind.world.demo import add_demo_arguments

    add_demo_arguments(
        sub.add_parser(
            "demo",
            help="generate a world, train six modalities against MiniLM, evaluate every pair (see bind.world.demo)",
            formatter_class=argparse.RawTextHelpFormatter,
        )
    )
