"""ImageBind checkpoints (Girdhar et al., "ImageBind: One Embedding Space To Bind Them All", CVPR 2023) -> bind.

Source layout (facebookresearch/ImageBind, ``imagebind/models/imagebind_model.py``, ``multimodal_preprocessors.py``,
``transformer.py``, ``helpers.py``), one ``.pth`` state dict, ImageBind modality names ``vision text audio depth
thermal imu``:

* ``modality_preprocessors.<m>``: ``cls_token [1,1,D]``; ``pos_embedding_helper.pos_embed [1,1+N,D]`` (``pos_embed``
  for IMU and text); stems ``rgbt_stem.proj.1.weight`` (vision Conv3d 2x14x14 after ``PadIm2Video``),
  ``rgbt_stem.proj.weight`` + ``rgbt_stem.norm_layer`` (audio, thermal), ``depth_stem.*`` (depth),
  ``imu_stem.proj.weight`` (``Linear(48, D)``) + ``imu_stem.norm_layer``; text ``token_embedding``, ``pos_embed``,
  ``mask`` (the causal mask buffer).
* ``modality_trunks.<m>``: ``pre_transformer_layer.0`` (vision's LayerNorm before the trunk), ``blocks.N.{norm_1,
  attn.{in_proj_weight,in_proj_bias,out_proj,bias_k,bias_v}, norm_2, mlp.fc1, mlp.fc2}`` (``nn.MultiheadAttention``).
* ``modality_heads.<m>``: ``0`` LayerNorm + ``2`` Linear (``3`` for IMU, after its dropout); text ``proj.{0,1}``.
* ``modality_postprocessors.<m>.1.log_logit_scale``: text learnable, audio/depth/thermal/IMU fixed (20 / 5 / 10 / 5).

Mapping decisions (exact in fp32 up to summation order):

* ImageBind adds ``pos_embed`` to ``cat(cls, tokens)``; bind adds positions to patch tokens in the stem and has no
  CLS position, so ``pos_embed[:, 0]`` is folded into ``cls_token`` (``cls + pos0`` is the same sum ImageBind forms).
* ``in_proj_weight`` is the fused ``[q; k; v]`` projection bind's ``qkv`` uses (split when ``fused_qkv`` is off);
  ``bias_k`` / ``bias_v`` are appended after the projection in both.
* Vision's 2-frame tubelet keeps its Conv3d; ImageBind's vision positions cover one time step (2 frames / 2), so
  the tubelet's temporal position embedding is zero (also for a ``video`` encoder given the vision weights).
* ImageBind multiplies embeddings by the logit scale; bind keeps them unit-norm and exposes the scale:
  ``ImageBind output == model.encode(m, x) * model.logit_scale(m)`` (vision's scale is 1; text's learnable scale is
  ``clip(exp(s), max=100)``, exactly 100 beyond). Multi-clip inputs: ImageBind averages scaled clip embeddings
  without re-normalising; bind re-normalises the mean (same direction).
* Sizes: :func:`imagebind_config` reads every width / depth / MLP ratio / output dimension / stem size from the
  tensors, so other ImageBind sizes convert; head counts are not in a state dict and are given per modality.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import torch

from bind.checkpoints.common import (
    CheckpointError,
    SourceKeys,
    TargetState,
    clip_tokenizer_dir,
    find_stem,
    load_state_dict_file,
    require_tokenizer,
)
from bind.nn.stems import TubeletStem

#: bind modality -> ImageBind modality key (video runs through ImageBind's vision encoder)
IMAGEBIND_NAMES = {
    "image": "vision",
    "video": "vision",
    "text": "text",
    "audio": "audio",
    "depth": "depth",
    "thermal": "thermal",
    "imu": "imu",
}
_STEM_KEY = {
    "vision": "rgbt_stem",
    "audio": "rgbt_stem",
    "thermal": "rgbt_stem",
    "depth": "depth_stem",
    "imu": "imu_stem",
}
_HEAD_PROJ = {"imu": "3"}  # nn.Sequential(LayerNorm, SelectElement, [Dropout,] Linear)
_GROUPS = ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors")


def _put_attention(src: SourceKeys, tgt: TargetState, s: str, t: str) -> None:
    """``nn.MultiheadAttention`` ``s`` -> bind :class:`Attention` ``t`` (fused ``qkv`` or ``q/k/v_proj``)."""
    w, b = src.take(f"{s}.in_proj_weight"), src.take(f"{s}.in_proj_bias")
    if tgt.has(f"{t}.qkv.weight") or not tgt.has(f"{t}.q_proj.weight"):
        tgt.put(f"{t}.qkv.weight", w, f"{s}.in_proj_weight")
        tgt.put(f"{t}.qkv.bias", b, f"{s}.in_proj_bias")
    else:
        ws, bs = ((x.chunk(3) if x is not None else (None,) * 3) for x in (w, b))
        for name, part_w, part_b in zip("qkv", ws, bs):
            tgt.put(f"{t}.{name}_proj.weight", part_w, f"{s}.in_proj_weight")
            tgt.put(f"{t}.{name}_proj.bias", part_b, f"{s}.in_proj_bias")
    for p in ("weight", "bias"):
        tgt.put(f"{t}.proj.{p}", src.take(f"{s}.out_proj.{p}"), f"{s}.out_proj.{p}")
    for p in ("bias_k", "bias_v"):
        if f"{s}.{p}" in src or tgt.has(f"{t}.{p}"):
            tgt.put(f"{t}.{p}", src.take(f"{s}.{p}"), f"{s}.{p}")


def _put_norm(src: SourceKeys, tgt: TargetState, s: str, t: str) -> None:
    for p in ("weight", "bias"):
        tgt.put(f"{t}.{p}", src.take(f"{s}.{p}"), f"{s}.{p}")


def _convert_stem(src: SourceKeys, tgt: TargetState, encoder, e: str, ib: str) -> None:
    p = f"modality_preprocessors.{ib}"
    stem_path, stem = find_stem(encoder)
    sp = f"{e}.{stem_path}"
    if ib == "text":
        tgt.put(f"{sp}.token_embedding.weight", src.take(f"{p}.token_embedding.weight"), f"{p}.token_embedding.weight")
        tgt.put(f"{sp}.pos_embed", src.take(f"{p}.pos_embed"), f"{p}.pos_embed")
        mask = src.take(f"{p}.mask") if f"{p}.mask" in src else None  # a constant buffer: optional
        if mask is not None:
            causal = torch.full(mask.shape, float("-inf"), device="cpu").triu(1)
            if mask.shape[0] != mask.shape[-1] or not (mask.is_meta or torch.equal(mask.float(), causal)):
                raise CheckpointError(f"{src.origin}: {p}.mask is not the causal mask ImageBind builds")
            if not encoder.cfg.causal:
                raise CheckpointError(
                    f"{src.origin}: ImageBind's text trunk is causal; the text encoder config has causal: false"
                )
        return
    sk = f"{p}.{_STEM_KEY[ib]}"
    proj = f"{sk}.proj.1.weight" if ib == "vision" else f"{sk}.proj.weight"
    tgt.put(f"{sp}.proj.weight", src.take(proj), proj)
    if f"{sk}.norm_layer.weight" in src or tgt.has(f"{sp}.norm.weight"):
        _put_norm(src, tgt, f"{sk}.norm_layer", f"{sp}.norm")
    pos_key = f"{p}.pos_embed" if ib == "imu" else f"{p}.pos_embedding_helper.pos_embed"
    pos, cls = src.take(pos_key), src.take(f"{p}.cls_token")
    if pos is None or cls is None:
        return
    n_cls = cls.shape[1]
    tgt.put(f"{sp}.pos_embed", pos[:, n_cls:], pos_key)
    tgt.put(f"{e}.cls_token", cls + pos[:, :n_cls], f"{p}.cls_token + {pos_key}[:, :{n_cls}]")
    if isinstance(stem, TubeletStem) and stem.temporal_pos_embed is not None:
        tgt.put(
            f"{sp}.temporal_pos_embed",
            torch.zeros(tgt.shape(f"{sp}.temporal_pos_embed")),
            f"(zero: ImageBind's {ib} positions have one time step)",
        )


def _convert_encoder(src: SourceKeys, tgt: TargetState, encoder, modality: str) -> None:
    ib = IMAGEBIND_NAMES[modality]
    e = f"encoders.{modality}"
    _convert_stem(src, tgt, encoder, e, ib)
    t = f"modality_trunks.{ib}"
    if f"{t}.pre_transformer_layer.0.weight" in src or tgt.has(f"{e}.ln_pre.weight"):
        _put_norm(src, tgt, f"{t}.pre_transformer_layer.0", f"{e}.ln_pre")
    blocks = sorted(
        {
            int(m.group(1))
            for k in src.with_prefix(f"{t}.blocks.")
            if (m := re.match(rf"{re.escape(t)}\.blocks\.(\d+)\.", k))
        }
    )
    for i in blocks:
        s, d = f"{t}.blocks.{i}", f"{e}.trunk.blocks.{i}"
        _put_norm(src, tgt, f"{s}.norm_1", f"{d}.norm1")
        _put_attention(src, tgt, f"{s}.attn", f"{d}.attn")
        _put_norm(src, tgt, f"{s}.norm_2", f"{d}.norm2")
        for fc in ("fc1", "fc2"):
            for p in ("weight", "bias"):
                tgt.put(f"{d}.mlp.{fc}.{p}", src.take(f"{s}.mlp.{fc}.{p}"), f"{s}.mlp.{fc}.{p}")
    h = f"modality_heads.{ib}"
    if ib == "text":
        _put_norm(src, tgt, f"{h}.proj.0", f"{e}.head.norm")
        tgt.put(f"{e}.head.proj.weight", src.take(f"{h}.proj.1.weight"), f"{h}.proj.1.weight")
    else:
        _put_norm(src, tgt, f"{h}.0", f"{e}.head.norm")
        key = f"{h}.{_HEAD_PROJ.get(ib, '2')}.weight"
        tgt.put(f"{e}.head.proj.weight", src.take(key), key)
    if ib == "vision":  # ImageBind's vision postprocessor only normalises: scale 1
        tgt.put(f"{e}.logit_scale", torch.zeros(()), "(ImageBind vision: no logit scale, log 1 = 0)")
    else:
        key = f"modality_postprocessors.{ib}.1.log_logit_scale"
        tgt.put(f"{e}.logit_scale", src.take(key), key)


def convert_imagebind_state_dict(tensors: dict[str, torch.Tensor], model, origin: str = "checkpoint") -> None:
    """Load an ImageBind state dict into ``model`` (a :class:`bind.BindModel` built from an ImageBind config).

    Every encoder of ``model`` must be an ImageBind modality; ImageBind modalities the model does not encode are
    skipped (their keys are still checked to be ImageBind's). Any unknown, missing or misshaped key raises
    :class:`CheckpointError` naming it, before the model is touched.
    """
    src = SourceKeys(tensors, origin)
    tgt = TargetState(model)
    unsupported = [m for m in model.modalities if m not in IMAGEBIND_NAMES]
    if unsupported:
        raise CheckpointError(
            f"{origin}: ImageBind has no encoder for {unsupported} (it has {sorted(set(IMAGEBIND_NAMES.values()))})"
        )
    towers = [m for m in model.modalities if not hasattr(model.encoder(m), "trunk")]
    if towers:
        raise CheckpointError(
            f"{origin}: ImageBind weights load into bind's own encoders; {towers} are transformers towers"
        )
    for m in model.modalities:
        _convert_encoder(src, tgt, model.encoder(m), m)
    unselected = set(IMAGEBIND_NAMES.values()) - {IMAGEBIND_NAMES[m] for m in model.modalities}
    skip = tuple(f"{group}.{ib}." for ib in unselected for group in _GROUPS)
    for k in src.tensors:  # ImageBind keys of modalities the model does not encode: known, not needed
        if k.startswith(skip):
            src.skip(k)
    tgt.load_into(model, src)


def load_imagebind(model, checkpoint: str | Path) -> None:
    """Converter registered as ``imagebind``: ``bind.load_model("imagebind-huge", checkpoint=PATH)``."""
    convert_imagebind_state_dict(load_state_dict_file(checkpoint), model, origin=str(checkpoint))
    model.config.extra["converted_from"] = {
        "format": "imagebind",
        "file": Path(checkpoint).name,
        "bytes": Path(checkpoint).stat().st_size,
    }


def _block_ids(tensors: dict[str, torch.Tensor], trunk: str) -> list[int]:
    pattern = re.compile(rf"{re.escape(trunk)}\.blocks\.(\d+)\.")
    return sorted({int(m.group(1)) for k in tensors if (m := pattern.match(k))})


def infer_sizes(tensors: dict[str, torch.Tensor], modality: str) -> dict:
    """What an ImageBind state dict determines about ``modality``'s encoder: ``width``, ``depth``, ``mlp_ratio``,
    ``kv_bias_tokens``, ``ln_pre``, the output dimension (``embed_dim``), stem / vocabulary / context sizes and the
    input size of square maps and IMU windows (from the position count). Head counts are not stored in a state
    dict; audio's mel bins / frames cannot be told from its position count (stride 10): ``--set`` them."""
    ib = IMAGEBIND_NAMES[modality]
    t, p = f"modality_trunks.{ib}", f"modality_preprocessors.{ib}"
    blocks = _block_ids(tensors, t)
    if not blocks or f"{t}.blocks.0.norm_1.weight" not in tensors:
        return {}
    width = int(tensors[f"{t}.blocks.0.norm_1.weight"].shape[0])
    out: dict = {"width": width, "depth": len(blocks), "kv_bias_tokens": f"{t}.blocks.0.attn.bias_k" in tensors}
    fc1 = tensors.get(f"{t}.blocks.0.mlp.fc1.weight")
    if fc1 is not None:
        out["mlp_ratio"] = fc1.shape[0] / width
    if ib == "vision":
        out["ln_pre"] = f"{t}.pre_transformer_layer.0.weight" in tensors
    head = f"modality_heads.{ib}." + ("proj.1.weight" if ib == "text" else f"{_HEAD_PROJ.get(ib, '2')}.weight")
    if head in tensors:
        out["embed_dim"] = int(tensors[head].shape[0])
    stem: dict = {}
    if ib == "text":
        if f"{p}.token_embedding.weight" in tensors:
            vocab = int(tensors[f"{p}.token_embedding.weight"].shape[0])
            stem.update(vocab_size=vocab, eot_token_id=vocab - 1)
        if f"{p}.pos_embed" in tensors:
            stem["context_length"] = int(tensors[f"{p}.pos_embed"].shape[1])
    elif ib == "vision" and f"{p}.rgbt_stem.proj.1.weight" in tensors:
        _, chans, tp, k, _ = tensors[f"{p}.rgbt_stem.proj.1.weight"].shape
        stem.update(in_chans=int(chans), temporal_patch=int(tp), patch_size=int(k))
    elif ib != "imu" and f"{p}.{_STEM_KEY[ib]}.proj.weight" in tensors:
        w = tensors[f"{p}.{_STEM_KEY[ib]}.proj.weight"]
        if w.ndim == 4:
            stem.update(in_chans=int(w.shape[1]), patch_size=int(w.shape[-1]))
    if stem:
        out["stem"] = stem
    pos = tensors.get(f"{p}.pos_embed" if ib == "imu" else f"{p}.pos_embedding_helper.pos_embed")
    cls = tensors.get(f"{p}.cls_token")
    if ib in ("vision", "depth", "thermal") and pos is not None and cls is not None and "patch_size" in stem:
        n = pos.shape[1] - cls.shape[1]
        grid = math.isqrt(n)
        if grid * grid == n:  # square maps: the crop size is the patch grid's (audio's grid depends on its stride)
            out["preprocess"] = {"size": grid * stem["patch_size"], "crop_size": grid * stem["patch_size"]}
    elif ib == "imu" and pos is not None and cls is not None:
        out["preprocess"] = {"window_patches": int(pos.shape[1] - cls.shape[1])}
    return out


def _changed_preprocess(modality: str, given: dict, inferred: dict) -> dict:
    """The inferred input sizes that differ from what ``given`` (a preset + overrides) already resolves to; a new crop
    size scales the resize size with it."""
    from bind.registry import get_modality

    if not inferred:
        return {}
    try:
        current = get_modality(modality).preprocess_config(dict(given))
    except Exception:  # noqa: BLE001 — a plugin without these fields: state them all
        return inferred
    out = {k: v for k, v in inferred.items() if getattr(current, k, None) != v}
    if "crop_size" in out and getattr(current, "size", None) and getattr(current, "crop_size", None):
        out["size"] = round(out["crop_size"] * current.size / current.crop_size)
    elif "crop_size" not in out:
        out.pop("size", None)
    return out


def imagebind_config(
    tensors: dict[str, torch.Tensor],
    config: str | Path | dict = "imagebind-huge",
    *,
    heads: dict[str, int] | None = None,
    overrides: dict[str, dict] | None = None,
    modalities: list[str] | None = None,
    origin: str = "checkpoint",
) -> dict:
    """A raw bind config for an ImageBind state dict of any size: ``config`` (a named config, a ``.yaml`` /
    ``.json`` path or a dict; default ``imagebind-huge``) with every size the tensors determine replaced by the
    tensors' (:func:`infer_sizes`), ``heads`` per modality (a state dict does not store them: required for any
    encoder whose width or depth differs from ``config``), then ``overrides`` (``{modality: {field: value}}``).
    Without ``modalities``, the encoders of ``config`` the checkpoint holds weights for."""
    from bind.factory import _merge, model_config

    raw = model_config(config)
    entries = raw.setdefault("encoders", {})
    heads, overrides = dict(heads or {}), dict(overrides or {})
    for m in [*heads, *overrides]:
        if m not in entries:
            raise CheckpointError(
                f"--heads / --set name {m!r}, which {raw.get('name')!r} has no encoder for (it has {sorted(entries)})"
            )
    present = {k.split(".")[1] for k in tensors if k.startswith(_GROUPS) and k.count(".") > 1}
    if modalities is None:
        modalities = [m for m in entries if IMAGEBIND_NAMES.get(m) in present]
        if not modalities:
            raise CheckpointError(
                f"{origin}: no ImageBind encoder weights found (expected keys such as "
                "modality_trunks.vision.blocks.0...; is this an ImageBind checkpoint?)"
            )
    raw["encoders"] = entries = {m: dict(entries[m] or {}) for m in modalities if m in entries}
    defaults = raw.get("defaults", {})
    need_heads, dims = [], {}
    for m, entry in entries.items():
        if m not in IMAGEBIND_NAMES:
            continue
        sizes = infer_sizes(tensors, m)
        dim = sizes.pop("embed_dim", None)
        if dim is not None:
            dims[m] = dim
        resized = any(
            sizes.get(k) is not None and sizes[k] != entry.get(k, defaults.get(k)) for k in ("width", "depth")
        )
        stem, pre = sizes.pop("stem", {}), sizes.pop("preprocess", {})
        entry.update(sizes)
        entry["stem"] = {**(entry.get("stem") or {}), **stem}
        if "window_patches" in pre:  # IMU: positions = window / patch
            pre = {"window": pre.pop("window_patches") * int(entry["stem"].get("patch_size", 8))}
        pre = _changed_preprocess(m, entry.get("preprocess") or {}, pre)
        if pre:
            entry["preprocess"] = {**(entry.get("preprocess") or {}), **pre}
        if m == "text" and "context_length" in stem:
            entry["preprocess"] = {**(entry.get("preprocess") or {}), "context_length": stem["context_length"]}
        if m in heads:
            entry["heads"] = int(heads[m])
        elif resized:
            need_heads.append(f"{m} (width {sizes['width']})")
        if m in overrides:
            entries[m] = _merge(entry, overrides[m])
    if need_heads:
        raise CheckpointError(
            f"{origin}: attention head counts are not stored in a state dict and these encoders differ in size from "
            f"{raw.get('name')!r}: {', '.join(need_heads)}; pass --heads "
            + " ".join(f"{x.split()[0]}=N" for x in need_heads)
            + " (or a --config PATH.yaml that states them)"
        )
    if len(set(dims.values())) > 1:
        raise CheckpointError(f"{origin}: the heads project to different sizes {dims}")
    if dims:
        raw["embed_dim"] = next(iter(dims.values()))
        for entry in entries.values():
            entry.pop("embed_dim", None)
    for m, entry in entries.items():
        width, h = entry.get("width", defaults.get("width")), entry.get("heads", defaults.get("heads"))
        if width and h and int(width) % int(h):
            raise CheckpointError(f"{origin}: {m}: width {width} is not divisible by {h} heads; pass --heads {m}=N")
    return raw


def convert_imagebind(
    checkpoint: str | Path,
    out: str | Path,
    *,
    config: str | Path | dict = "imagebind-huge",
    tokenizer: str | Path | None = None,
    modalities: list[str] | None = None,
    heads: dict[str, int] | None = None,
    overrides: dict[str, dict] | None = None,
    precision: str = "fp32",
) -> Path:
    """``bindspace convert imagebind``: an ImageBind ``.pth`` -> a bind model directory (``config.json`` +
    ``model.safetensors`` + tokenizer).

    Any ImageBind size converts: widths, depths, MLP ratios, the output dimension, stem and vocabulary sizes are read
    from the tensors (:func:`imagebind_config`); ``heads`` (``{modality: N}``) gives the head counts a state dict
    does not hold, ``overrides`` any other encoder field; ``config`` is a named model, a ``.yaml`` / ``.json`` path
    or a dict. ``tokenizer``: CLIP's ``bpe_simple_vocab_16e6.txt.gz`` (it ships inside the ``imagebind`` package,
    ``<site-packages>/imagebind/bpe/``, and in the ImageBind repository under ``bpe/``; used from an installed
    ``imagebind`` package when not given), a CLIP tokenizer directory or hub id (then the config's
    ``openai/clip-vit-large-patch14``, the same BPE). ``precision`` is saved with the model: ``fp32`` (default)
    is where it matches ImageBind to float rounding. The checkpoint is checked first, the tokenizer next, and both
    fail in seconds offline naming the file.
    """
    from bind.checkpoints.common import imagebind_bpe
    from bind.factory import expand_config
    from bind.model import BindModel
    from bind.precision import check_precision

    precision = check_precision(precision)
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found" + (" (a directory)" if path.is_dir() else ""))
    tensors = load_state_dict_file(path)
    raw = imagebind_config(
        tensors, config, heads=heads, overrides=overrides, modalities=modalities, origin=str(checkpoint)
    )
    with tempfile.TemporaryDirectory(prefix="bind-imagebind-") as work:
        if "text" in raw["encoders"]:
            text = raw["encoders"]["text"] = dict(raw["encoders"]["text"] or {})
            tokenizer = tokenizer if tokenizer is not None else imagebind_bpe()
            if tokenizer is not None:
                text["preprocess"] = {**text.get("preprocess", {}), "tokenizer": clip_tokenizer_dir(tokenizer, work)}
            require_tokenizer(text.get("preprocess", {}).get("tokenizer"))
        with torch.device("meta"):  # every tensor comes from the checkpoint: no random init, no second copy
            model = BindModel(expand_config(raw), precision=precision)
        convert_imagebind_state_dict(tensors, model, origin=str(checkpoint))
        model.config.extra["converted_from"] = {"format": "imagebind", "file": path.name, "bytes": path.stat().st_size}
        model.config.extra.setdefault("license", "CC BY-NC-SA 4.0 (ImageBind weights; never redistribute)")
        model.config.extra["precision"] = precision
        out = model.eval().save_pretrained(out)
    return out


def imagebind_output(model, modality: str, x: torch.Tensor) -> torch.Tensor:
    """What ImageBind's ``forward`` returns for ``modality``: the unit embedding times the logit scale."""
    scale = model.logit_scale(modality)
    return model.encode(modality, x) * scale
