"""``bindspace convert imagebind|languagebind``: published checkpoints -> bind model directories (safetensors)."""

from __future__ import annotations

import argparse
import json


def _imagebind(args: argparse.Namespace) -> int:
    from bind.checkpoints.imagebind import convert_imagebind

    out = convert_imagebind(args.checkpoint, args.out, config=args.config, tokenizer=args.tokenizer,
                            modalities=args.modalities)
    print(json.dumps({"converted": "imagebind", "checkpoint": str(args.checkpoint), "out": str(out)}))
    return 0


def _languagebind(args: argparse.Namespace) -> int:
    from bind.checkpoints.languagebind import convert_languagebind

    out = convert_languagebind(args.checkpoint, args.out, tokenizer=args.tokenizer, modality=args.modality)
    print(json.dumps({"converted": "languagebind", "checkpoint": [str(c) for c in args.checkpoint],
                      "out": str(out)}))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert published ImageBind / LanguageBind checkpoints to bind model dirs")
    fmt = p.add_subparsers(dest="format", metavar="FORMAT")
    ib = fmt.add_parser("imagebind", help="ImageBind .pth (e.g. imagebind_huge.pth; CC BY-NC-SA, bring your own)")
    ib.add_argument("--checkpoint", required=True, help="the ImageBind state dict (.pth, loaded weights-only)")
    ib.add_argument("--out", required=True, help="bind model directory to write")
    ib.add_argument("--config", default="imagebind-huge", help="named model config describing the architecture")
    ib.add_argument("--tokenizer", default=None,
                    help="CLIP BPE for the text encoder: bpe_simple_vocab_16e6.txt.gz, a CLIP tokenizer directory "
                         "or a cached hub id (default: the config's openai/clip-vit-large-patch14)")
    ib.add_argument("--modalities", nargs="+", default=None, help="convert only these encoders")
    ib.set_defaults(func=_imagebind)
    lb = fmt.add_parser("languagebind", help="LanguageBind HF-style directories (LoRA merged)")
    lb.add_argument("--checkpoint", required=True, nargs="+",
                    help="one or more LanguageBind directories (config.json + pytorch_model.bin / safetensors); "
                         "several merge into one model whose text encoder comes from the last, as LanguageBind does")
    lb.add_argument("--out", required=True, help="bind model directory to write")
    lb.add_argument("--modality", default=None, choices=["video", "audio", "depth", "thermal", "image"],
                    help="the checkpoint's modality when config.json does not tell (one checkpoint only)")
    lb.add_argument("--tokenizer", default=None,
                    help="CLIP tokenizer (directory, .gz BPE or hub id) when the directory holds none")
    lb.set_defaults(func=_languagebind)
    p.set_defaults(func=lambda a: p.print_help() or 2)
