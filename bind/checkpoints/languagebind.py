"""LanguageBind checkpoints (Zhu et al., "LanguageBind: Extending Video-Language Pretraining to N-modality by
Language-based Semantic Alignment", ICLR 2024; PKU-YuanGroup/LanguageBind) -> bind.

A LanguageBind checkpoint is an HF CLIP-style directory (``config.json`` with ``text_config`` / ``vision_config``,
``pytorch_model.bin`` or safetensors, CLIP BPE tokenizer files), one per modality (``LanguageBind_Video_FT``,
``LanguageBind_Video``, ``LanguageBind_Audio(_FT)``, ``_Depth``, ``_Thermal``, ``_Image``), each with its own copy of
the CLIP text tower. Keys (``languagebind/*/modeling_*.py``): ``text_model.*``, ``vision_model.embeddings.
{class_embedding, patch_embedding, position_embedding}``, ``vision_model.pre_layrnorm``, ``vision_model.encoder.
layers.N.{self_attn.{q,k,v,out}_proj, layer_norm1, mlp.fc1, mlp.fc2, layer_norm2}`` (video adds ``temporal_embedding``,
``temporal_attn.*``, ``temporal_layer_norm1``), ``vision_model.post_layernorm``, ``visual_projection``,
``text_projection``, ``logit_scale``. LoRA checkpoints keep peft's wrapper
(``vision_model.encoder.base_model.model.layers.N.<module>.{weight | base_layer.weight, lora_A[.adapter].weight,
lora_B[.adapter].weight}``); they are merged here: ``W + (lora_alpha / r) * B @ A``.

Mapping decisions (exact in fp32 up to summation order):

* ``class_embedding + position_embedding[0]`` becomes bind's ``cls_token`` (bind has no CLS position; HF forms the same
  sum), ``position_embedding[1:]`` the stem's patch positions; ``q/k/v_proj`` are fused into ``qkv``.
* Video: per-frame ``Conv2d`` patches become a ``(1, p, p)`` Conv3d tubelet; every layer adds ``temporal_embedding``,
  runs temporal attention (``temporal_layer_norm1`` -> ``temporal_attn``, residual) over the frames of each token, then
  the CLIP layer within each frame; per-frame CLS after ``post_layernorm`` is averaged over frames, then projected —
  bind's ``DividedSpaceTimeBlock`` and head do exactly this.
* Text pooling: LanguageBind takes ``input_ids.argmax(-1)`` (the end-of-text token is CLIP's largest id), so bind's
  ``eot_token_id`` is ``vocab_size - 1``; no padding mask (causal attention + EOT pooling never see padding).
* ``logit_scale`` (log space) is the modality encoder's scale, uncapped as LanguageBind's ``logit_scale.exp()``
  (``logit_scale_max: null``); LanguageBind does not scale language embeddings, so the text encoder's scale is fixed
  at 1: ``LanguageBind output == model.encode(m, x) * model.logit_scale(m)``.
* Video with ``T`` frames: ``temporal_embedding[:, :T]`` for ``T <= num_frames`` as LanguageBind; interpolated only for
  more frames than it was trained with (LanguageBind defines nothing there).
* Directories written by LanguageBind's own ``save_pretrained`` hold ``vision_config.image_size`` as a list
  (``[224, 224]``; audio ``[mel bins, frames]``): read as the square size (audio's from ``num_mel_bins`` /
  ``target_length``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from bind.checkpoints.common import (
    CheckpointError,
    SourceKeys,
    TargetState,
    clip_tokenizer_dir,
    find_stem,
    load_checked,
    load_state_dict_file,
    require_tokenizer,
)
from bind.config import EncoderConfig
from bind.nn.stems import TubeletStem

MODALITIES = ("video", "audio", "depth", "thermal", "image")
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
_LORA = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
_ACTS = {"gelu": "gelu", "quick_gelu": "quick_gelu"}


# --- reading ---------------------------------------------------------------------------------------------------------


def read_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a LanguageBind directory (no config.json)")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    for part in ("text_config", "vision_config"):
        if not isinstance(cfg.get(part), dict):
            raise CheckpointError(f"{path}: expected a CLIP-style config with {part!r}")
    return cfg


def read_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a LanguageBind directory (single file or shards), loaded weights-only."""
    directory = Path(directory)
    path = weights_file(directory)
    if not path.name.endswith(".index.json"):
        return load_state_dict_file(path)
    try:
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a shard index ({type(e).__name__}: {e})") from None
    if any(Path(sh).name != sh for sh in shards):
        raise CheckpointError(f"{path}: shard names must be files inside {directory}")
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        tensors.update(load_state_dict_file(directory / shard))
    return tensors


def detect_modality(cfg: dict[str, Any], directory: str | Path) -> str:
    """The modality a LanguageBind config describes (architecture / model type, then vision extras, then name)."""
    names = " ".join([*cfg.get("architectures", []), str(cfg.get("model_type", ""))]).lower()
    found = [m for m in MODALITIES if m in names]
    if len(found) == 1:
        return found[0]
    vc = cfg["vision_config"]
    if vc.get("add_time_attn"):
        return "video"
    if vc.get("num_mel_bins") and vc.get("target_length"):
        return "audio"
    found = [m for m in MODALITIES if m in Path(directory).resolve().name.lower()]
    if len(found) == 1:
        return found[0]
    raise CheckpointError(
        f"{directory}: cannot tell the modality from config.json "
        f"(architectures {cfg.get('architectures')}); pass --modality"
    )


def merge_lora(
    tensors: dict[str, torch.Tensor], alpha: float, rank: int | None, origin: str
) -> dict[str, torch.Tensor]:
    """Strip peft's ``base_model.model.`` wrapper and merge every LoRA pair: ``W + (alpha / r) * B @ A``."""
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    adapters: set[str] = set()
    for key, t in tensors.items():
        key = key.replace(".base_model.model.", ".")
        m = _LORA.match(key)
        if m:
            pairs.setdefault(m["module"], {})[m["ab"]] = t
            adapters.add(m["adapter"] or "")
            continue
        out[key.replace(".base_layer.", ".")] = t
    if len(adapters) > 1:
        raise CheckpointError(f"{origin}: several LoRA adapters {sorted(adapters)}; merge one before converting")
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise CheckpointError(f"{origin}: LoRA module {module} has lora_{''.join(ab)} without its pair")
        a, b = ab["A"].float(), ab["B"].float()
        r = a.shape[0]
        if rank and r != rank:
            raise CheckpointError(f"{origin}: {module}.lora_A has rank {r}, config.json says lora_r={rank}")
        base = out.get(f"{module}.weight")
        if base is None:
            raise CheckpointError(f"{origin}: LoRA module {module} has no base weight")
        out[f"{module}.weight"] = (base.float() + (alpha / r) * (b @ a)).to(base.dtype)
    return out


# --- config ----------------------------------------------------------------------------------------------------------


def _trunk(hf: dict[str, Any], origin: str) -> dict[str, Any]:
    act = hf.get("hidden_act", "quick_gelu")
    if act not in _ACTS:
        raise CheckpointError(f"{origin}: hidden_act {act!r} is not supported (expected one of {list(_ACTS)})")
    width = int(hf["hidden_size"])
    return {
        "width": width,
        "depth": int(hf["num_hidden_layers"]),
        "heads": int(hf["num_attention_heads"]),
        "mlp_ratio": int(hf["intermediate_size"]) / width,
        "act": _ACTS[act],
        "norm_eps": float(hf.get("layer_norm_eps", 1e-5)),
    }


def _scalar(value: Any, name: str, origin: str) -> Any:
    """A square size: LanguageBind's classes rewrite ``vision_config.image_size`` as ``[H, W]`` in place
    (``resize_pos``), so directories they save hold a list; ``[224, 224]`` means 224."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise CheckpointError(
                f"{origin}: vision_config.{name} {list(value)} is not square; bind's "
                f"{name} for this modality is one number"
            )
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"{origin}: vision_config.{name} {value!r} is not a number")
    return value


def encoder_entries(cfg: dict[str, Any], modality: str, origin: str) -> dict[str, dict[str, Any]]:
    """bind encoder entries (text + ``modality``) for a LanguageBind ``config.json``, on top of the named
    ``languagebind-<modality>`` config (which holds the preprocessing presets)."""
    from bind.registry import model_config_dict

    raw = model_config_dict(f"languagebind-{modality}")
    fields = {f.name for f in dataclasses.fields(EncoderConfig)}
    shared = {k: v for k, v in raw.get("defaults", {}).items() if k in fields}
    base = {m: {**copy.deepcopy(shared), **(entry or {})} for m, entry in raw["encoders"].items()}
    tc, vc = cfg["text_config"], cfg["vision_config"]
    text = copy.deepcopy(base["text"])
    text.update(_trunk(tc, origin))
    vocab = int(tc.get("vocab_size", 49408))
    text["stem"] = {
        **text.get("stem", {}),
        "vocab_size": vocab,
        "eot_token_id": vocab - 1,
        "pad_token_id": None,
        "context_length": int(tc.get("max_position_embeddings", 77)),
    }
    text["preprocess"] = {**text.get("preprocess", {}), "context_length": text["stem"]["context_length"]}
    enc = copy.deepcopy(base[modality])
    enc.update(_trunk(vc, origin))
    patch, size = int(_scalar(vc["patch_size"], "patch_size", origin)), vc.get("image_size", 224)
    if modality != "audio":  # audio's image_size is LanguageBind's (mel bins, frames), read below
        size = int(_scalar(size, "image_size", origin))
    stem = {**enc.get("stem", {}), "patch_size": patch, "in_chans": int(vc.get("num_channels", 3))}
    pre = dict(enc.get("preprocess", {}))
    if modality == "video":
        frames = int(vc.get("num_frames", 8))
        stem.update(num_frames=frames, temporal_patch=1)
        pre.update(frames_per_clip=frames, size=size, crop_size=size)
    elif modality == "audio":  # the image_size of the config is replaced by (mel bins, frames) in LanguageBind
        stem.update(stride=patch)
        pre.update(num_mel_bins=int(vc["num_mel_bins"]), target_length=int(vc["target_length"]))
    else:
        pre.update(size=size, crop_size=size)
    enc["stem"], enc["preprocess"] = stem, pre
    return {"text": text, modality: enc}


def build_config(checkpoints: list[tuple[str, dict[str, Any], str]]) -> dict[str, Any]:
    """A raw bind config for ``[(modality, config.json dict, origin), ...]``; text from the last checkpoint."""
    dims = {int(cfg["projection_dim"]) for _, cfg, _ in checkpoints}
    if len(dims) != 1:
        raise CheckpointError(f"LanguageBind checkpoints project to different sizes {sorted(dims)}")
    encoders: dict[str, Any] = {}
    for modality, cfg, origin in checkpoints:
        if modality in encoders:
            raise CheckpointError(f"two LanguageBind checkpoints for {modality!r} ({origin})")
        encoders.update(encoder_entries(cfg, modality, origin))
    mods = [m for m, _, _ in checkpoints]
    return {
        "name": "languagebind-" + "-".join(mods),
        "embed_dim": dims.pop(),
        "anchor": "text",
        "frozen": ["text"],
        "checkpoint_format": "languagebind",
        "encoders": {"text": encoders.pop("text"), **encoders},
    }


# --- conversion ------------------------------------------------------------------------------------------------------


def _put(src: SourceKeys, tgt: TargetState, s: str, t: str, params=("weight", "bias")) -> None:
    for p in params:
        tgt.put(f"{t}.{p}", src.take(f"{s}.{p}"), f"{s}.{p}")


def _put_attention(src: SourceKeys, tgt: TargetState, s: str, t: str) -> None:
    if tgt.has(f"{t}.qkv.weight"):
        for p in ("weight", "bias"):
            parts = [src.take(f"{s}.{n}_proj.{p}") for n in "qkv"]
            if all(x is not None for x in parts):
                tgt.put(f"{t}.qkv.{p}", torch.cat(parts), f"{s}.{{q,k,v}}_proj.{p}")
    else:
        for n in "qkv":
            _put(src, tgt, f"{s}.{n}_proj", f"{t}.{n}_proj")
    _put(src, tgt, f"{s}.out_proj", f"{t}.proj")


def _put_layer(src: SourceKeys, tgt: TargetState, s: str, t: str) -> None:
    _put(src, tgt, f"{s}.layer_norm1", f"{t}.norm1")
    _put_attention(src, tgt, f"{s}.self_attn", f"{t}.attn")
    _put(src, tgt, f"{s}.layer_norm2", f"{t}.norm2")
    _put(src, tgt, f"{s}.mlp.fc1", f"{t}.mlp.fc1")
    _put(src, tgt, f"{s}.mlp.fc2", f"{t}.mlp.fc2")


def _layers(src: SourceKeys, prefix: str) -> list[int]:
    pattern = re.compile(rf"{re.escape(prefix)}(\d+)\.")
    return sorted({int(m.group(1)) for k in src.with_prefix(prefix) if (m := pattern.match(k))})


def _skip_position_ids(src: SourceKeys, key: str) -> None:
    ids = src.tensors.get(key)
    if ids is not None:
        if not torch.equal(ids.reshape(-1).long(), torch.arange(ids.numel())):
            raise CheckpointError(f"{src.origin}: {key} is not 0..N-1; custom position ids are not supported")
        src.skip(key)


def convert_text(src: SourceKeys, tgt: TargetState, model) -> None:
    e, s = "encoders.text", "text_model"
    sp, _ = find_stem(model.encoder("text"))
    tgt.put(
        f"{e}.{sp}.token_embedding.weight",
        src.take(f"{s}.embeddings.token_embedding.weight"),
        f"{s}.embeddings.token_embedding.weight",
    )
    pos = src.take(f"{s}.embeddings.position_embedding.weight")
    tgt.put(f"{e}.{sp}.pos_embed", None if pos is None else pos[None], f"{s}.embeddings.position_embedding.weight")
    _skip_position_ids(src, f"{s}.embeddings.position_ids")
    for i in _layers(src, f"{s}.encoder.layers."):
        _put_layer(src, tgt, f"{s}.encoder.layers.{i}", f"{e}.trunk.blocks.{i}")
    _put(src, tgt, f"{s}.final_layer_norm", f"{e}.head.norm")
    tgt.put(f"{e}.head.proj.weight", src.take("text_projection.weight"), "text_projection.weight")
    tgt.put(f"{e}.logit_scale", torch.zeros(()), "(LanguageBind does not scale language embeddings: log 1 = 0)")


def convert_vision(src: SourceKeys, tgt: TargetState, model, modality: str) -> None:
    e, s = f"encoders.{modality}", "vision_model"
    encoder = model.encoder(modality)
    sp, stem = find_stem(encoder)
    w = src.take(f"{s}.embeddings.patch_embedding.weight")
    if w is not None and isinstance(stem, TubeletStem):
        w = w.unsqueeze(2)  # per-frame Conv2d == (1, p, p) Conv3d
    tgt.put(f"{e}.{sp}.proj.weight", w, f"{s}.embeddings.patch_embedding.weight")
    pos, cls = src.take(f"{s}.embeddings.position_embedding.weight"), src.take(f"{s}.embeddings.class_embedding")
    if pos is not None and cls is not None:
        tgt.put(f"{e}.{sp}.pos_embed", pos[None, 1:], f"{s}.embeddings.position_embedding.weight[1:]")
        tgt.put(f"{e}.cls_token", (cls + pos[0])[None, None], f"{s}.embeddings.class_embedding + position[0]")
    _skip_position_ids(src, f"{s}.embeddings.position_ids")
    _put(src, tgt, f"{s}.pre_layrnorm", f"{e}.ln_pre")
    divided = encoder.cfg.attention == "divided"
    for i in _layers(src, f"{s}.encoder.layers."):
        sl, tl = f"{s}.encoder.layers.{i}", f"{e}.trunk.blocks.{i}"
        if divided:
            tgt.put(f"{tl}.temporal_embedding", src.take(f"{sl}.temporal_embedding"), f"{sl}.temporal_embedding")
            _put(src, tgt, f"{sl}.temporal_layer_norm1", f"{tl}.temporal_norm")
            _put_attention(src, tgt, f"{sl}.temporal_attn", f"{tl}.temporal_attn")
            tl = f"{tl}.spatial"
        _put_layer(src, tgt, sl, tl)
    _put(src, tgt, f"{s}.post_layernorm", f"{e}.head.norm")
    tgt.put(f"{e}.head.proj.weight", src.take("visual_projection.weight"), "visual_projection.weight")
    tgt.put(f"{e}.logit_scale", src.take("logit_scale"), "logit_scale")


def _check_architecture(model, cfg: dict[str, Any], modality: str, origin: str) -> None:
    """The model's encoder configs must say what config.json says (act / eps / frames are not visible in shapes)."""
    want = encoder_entries(cfg, modality, origin)
    diffs = []
    for m, entry in want.items():
        have = model.encoder(m).cfg
        for k in ("act", "norm_eps", "width", "depth", "heads", "mlp_ratio"):
            if getattr(have, k) != entry[k]:
                diffs.append(f"{m}.{k}: checkpoint {entry[k]!r}, model {getattr(have, k)!r}")
    if modality == "video" and model.encoder("video").cfg.attention != "divided":
        diffs.append("video.attention: checkpoint divided (temporal attention per layer), model joint")
    if diffs:
        raise CheckpointError(f"{origin}: config.json does not describe this model: " + "; ".join(diffs))


def convert_languagebind_tensors(
    tensors: dict[str, torch.Tensor], cfg: dict[str, Any], model, modality: str, origin: str, *, text: bool = True
) -> dict[str, torch.Tensor]:
    """Map one LanguageBind checkpoint's tensors onto ``model`` (returns ``{bind key: tensor}``; nothing loaded).

    ``text=False`` leaves the text tower out (its keys are still checked)."""
    vc = cfg["vision_config"]
    tensors = merge_lora(tensors, float(vc.get("lora_alpha", 16)), int(vc.get("lora_r") or 0) or None, origin)
    src, tgt = SourceKeys(tensors, origin), TargetState(model)
    if text:
        convert_text(src, tgt, model)
    else:
        for k in src.with_prefix("text_model.") + src.with_prefix("text_projection."):
            src.skip(k)
    convert_vision(src, tgt, model, modality)
    tgt.check(src, missing=False)
    return tgt.tensors


def load_languagebind_dirs(model, checkpoints: list[str | Path], modalities: list[str] | None = None) -> None:
    """Load LanguageBind directories into ``model`` (text from the last one); all-or-nothing."""
    modalities = modalities or [None] * len(checkpoints)
    merged: dict[str, torch.Tensor] = {}
    for i, (directory, modality) in enumerate(zip(checkpoints, modalities)):
        cfg = read_config(directory)
        modality = modality or detect_modality(cfg, directory)
        if modality not in model.modalities:
            raise CheckpointError(
                f"{directory}: a LanguageBind {modality} checkpoint, but the model encodes {model.modalities}"
            )
        _check_architecture(model, cfg, modality, str(directory))
        merged.update(
            convert_languagebind_tensors(
                read_weights(directory), cfg, model, modality, str(directory), text=i == len(checkpoints) - 1
            )
        )
    load_checked(model, merged, str(checkpoints[0]) if len(checkpoints) == 1 else str(list(map(str, checkpoints))))
    model.config.extra["converted_from"] = {"format": "languagebind", "dirs": [Path(c).name for c in checkpoints]}


def load_languagebind(model, checkpoint: str | Path) -> None:
    """Converter registered as ``languagebind``: ``bind.load_model("languagebind-video", checkpoint=DIR)``."""
    load_languagebind_dirs(model, [checkpoint])


def weights_file(directory: str | Path) -> Path:
    """The weights file of a LanguageBind directory (checked before anything slow happens)."""
    directory = Path(directory)
    name = next((n for n in WEIGHT_FILES if (directory / n).is_file()), None)
    if name is None:
        raise CheckpointError(f"{directory}: no weights (expected one of {list(WEIGHT_FILES)})")
    return directory / name


TOKENIZER_FILES = ("vocab.json", "merges.txt")


def _tokenizer_for(text_dir: Path, tokenizer: str | Path | None, default: str | None, work: str) -> str:
    """The tokenizer a converted model carries: ``tokenizer``, else the directory's own CLIP files, else the
    named config's default — checked now, failing in seconds offline with the file that is missing."""
    if tokenizer is not None:
        tok = clip_tokenizer_dir(tokenizer, work)
    elif all((text_dir / f).is_file() for f in TOKENIZER_FILES):
        tok = clip_tokenizer_dir(text_dir, work)
    else:
        missing = [f for f in TOKENIZER_FILES if not (text_dir / f).is_file()]
        from modalities.text import load_tokenizer

        try:
            load_tokenizer(default or "minilm")
        except (OSError, ValueError) as e:
            raise CheckpointError(
                f"{text_dir}: no tokenizer files ({', '.join(missing)} missing) and the default tokenizer "
                f"{default!r} is not available ({' '.join(str(e).split())}); pass --tokenizer with the CLIP "
                "tokenizer directory of any LanguageBind checkpoint or CLIP's bpe_simple_vocab_16e6.txt.gz"
            ) from None
        return str(default)
    require_tokenizer(tok)
    return tok


def convert_languagebind(
    checkpoints: str | Path | list[str | Path],
    out: str | Path,
    *,
    tokenizer: str | Path | None = None,
    modality: str | None = None,
    precision: str = "fp32",
) -> Path:
    """``bindspace convert languagebind``: LanguageBind directories -> one bind model directory.

    Several directories (e.g. Video_FT + Audio_FT + Depth) give one model with every modality; its text encoder
    comes from the last directory, as ``languagebind.LanguageBind`` does. ``modality`` names the modality of a
    single checkpoint whose config.json does not tell. ``tokenizer`` is used when the directory holds no CLIP
    tokenizer files. ``precision`` (saved with the model; ``load_model`` uses it unless told otherwise): ``fp32``,
    where the converted model matches LanguageBind to float rounding, or ``auto`` / ``bf16`` for speed.
    Directories saved by LanguageBind's own classes (``image_size`` as a list, ``pytorch_model.bin``, peft LoRA
    keys with or without ``base_layer``) convert as they are.
    """
    from bind.precision import check_precision

    precision = check_precision(precision)
    from bind.factory import expand_config
    from bind.model import BindModel

    dirs = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    if modality is not None and len(dirs) != 1:
        raise ValueError("--modality applies to a single checkpoint directory")
    specs = []
    for d in dirs:  # local things first: every config.json and weights file before the tokenizer
        cfg = read_config(d)
        weights_file(d)
        specs.append((modality or detect_modality(cfg, d), cfg, str(d)))
    raw = build_config(specs)
    with tempfile.TemporaryDirectory(prefix="bind-languagebind-") as work:
        text = raw["encoders"]["text"].setdefault("preprocess", {})
        text["tokenizer"] = _tokenizer_for(Path(dirs[-1]), tokenizer, text.get("tokenizer"), work)
        with torch.device("meta"):  # every tensor comes from the checkpoints: no random init, no second copy
            model = BindModel(expand_config(raw), precision=precision)
        load_languagebind_dirs(model, dirs, [m for m, _, _ in specs])
        model.config.extra.setdefault("license", "MIT (LanguageBind code and weights, PKU-YuanGroup)")
        model.config.extra["precision"] = precision
        return model.eval().save_pretrained(out)
