"""Save and load transfer heads: a directory with ``head.safetensors`` (the learned tensors only: context vectors,
meta-net, adapter, cache, class weights — kilobytes) and ``head.json`` (method, modality, class names, settings and
the identity of the model it was learned on). The text tower is never stored: prompt-learning heads are loaded with
their model, whose fingerprint must match."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from bind.io import atomic_path, write_text
from bind.transfer.data import TransferError
from bind.transfer.methods import METHODS, TextSide, TransferHead, make_head

FORMAT = "bind-transfer/1"
TENSORS, META = "head.safetensors", "head.json"
#: settings of each method that its constructor takes back on load
_CTOR = {
    "coop": ("n_ctx", "class_specific", "steps", "lr"),
    "cocoop": ("n_ctx", "steps", "lr", "batch_size", "epochs"),
    "clip-adapter": ("reduction", "steps", "lr"),
    "tip-adapter": ("alpha", "beta", "steps", "lr"),
    "tip-adapter-f": ("alpha", "beta", "steps", "lr"),
}
#: settings chosen during fitting, restored as attributes
_FITTED = {"linear-probe": ("C", "prior"), "clip-adapter": ("alpha",), "coop": ("ctx_init",), "cocoop": ("ctx_init",)}


def save_head(
    head: TransferHead,
    directory: str | Path,
    model=None,
    labels: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``head`` into ``directory`` (created; files replaced atomically). ``model`` records the model identity;
    ``labels`` the class keys of the manifest (when they differ from the prompt wording)."""
    from bind.retrieval.model_info import ModelInfo

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in head.state_dict().items()}
    meta = {
        "format": FORMAT,
        "method": head.method,
        "modality": head.modality,
        "classnames": head.classnames,
        "labels": labels or head.classnames,
        "config": head.config(),
        "dim": int(_dim(head)),
        "model": ModelInfo.of(model).to_dict() if model is not None else None,
        **(extra or {}),
    }
    with atomic_path(directory / TENSORS) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata={"format": FORMAT, "method": head.method})
    write_text(directory / META, json.dumps(meta, indent=1) + "\n")
    return directory


def _dim(head: TransferHead) -> int:
    for name in ("weights", "keys"):
        t = getattr(head, name, None)
        if isinstance(t, torch.Tensor) and t.dim() == 2 and t.shape[1]:
            return t.shape[1]
    if hasattr(head, "linear"):
        return head.linear.in_features
    if hasattr(head, "meta_net"):
        return head.meta_net[0].in_features
    return head.text.model.embed_dim if head.text is not None else 0


def read_meta(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    if not (directory / META).is_file() or not (directory / TENSORS).is_file():
        raise FileNotFoundError(
            f"{directory}: not a transfer head directory (needs {META} and {TENSORS}; written by "
            "`bindspace transfer fit`)"
        )
    meta = json.loads((directory / META).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("method") not in METHODS:
        raise TransferError(
            f"{directory / META}: unknown format {meta.get('format')!r} / method {meta.get('method')!r}"
        )
    return meta


def load_head(directory: str | Path, model=None) -> TransferHead:
    """Rebuild the head saved in ``directory``. ``model`` (the one it was learned on) is required by prompt-learning
    heads (CoOp, CoCoOp) and checked against the recorded fingerprint; other heads load without it."""
    from bind.retrieval.model_info import ModelInfo

    directory = Path(directory)
    meta = read_meta(directory)
    method, cfg = meta["method"], meta["config"]
    tensors = safetensors.torch.load_file(str(directory / TENSORS))
    text = None
    if model is not None:
        info = ModelInfo.of(model)
        saved = meta.get("model") or {}
        if saved.get("fingerprint") and saved["fingerprint"] != info.fingerprint:
            raise TransferError(
                f"{directory}: this {method} head was learned on model {saved.get('path')} "
                f"(fingerprint {saved['fingerprint']}), not on {info.describe()}; load it with "
                "that model"
            )
        text = TextSide(model, meta["modality"])
    elif method in ("coop", "cocoop"):
        raise TransferError(
            f"{directory}: a {method} head runs its prompts through the text tower: give the model "
            f"it was learned on (--model {(meta.get('model') or {}).get('path', 'DIR')})"
        )
    options = {k: cfg[k] for k in _CTOR.get(method, ()) if k in cfg}
    if method in ("coop", "cocoop"):
        options["ctx_init"] = None  # the saved context replaces any initialisation
    if method == "linear-probe":
        options["prior"] = None  # the fitted weights already hold it
    if "scale" in tensors and method not in ("coop", "cocoop", "linear-probe"):
        options["scale"] = float(tensors["scale"])
    head = make_head(
        method,
        text,
        meta["classnames"],
        int(meta["dim"]),
        templates=cfg.get("templates"),
        zeroshot_weights=tensors.get("weights"),
        **options,
    )
    head.modality = meta["modality"]
    for name in ("keys", "values"):  # Tip-Adapter's cache: sized by the shots it was fitted on
        if name in tensors and hasattr(head, name):
            old = getattr(head, name)
            new = tensors[name].clone()
            setattr(
                head, name, nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new
            )
    missing, unexpected = head.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise TransferError(
            f"{directory / TENSORS} does not match a {method} head: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    for k in _FITTED.get(method, ()):
        if k in cfg:
            setattr(head, k, cfg[k])
    return head.eval()
