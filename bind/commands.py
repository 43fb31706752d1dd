"""``bindspace info``: versions, attention backends, registered modalities and models."""

from __future__ import annotations

import argparse
import json
import platform


def info() -> dict:
    import torch

    import bind
    from bind.nn.attention import available_backends, unavailable_backends

    versions = {"bind": bind.__version__, "python": platform.python_version(), "torch": torch.__version__}
    for pkg in (
        "torchvision",
        "torchaudio",
        "transformers",
        "peft",
        "lightning",
        "timm",
        "faiss",
        "decord",
        "xformers",
    ):
        try:
            mod = __import__(pkg)
            versions[pkg] = getattr(mod, "__version__", "installed")
        except Exception:  # noqa: BLE001
            versions[pkg] = None
    return {
        "versions": versions,
        "cuda": torch.cuda.is_available(),
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "attention_backends": available_backends(),
        "unavailable_backends": unavailable_backends(),
        "modalities": bind.list_modalities(),
        "models": bind.list_models(),
    }


def _info_cmd(args: argparse.Namespace) -> int:
    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print("bind", data["versions"]["bind"])
    for k, v in data["versions"].items():
        print(f"  {k:<13}{v if v is not None else 'not installed'}")
    print(f"cuda: {data['cuda']} {data['devices']}")
    print("attention backends:", ", ".join(data["attention_backends"]))
    for name, why in data["unavailable_backends"].items():
        print(f"  not {name}: {why}")
    print("modalities:", ", ".join(data["modalities"]))
    print("models:", ", ".join(data["models"]))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, attention backends, modalities and models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_info_cmd)
