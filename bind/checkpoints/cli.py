"""``bindspace convert imagebind|languagebind``: published checkpoints -> bind model directories (safetensors)."""

from __future__ import annotations

import argparse
import json

PRECISION_HELP = (
    "how the converted model encodes by default, saved with it (load_model / --precision override it): "
    "fp32 (default) is where it matches the reference to float rounding (<= 2e-7 measured); auto runs "
    "bf16 where the CPU/GPU multiplies bf16 natively (differs by ~1e-3)"
)


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for v in values or []:
        key, sep, val = v.partition("=")
        if not sep or not key or not val:
            example = "image=16" if what == "--heads" else "audio.drop_path=0.1"
            raise ValueError(f"{what} {v!r}: expected NAME=VALUE (e.g. {example})")
        out[key] = val
    return out


def _overrides(values: list[str] | None) -> dict[str, dict]:
    import yaml

    out: dict[str, dict] = {}
    for key, val in _pairs(values, "--set").items():
        modality, _, field = key.partition(".")
        if not field:
            raise ValueError(f"--set {key}={val}: expected MODALITY.FIELD=VALUE (e.g. audio.stem.stride=10)")
        node = out.setdefault(modality, {})
        *parents, leaf = field.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(val)
    return out


def _imagebind(args: argparse.Namespace) -> int:
    from bind.checkpoints.imagebind import convert_imagebind

    heads = {}
    for m, n in _pairs(args.heads, "--heads").items():
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"--heads {m}={n}: the head count must be a positive integer")
        heads[m] = int(n)
    out = convert_imagebind(
        args.checkpoint,
        args.out,
        config=args.config,
        tokenizer=args.tokenizer,
        modalities=args.modalities,
        heads=heads,
        overrides=_overrides(args.set),
        precision=args.precision,
    )
    print(
        json.dumps(
            {"converted": "imagebind", "checkpoint": str(args.checkpoint), "out": str(out), "precision": args.precision}
        )
    )
    return 0


def _languagebind(args: argparse.Namespace) -> int:
    from bind.checkpoints.languagebind import convert_languagebind

    out = convert_languagebind(
        args.checkpoint, args.out, tokenizer=args.tokenizer, modality=args.modality, precision=args.precision
    )
    print(
        json.dumps(
            {
                "converted": "languagebind",
                "checkpoint": [str(c) for c in args.checkpoint],
                "out": str(out),
                "precision": args.precision,
            }
        )
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from bind.cli import add_command_group

    what = "convert published ImageBind / LanguageBind checkpoints to bind model dirs"
    fmt = add_command_group(sub, "convert", what, "format", "FORMAT")
    ib = fmt.add_parser(
        "imagebind",
        help="ImageBind .pth (e.g. imagebind_huge.pth; CC BY-NC-SA, bring your own)",
        description="Convert an ImageBind state dict of any size: widths, depths, MLP ratios, the "
        "output dimension and stem / vocabulary sizes are read from the tensors; head "
        "counts are not stored in a state dict and come from --config or --heads.",
    )
    ib.add_argument("--checkpoint", required=True, help="the ImageBind state dict (.pth, loaded weights-only)")
    ib.add_argument("--out", required=True, help="bind model directory to write")
    ib.add_argument(
        "--config",
        default="imagebind-huge",
        help="named model config or a .yaml/.json model config file (default imagebind-huge); sizes "
        "the checkpoint determines override it",
    )
    ib.add_argument(
        "--heads",
        nargs="+",
        default=None,
        metavar="MODALITY=N",
        help="attention heads per encoder, needed when the checkpoint's width or depth differs from "
        "--config (e.g. --heads image=12 text=8)",
    )
    ib.add_argument(
        "--set",
        nargs="+",
        default=None,
        metavar="MODALITY.FIELD=VALUE",
        help="per-encoder config overrides (e.g. audio.drop_path=0.1 audio.stem.stride=10)",
    )
    ib.add_argument(
        "--tokenizer",
        default=None,
        help="CLIP BPE for the text encoder: bpe_simple_vocab_16e6.txt.gz (it ships inside the "
        "imagebind package: <site-packages>/imagebind/bpe/, used automatically when that package "
        "is installed), a CLIP tokenizer directory or a cached hub id (default: the config's "
        "openai/clip-vit-large-patch14)",
    )
    ib.add_argument(
        "--modalities",
        nargs="+",
        default=None,
        help="convert only these encoders (default: every encoder the checkpoint holds)",
    )
    ib.add_argument("--precision", default="fp32", choices=["fp32", "auto", "bf16"], help=PRECISION_HELP)
    ib.set_defaults(func=_imagebind)
    lb = fmt.add_parser("languagebind", help="LanguageBind HF-style directories (LoRA merged)")
    lb.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        help="one or more LanguageBind directories (config.json + pytorch_model.bin / safetensors, as "
        "LanguageBind's save_pretrained writes them); several merge into one model whose text "
        "encoder comes from the last, as LanguageBind does",
    )
    lb.add_argument("--out", required=True, help="bind model directory to write")
    lb.add_argument(
        "--modality",
        default=None,
        choices=["video", "audio", "depth", "thermal", "image"],
        help="the checkpoint's modality when config.json does not tell (one checkpoint only)",
    )
    lb.add_argument(
        "--tokenizer", default=None, help="CLIP tokenizer (directory, .gz BPE or hub id) when the directory holds none"
    )
    lb.add_argument("--precision", default="fp32", choices=["fp32", "auto", "bf16"], help=PRECISION_HELP)
    lb.set_defaults(func=_languagebind)
