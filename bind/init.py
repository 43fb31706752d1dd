"""Initialise a modality encoder from a pretrained image ViT (transformers CLIP vision, a timm ViT state dict, or a
trained bind encoder).

Both ImageBind (Girdhar et al. 2023: "initialise ... with pretrained image weights" for depth / thermal via
Omnivore-style inflation) and LanguageBind (Zhu et al. 2024: every encoder from OpenCLIP ViT-L/14) start new
modalities from an image transformer. The adaptations:

* **channels**: a 1-channel (depth, thermal, spectrogram) stem from RGB filters, summed (``sum``: a grey image
  replicated to RGB gives the same response) or averaged (``mean``: weight scale kept); other channel counts spread
  the same filter over their channels;
* **tubelets** (video, I3D's inflation — Carreira & Zisserman 2017): ``Conv2d -> Conv3d`` with the 2-D filter
  repeated over the ``t`` frames and divided by ``t`` (``average``: a static clip reproduces the image response),
  or put on the centre frame only (``center``);
* **positions**: the 2-D position grid resized bicubically (``timm.layers.resample_abs_pos_embed``) to the target grid,
  e.g. 14x14 image patches -> 12x101 spectrogram patches (AST, Gong et al. 2021); the source's CLS position is
  folded into the CLS token, and a patch-embedding bias into the positions when the target stem has no bias;
* **kernel size**: a differing patch size is resized by PI-resize (FlexiViT, Beyer et al. 2023;
  ``timm.layers.resample_patch_embed`` with bilinear resizing);
* **divided space-time trunks**: ViT blocks load into the spatial half; the temporal attention's output projection
  starts at zero so the inflated video model initially equals the per-frame image model.
* **frame differences** (a video stem's ``frame_difference`` channels): the pixel filters repeated (TSN's
  cross-modality initialisation), so a still clip still gets the image response;
* **a bind encoder as the source** (``runs/first/model#image``, :func:`bind_vit_weights`): its convolutional stem
  loads too (Conv2d -> Conv3d inflated like the tubelets, BatchNorm statistics copied) and its projection into the
  embedding space, so the new encoder starts where the trained one ends.

Use :func:`vit_encoder_overrides` to size the :class:`~bind.config.EncoderConfig` like the source before building,
then :func:`init_encoder_from_vit`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_patch_embed
from torch import nn

from bind.nn.stems import PatchStem2d, SequencePatchStem, TubeletStem, resize_pos_2d
from bind.nn.transformer import Block, DividedSpaceTimeBlock

CHANNEL_MODES, TEMPORAL_MODES = ("sum", "mean"), ("average", "center")
#: :attr:`ViTWeights.blocks` keys -> a timm ViT block's state-dict names (bind's blocks use the same)
TIMM_BLOCK_KEYS = {
    "norm1_w": "norm1.weight",
    "norm1_b": "norm1.bias",
    "qkv_w": "attn.qkv.weight",
    "qkv_b": "attn.qkv.bias",
    "proj_w": "attn.proj.weight",
    "proj_b": "attn.proj.bias",
    "norm2_w": "norm2.weight",
    "norm2_b": "norm2.bias",
    "fc1_w": "mlp.fc1.weight",
    "fc1_b": "mlp.fc1.bias",
    "fc2_w": "mlp.fc2.weight",
    "fc2_b": "mlp.fc2.bias",
}


@dataclass
class ViTWeights:
    """A pretrained ViT in one canonical layout (tensors on CPU)."""

    patch_weight: torch.Tensor  # [D, C, p, p]
    patch_bias: torch.Tensor | None
    cls: torch.Tensor  # [D]
    pos: torch.Tensor  # [N, D] patch positions
    cls_pos: torch.Tensor | None  # [D]
    ln_pre: tuple[torch.Tensor, torch.Tensor] | None
    blocks: list[dict[str, torch.Tensor]]  # norm1_{w,b}, qkv_{w,b}, proj_{w,b}, norm2_{w,b}, fc1_{w,b}, fc2_{w,b}
    final_norm: tuple[torch.Tensor, torch.Tensor] | None
    proj: torch.Tensor | None  # [E, D] (CLIP visual projection)
    heads: int
    act: str
    norm_eps: float
    source: str = ""
    #: a convolutional stem's layers before the patch projection (bind encoders): ``{"weight": conv, "norm": BN state}``
    conv_stem: list[dict[str, Any]] | None = None
    patch_grid: tuple[int, int] | None = None  #: the position grid when it is not square (bind encoders)

    @property
    def width(self) -> int:
        return self.cls.shape[-1]

    @property
    def grid(self) -> tuple[int, int]:
        if self.patch_grid is not None:
            return self.patch_grid
        side = int(round(self.pos.shape[0] ** 0.5))
        if side * side != self.pos.shape[0]:
            raise ValueError(f"{self.source}: {self.pos.shape[0]} position embeddings do not form a square grid")
        return side, side


@dataclass
class InitReport:
    """What :func:`init_encoder_from_vit` loaded, adapted and left at its initialisation."""

    loaded: int = 0
    adapted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        import safetensors.torch

        return safetensors.torch.load_file(str(path))
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return sd


def _from_clip(sd: dict[str, torch.Tensor], heads: int, act: str, eps: float, source: str) -> ViTWeights:
    p = "vision_model."
    pos = sd[p + "embeddings.position_embedding.weight"]
    blocks = []
    i = 0
    while f"{p}encoder.layers.{i}.layer_norm1.weight" in sd:
        q = f"{p}encoder.layers.{i}."
        a = q + "self_attn."
        blocks.append(
            {
                "norm1_w": sd[q + "layer_norm1.weight"],
                "norm1_b": sd[q + "layer_norm1.bias"],
                "qkv_w": torch.cat([sd[a + f"{n}_proj.weight"] for n in "qkv"]),
                "qkv_b": torch.cat([sd[a + f"{n}_proj.bias"] for n in "qkv"]),
                "proj_w": sd[a + "out_proj.weight"],
                "proj_b": sd[a + "out_proj.bias"],
                "norm2_w": sd[q + "layer_norm2.weight"],
                "norm2_b": sd[q + "layer_norm2.bias"],
                "fc1_w": sd[q + "mlp.fc1.weight"],
                "fc1_b": sd[q + "mlp.fc1.bias"],
                "fc2_w": sd[q + "mlp.fc2.weight"],
                "fc2_b": sd[q + "mlp.fc2.bias"],
            }
        )
        i += 1
    return ViTWeights(
        patch_weight=sd[p + "embeddings.patch_embedding.weight"],
        patch_bias=None,
        cls=sd[p + "embeddings.class_embedding"],
        pos=pos[1:],
        cls_pos=pos[0],
        ln_pre=(sd[p + "pre_layrnorm.weight"], sd[p + "pre_layrnorm.bias"]),
        blocks=blocks,
        final_norm=(sd[p + "post_layernorm.weight"], sd[p + "post_layernorm.bias"]),
        proj=sd.get("visual_projection.weight"),
        heads=heads,
        act=act,
        norm_eps=eps,
        source=source,
    )


def _from_timm(sd: dict[str, torch.Tensor], heads: int | None, source: str) -> ViTWeights:
    width = sd["cls_token"].shape[-1]
    pos = sd["pos_embed"].reshape(-1, width)
    has_cls_pos = int(round((pos.shape[0] - 1) ** 0.5)) ** 2 == pos.shape[0] - 1  # timm's no_embed_class=False
    blocks = []
    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        q = f"blocks.{i}."
        blocks.append({k: sd[q + v] for k, v in TIMM_BLOCK_KEYS.items() if q + v in sd})
        i += 1
    norm = next(((sd[f"{n}.weight"], sd[f"{n}.bias"]) for n in ("norm", "fc_norm") if f"{n}.weight" in sd), None)
    return ViTWeights(
        patch_weight=sd["patch_embed.proj.weight"],
        patch_bias=sd.get("patch_embed.proj.bias"),
        cls=sd["cls_token"].reshape(width),
        pos=pos[1:] if has_cls_pos else pos,
        cls_pos=pos[0] if has_cls_pos else None,
        ln_pre=(sd["norm_pre.weight"], sd["norm_pre.bias"]) if "norm_pre.weight" in sd else None,
        blocks=blocks,
        final_norm=norm,
        proj=None,
        heads=heads or max(1, width // 64),
        act="gelu",
        norm_eps=1e-6,
        source=source,
    )


def bind_vit_weights(encoder: nn.Module, source: str = "") -> ViTWeights:
    """A trained bind encoder with a 2-D patch stem (image, depth, thermal, audio, ...) as :class:`ViTWeights`,
    convolutional stem and embedding projection included: LanguageBind's recipe of starting every modality from one
    image encoder, with a model of your own as the image encoder."""
    stem, cfg = _find_stem(getattr(encoder, "stem", encoder)), getattr(encoder, "cfg", None)
    if cfg is None or not isinstance(stem, PatchStem2d):
        raise ValueError(
            f"{source}: starts only from a bind encoder with a 2-D patch stem; got {type(stem or encoder).__name__}"
        )
    if encoder.cls_token is None or encoder.cls_token.shape[1] != 1:
        raise ValueError(f"{source}: needs exactly one CLS token (num_cls_tokens: {cfg.num_cls_tokens})")
    if any(not isinstance(b, Block) for b in encoder.trunk.blocks):
        raise ValueError(f"{source}: a divided space-time trunk; init reads joint-attention ViT blocks")
    sd = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    s = next(name for name, m in encoder.named_modules() if m is stem) + "."
    blocks = []
    for i in range(len(encoder.trunk.blocks)):
        b = f"trunk.blocks.{i}."
        qkv = [b + "attn.qkv."] if b + "attn.qkv.weight" in sd else [b + f"attn.{n}_proj." for n in "qkv"]
        w = {k: sd[b + v] for k, v in TIMM_BLOCK_KEYS.items() if not k.startswith("qkv")}
        w["qkv_w"] = torch.cat([sd[q + "weight"] for q in qkv])
        if qkv[0] + "bias" in sd:
            w["qkv_b"] = torch.cat([sd[q + "bias"] for q in qkv])
        blocks.append(w)
    layers, c = list(stem.conv or []), f"{s}conv."  # [Conv2d, BatchNorm2d, GELU] per layer
    conv = [
        {"weight": sd[f"{c}{i}.weight"], "norm": {k: sd[f"{c}{i + 1}.{k}"] for k in layers[i + 1].state_dict()}}
        for i in range(0, len(layers), 3)
    ]
    return ViTWeights(
        patch_weight=sd[s + "proj.weight"],
        patch_bias=sd.get(s + "proj.bias"),
        cls=sd["cls_token"].reshape(-1),
        pos=sd[s + "pos_embed"][0],
        cls_pos=None,
        ln_pre=(sd["ln_pre.weight"], sd["ln_pre.bias"]) if "ln_pre.weight" in sd else None,
        blocks=blocks,
        final_norm=(sd["head.norm.weight"], sd["head.norm.bias"]),
        proj=sd["head.proj.weight"],
        heads=cfg.heads,
        act=cfg.act,
        norm_eps=cfg.norm_eps,
        source=source,
        conv_stem=conv or None,
        patch_grid=tuple(stem.grid),
    )


def read_vit_weights(source: str | Path, heads: int | None = None) -> ViTWeights:
    """Read a pretrained ViT: a transformers CLIP directory (whole ``CLIPModel`` or ``CLIPVisionModel``), a timm
    ViT state dict (``.safetensors`` / ``.pth`` / ``.bin`` file, or a directory holding ``model.safetensors``), or
    one encoder of a saved bind model, named after ``#``: ``runs/first/model#image`` (:func:`bind_vit_weights`).

    ``heads`` is needed for timm state dicts, which do not record it (default: width / 64, the ViT convention).
    """
    text = str(source)
    if "#" in text:  # one encoder of a bind model
        from bind.model import BindModel

        directory, modality = text.rsplit("#", 1)
        model = BindModel.from_pretrained(directory)
        if modality not in model.modalities:
            raise ValueError(f"{text}: the model has no {modality!r} encoder to start from (it has {model.modalities})")
        return bind_vit_weights(model.encoder(modality), text)
    path = Path(source)
    if path.is_dir() and (path / "config.json").is_file():
        cfg = json.loads((path / "config.json").read_text())
        if "encoders" in cfg and "embed_dim" in cfg:
            raise ValueError(
                f"{source} is a bind model: name the encoder to start from after '#', e.g. {source}#"
                f"{next(iter(cfg['encoders']))} (it has {', '.join(cfg['encoders'])})"
            )
        if cfg.get("model_type") in ("clip", "clip_vision_model"):
            from bind.towers import load_clip_part

            tower = load_clip_part(str(path), "vision")
            vc = tower.config
            act = "quick_gelu" if vc.hidden_act == "quick_gelu" else "gelu"
            return _from_clip(tower.state_dict(), vc.num_attention_heads, act, vc.layer_norm_eps, str(path))
        heads = heads or cfg.get("num_heads") or cfg.get("model_args", {}).get("num_heads")
    if path.is_dir():
        files = [path / n for n in ("model.safetensors", "pytorch_model.bin", "model.pth") if (path / n).is_file()]
        if not files:
            raise FileNotFoundError(f"{path}: no model.safetensors / pytorch_model.bin / model.pth in the directory")
        path = files[0]
    if not path.is_file():
        raise FileNotFoundError(f"pretrained ViT {source} not found")
    sd = _load_state_dict(path)
    if "cls_token" in sd and "blocks.0.attn.qkv.weight" in sd:
        return _from_timm(sd, heads, str(source))
    if "vision_model.embeddings.class_embedding" in sd:
        width = sd["vision_model.embeddings.class_embedding"].shape[-1]
        return _from_clip(sd, heads or max(1, width // 64), "quick_gelu", 1e-5, str(source))
    raise ValueError(
        f"{source}: not a timm ViT (cls_token, blocks.N.attn.qkv) nor a CLIP vision state dict "
        f"(vision_model.*); first keys: {sorted(sd)[:5]}"
    )


def vit_encoder_overrides(weights: ViTWeights) -> dict[str, Any]:
    """:class:`~bind.config.EncoderConfig` fields that make a bind trunk the same shape as ``weights``."""
    b0 = weights.blocks[0]
    return dict(  # keywords: these are EncoderConfig fields (``depth`` is the trunk's)
        width=weights.width,
        depth=len(weights.blocks),
        heads=weights.heads,
        mlp_ratio=b0["fc1_w"].shape[0] / weights.width,
        act=weights.act,
        norm_eps=weights.norm_eps,
        ln_pre=weights.ln_pre is not None,
        qkv_bias="qkv_b" in b0,
        pool="cls",
    )


def adapt_in_channels(w: torch.Tensor, channels: int, mode: str = "mean") -> torch.Tensor:
    """Patch filters ``[D, C, ...]`` for ``channels`` input channels (``sum`` or ``mean`` of the source filters)."""
    if mode not in CHANNEL_MODES:
        raise ValueError(f"channel init {mode!r}; expected one of {CHANNEL_MODES}")
    if w.shape[1] == channels:
        return w
    base = w.sum(1, keepdim=True) / channels if mode == "sum" else w.mean(1, keepdim=True)
    return base.repeat(1, channels, *([1] * (w.dim() - 2)))


def inflate_temporal(w: torch.Tensor, frames: int, mode: str = "average") -> torch.Tensor:
    """``Conv2d`` filters ``[D, C, kh, kw]`` -> ``Conv3d`` filters ``[D, C, frames, kh, kw]`` (I3D inflation)."""
    if mode not in TEMPORAL_MODES:
        raise ValueError(f"temporal init {mode!r}; expected one of {TEMPORAL_MODES}")
    if mode == "average":
        return w[:, :, None].repeat(1, 1, frames, 1, 1) / frames
    out = w.new_zeros(w.shape[0], w.shape[1], frames, *w.shape[2:])
    out[:, :, frames // 2] = w
    return out


def _copy(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
    if dst.shape != src.shape:
        raise ValueError(
            f"cannot load {name}: pretrained {tuple(src.shape)} vs encoder {tuple(dst.shape)}; size the "
            "encoder with vit_encoder_overrides()"
        )
    dst.copy_(src.to(dst.dtype))


def _find_stem(stem: nn.Module) -> nn.Module | None:
    return next((m for m in stem.modules() if isinstance(m, (PatchStem2d, TubeletStem, SequencePatchStem))), None)


def _load_block(blk: Block, w: dict[str, torch.Tensor], report: InitReport) -> None:
    pairs = [
        (blk.norm1.weight, "norm1_w"),
        (blk.norm1.bias, "norm1_b"),
        (blk.attn.proj.weight, "proj_w"),
        (blk.attn.proj.bias, "proj_b"),
        (blk.norm2.weight, "norm2_w"),
        (blk.norm2.bias, "norm2_b"),
        (blk.mlp.fc1.weight, "fc1_w"),
        (blk.mlp.fc1.bias, "fc1_b"),
        (blk.mlp.fc2.weight, "fc2_w"),
        (blk.mlp.fc2.bias, "fc2_b"),
    ]
    attn = blk.attn
    if attn.fused_qkv:
        pairs.append((attn.qkv.weight, "qkv_w"))
        if attn.qkv.bias is not None and "qkv_b" in w:
            pairs.append((attn.qkv.bias, "qkv_b"))
    else:
        for i, lin in enumerate((attn.q_proj, attn.k_proj, attn.v_proj)):
            d = lin.weight.shape[0]
            _copy(lin.weight, w["qkv_w"][i * d : (i + 1) * d], "qkv_w")
            if lin.bias is not None and "qkv_b" in w:
                _copy(lin.bias, w["qkv_b"][i * d : (i + 1) * d], "qkv_b")
            report.loaded += 2
    for dst, key in pairs:
        _copy(dst, w[key], key)
        report.loaded += 1


@torch.no_grad()
def init_encoder_from_vit(
    encoder: nn.Module,
    weights: ViTWeights | str | Path,
    *,
    channel_init: str = "mean",
    temporal_init: str = "average",
    heads: int | None = None,
) -> InitReport:
    """Load a pretrained ViT into a :class:`~bind.encoder.ModalityEncoder` of any modality (in place).

    The trunk must have the source's shape (build it with :func:`vit_encoder_overrides`); the stem is adapted
    (channels, kernel size, tubelets, position grid) and what cannot be mapped is reported in ``skipped``.
    """
    if not isinstance(weights, ViTWeights):
        weights = read_vit_weights(weights, heads=heads)
    report = InitReport()
    if not hasattr(encoder, "trunk"):
        raise TypeError(f"{type(encoder).__name__} is not a bind ModalityEncoder (a transformers tower?)")
    blocks = list(encoder.trunk.blocks)
    if len(blocks) != len(weights.blocks):
        raise ValueError(
            f"{weights.source}: {len(weights.blocks)} blocks, the encoder has {len(blocks)}; size it "
            "with vit_encoder_overrides()"
        )
    for blk, w in zip(blocks, weights.blocks):
        if isinstance(blk, DividedSpaceTimeBlock):
            _load_block(blk.spatial, w, report)
            blk.temporal_attn.proj.weight.zero_()
            blk.temporal_attn.proj.bias.zero_()
        else:
            _load_block(blk, w, report)
    if any(isinstance(b, DividedSpaceTimeBlock) for b in blocks):
        report.adapted.append("divided space-time: temporal attention output projection zero-initialised")
    cls = weights.cls + (weights.cls_pos if weights.cls_pos is not None else 0)
    if encoder.cls_token is not None:
        encoder.cls_token.copy_(cls.to(encoder.cls_token.dtype).expand_as(encoder.cls_token))
        report.loaded += 1
    if weights.ln_pre is not None:
        if isinstance(encoder.ln_pre, nn.LayerNorm):
            _copy(encoder.ln_pre.weight, weights.ln_pre[0], "ln_pre")
            _copy(encoder.ln_pre.bias, weights.ln_pre[1], "ln_pre")
            report.loaded += 2
        else:
            report.skipped.append("ln_pre (the encoder has ln_pre: false)")
    head = getattr(encoder, "head", None)
    if weights.final_norm is not None and head is not None:
        _copy(head.norm.weight, weights.final_norm[0], "final norm")
        _copy(head.norm.bias, weights.final_norm[1], "final norm")
        report.loaded += 2
    if weights.proj is not None and head is not None:
        if head.proj.weight.shape == weights.proj.shape:
            head.proj.weight.copy_(weights.proj)
            report.loaded += 1
        else:
            report.skipped.append(f"projection {tuple(weights.proj.shape)} (head is {tuple(head.proj.weight.shape)})")
    _init_stem(encoder.stem, weights, channel_init, temporal_init, report)
    return report


def _input_filters(
    w: torch.Tensor, conv: nn.Module, stem: nn.Module, channel_init: str, report: InitReport
) -> torch.Tensor:
    """Source filters ``w`` for the input of ``conv`` (a stem's first layer): the pixel channels adapted by
    ``channel_init``, and a frame-difference stem's extra channels as copies of them (TSN's cross-modality
    initialisation, Wang et al. 2016) — a still clip, whose differences are zero, gets the source's response, a moving
    one the change of the source's features from the first step."""
    pixel_chans = conv.weight.shape[1] // (2 if getattr(stem, "frame_difference", False) else 1)
    if pixel_chans != w.shape[1]:
        report.adapted.append(f"input filters {w.shape[1]} -> {pixel_chans} channels ({channel_init})")
    w = adapt_in_channels(w, pixel_chans, channel_init)
    if pixel_chans == conv.weight.shape[1]:
        return w
    report.adapted.append("frame-difference channels start as copies of the pixel filters")
    return torch.cat([w, w], dim=1)


def _init_conv_stem(
    stem: nn.Module, weights: ViTWeights, channel_init: str, temporal_init: str, report: InitReport
) -> bool:
    """Load a bind source's convolutional stem (Conv2d -> Conv3d inflated like the tubelets); False (and reported)
    when the source has none or its channels differ."""
    layers = list(stem.conv)
    convs = list(zip(layers[0::3], layers[1::3]))
    src = weights.conv_stem or []
    if [s["weight"].shape[0] for s in src] != [c.weight.shape[0] for c, _ in convs]:
        report.skipped.append(
            f"conv stem and patch embedding (source conv {[s['weight'].shape[0] for s in src]}, encoder "
            f"{[c.weight.shape[0] for c, _ in convs]}; only the positions are loaded)"
        )
        return False
    for i, ((conv, norm), s) in enumerate(zip(convs, src)):
        w = s["weight"]
        if i == 0:
            w = _input_filters(w, conv, stem, channel_init, report)
        if isinstance(conv, nn.Conv3d):
            w = inflate_temporal(w, conv.weight.shape[2], temporal_init)
        _copy(conv.weight, w, f"stem conv {i}")
        norm.load_state_dict(s["norm"])
        report.loaded += 1 + len(s["norm"])
    if isinstance(convs[0][0], nn.Conv3d):
        report.adapted.append(f"conv stem inflated Conv2d -> Conv3d over {convs[0][0].weight.shape[2]} frames")
    return True


def _init_stem(
    stem_root: nn.Module, weights: ViTWeights, channel_init: str, temporal_init: str, report: InitReport
) -> None:
    stem = _find_stem(stem_root)
    if stem is None or isinstance(stem, SequencePatchStem):
        report.skipped.append(f"stem {type(stem or stem_root).__name__} (no patch convolution to load)")
        return
    conv, has_conv = stem.proj, getattr(stem, "conv", None) is not None
    if has_conv or weights.conv_stem:  # a projection of conv features: loaded only with the same conv stem
        if not (has_conv and _init_conv_stem(stem, weights, channel_init, temporal_init, report)):
            if not has_conv:
                report.skipped.append("patch embedding (the source projects conv features; only the positions load)")
            pos = resize_pos_2d(weights.pos[None], weights.grid, tuple(stem.grid))
            _copy(stem.pos_embed, pos, "position embedding")
            report.loaded += 1
            return
        w = weights.patch_weight
    else:
        w = _input_filters(weights.patch_weight, conv, stem, channel_init, report)
    kernel = tuple(conv.weight.shape[-2:])
    if kernel != tuple(w.shape[-2:]):
        report.adapted.append(f"patch kernel {tuple(w.shape[-2:])} -> {kernel} (PI-resize)")
        w = resample_patch_embed(w, list(kernel), interpolation="bilinear", antialias=False)
    if isinstance(conv, nn.Conv3d):
        frames = conv.weight.shape[2]
        w = inflate_temporal(w, frames, temporal_init)
        report.adapted.append(f"tubelet inflation Conv2d -> Conv3d over {frames} frames ({temporal_init})")
    _copy(conv.weight, w, "patch embedding")
    report.loaded += 1
    target_grid = tuple(stem.grid)
    pos = resize_pos_2d(weights.pos[None], weights.grid, target_grid)
    if target_grid != weights.grid:
        report.adapted.append(f"position grid {weights.grid} -> {target_grid} (bicubic)")
    if weights.patch_bias is not None:
        if conv.bias is not None:
            conv.bias.copy_(weights.patch_bias)
        elif isinstance(getattr(stem, "norm", nn.Identity()), nn.Identity):
            pos = pos + weights.patch_bias  # the bias adds the same vector to every patch token
            report.adapted.append("patch-embedding bias folded into the position embedding")
        else:
            report.skipped.append("patch-embedding bias (the stem has no bias and normalises after the projection)")
    _copy(stem.pos_embed, pos, "position embedding")
    report.loaded += 1
