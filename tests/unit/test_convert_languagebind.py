"""LanguageBind -> bind conversion against references:

* image / depth / thermal: transformers' ``CLIPModel`` with a tiny config *is* the reference (LanguageBind's
  non-video models are HF CLIP); its state dict is the published key layout;
* video / audio: a hand-written LanguageBind vision tower (``modeling_video.py``: temporal embedding + temporal
  attention per layer, frame CLS averaged after ``post_layernorm``; audio: a non-square 8 x 74-style position grid),
  cross-checked against ``CLIPVisionModel`` on images;
* LoRA: the reference encoder wrapped by peft itself (``get_peft_model``), saved with peft's keys, run unmerged.

Each checkpoint is written as an HF-style directory (config.json + pytorch_model.bin + CLIP tokenizer files).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModel

import bind
from bind.checkpoints import CheckpointError, convert_languagebind
from bind.checkpoints.languagebind import merge_lora

VOCAB, CONTEXT, PROJ, IMG, FRAMES, MEL, TARGET = 40, 12, 16, 28, 4, 28, 70
TEXT = dict(
    vocab_size=VOCAB,
    hidden_size=24,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=CONTEXT,
    hidden_act="gelu",
    eos_token_id=VOCAB - 1,
    bos_token_id=VOCAB - 2,
    pad_token_id=VOCAB - 1,
)
VISION = dict(
    hidden_size=32,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=IMG,
    patch_size=14,
    hidden_act="gelu",
)
LB_EXTRAS = dict(
    add_time_attn=False,
    num_frames=1,
    lora_r=0,
    lora_alpha=16,
    lora_dropout=0.0,
    num_mel_bins=0,
    target_length=0,
    force_patch_dropout=0.0,
)


def randomize(module: nn.Module, seed: int) -> None:
    """Non-trivial values everywhere (LayerNorm gains near 1, biases and embeddings small)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("logit_scale"):
                p.fill_(math.log(30.0))
            elif p.ndim == 1 and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim > 1 else 0.1) / math.sqrt(p.shape[-1]))


# --- hand-written LanguageBind vision tower (HF CLIP math + modeling_video.py's temporal attention) ---------------


class RefAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads, self.scale = heads, (d // heads) ** -0.5
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        b, n, d = x.shape

        def split(t):
            return t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.q_proj(x) * self.scale), split(self.k_proj(x)), split(self.v_proj(x))
        out = (q @ k.transpose(-1, -2)).softmax(dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class RefMLP(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class RefLayer(nn.Module):
    def __init__(self, d, heads, hidden, frames):
        super().__init__()
        self.self_attn, self.mlp = RefAttention(d, heads), RefMLP(d, hidden)
        self.layer_norm1, self.layer_norm2 = nn.LayerNorm(d, eps=1e-5), nn.LayerNorm(d, eps=1e-5)
        self.t = frames
        if frames:
            self.temporal_embedding = nn.Parameter(torch.zeros(1, frames, d))
            self.temporal_attn = RefAttention(d, heads)
            self.temporal_layer_norm1 = nn.LayerNorm(d, eps=1e-5)

    def forward(self, x):  # [(b t), n, d]
        if self.t:
            bt, n, d = x.shape
            t = self.t
            x = x.reshape(bt // t, t, n, d).transpose(1, 2).reshape(-1, t, d)  # (b t) n d -> (b n) t d
            x = x + self.temporal_embedding[:, :t]
            x = x + self.temporal_attn(self.temporal_layer_norm1(x))
            x = x.reshape(bt // t, n, t, d).transpose(1, 2).reshape(bt, n, d)
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class RefEncoder(nn.Module):
    def __init__(self, depth, *args):
        super().__init__()
        self.layers = nn.ModuleList(RefLayer(*args) for _ in range(depth))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class RefEmbeddings(nn.Module):
    def __init__(self, d, patch, grid):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(d))
        self.patch_embedding = nn.Conv2d(3, d, patch, patch, bias=False)
        self.position_embedding = nn.Embedding(grid[0] * grid[1] + 1, d)

    def forward(self, x):
        p = self.patch_embedding(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(p.shape[0], 1, -1), p], dim=1)
        return x + self.position_embedding.weight[None]


class RefVision(nn.Module):
    def __init__(self, grid=(IMG // 14, IMG // 14), frames=0, vision=VISION):
        super().__init__()
        d = vision["hidden_size"]
        self.embeddings = RefEmbeddings(d, vision["patch_size"], grid)
        self.pre_layrnorm, self.post_layernorm = nn.LayerNorm(d, eps=1e-5), nn.LayerNorm(d, eps=1e-5)
        self.encoder = RefEncoder(
            vision["num_hidden_layers"], d, vision["num_attention_heads"], vision["intermediate_size"], frames
        )

    def forward(self, pixel_values):
        if pixel_values.ndim == 5:  # b c t h w -> (b t) c h w
            b, _, t = pixel_values.shape[:3]
            pixel_values = pixel_values.transpose(1, 2).flatten(0, 1)
        else:
            b, t = pixel_values.shape[0], 1
        x = self.pre_layrnorm(self.embeddings(pixel_values))
        encoder = self.encoder.get_base_model() if hasattr(self.encoder, "get_base_model") else self.encoder
        pooled = self.post_layernorm(encoder(x)[:, 0])
        return pooled.reshape(b, t, -1).mean(1)


class RefLanguageBind(nn.Module):
    """``LanguageBindVideo`` / ``LanguageBindAudio``: HF CLIP text tower + the hand-written vision tower."""

    def __init__(self, vision: RefVision, text=TEXT, proj=PROJ):
        super().__init__()
        self.text_model = CLIPTextModel(CLIPTextConfig(**text))  # keys text_model.* as in CLIPModel
        self.vision_model = vision
        self.visual_projection = nn.Linear(vision.pre_layrnorm.normalized_shape[0], proj, bias=False)
        self.text_projection = nn.Linear(text["hidden_size"], proj, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(1.0))

    def image(self, x):  # LanguageBind.forward with use_temp: normalised, times exp(logit_scale)
        return F.normalize(self.visual_projection(self.vision_model(x)), dim=-1) * self.logit_scale.exp()

    def text(self, ids):
        return F.normalize(self.text_projection(self.text_model(input_ids=ids).pooler_output), dim=-1)


# --- writing HF-style directories ------------------------------------------------------------------------------------


def write_tokenizer(d) -> None:
    chars = list("abcdefghijklmnopq")  # ids 0..33, merges, then <|startoftext|>, <|endoftext|> = VOCAB - 1
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    merges = ["#version: 0.2", "a b", "ab c</w>", "d e", "f g"]
    for m in merges[1:]:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    assert len(vocab) == VOCAB
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("\n".join(merges) + "\n")
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LanguageBindImageTokenizer"}))


def write_dir(d, state: dict, modality: str, vision_extra: dict | None = None, vision: dict | None = None):
    d.mkdir(parents=True, exist_ok=True)
    name = {
        "video": "LanguageBindVideo",
        "audio": "LanguageBindAudio",
        "depth": "LanguageBindDepth",
        "thermal": "LanguageBindThermal",
        "image": "LanguageBindImage",
    }[modality]
    vc = {**VISION, **(vision or {}), **LB_EXTRAS, **(vision_extra or {})}
    cfg = {
        "architectures": [name],
        "model_type": name,
        "projection_dim": PROJ,
        "logit_scale_init_value": 2.6592,
        "text_config": dict(TEXT),
        "vision_config": vc,
    }
    (d / "config.json").write_text(json.dumps(cfg))
    # checkpoints saved by older transformers also hold the position_ids buffers
    state = dict(state)
    state.setdefault("text_model.embeddings.position_ids", torch.arange(CONTEXT)[None])
    torch.save(state, d / "pytorch_model.bin")
    write_tokenizer(d)
    return d


def text_ids(batch=3):
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, VOCAB - 2, (batch, CONTEXT), generator=g)
    ids[:, 0] = VOCAB - 2
    for i, n in enumerate((4, CONTEXT - 1, 7)[:batch]):  # EOT (the largest id) then EOT padding, as CLIPTokenizer
        ids[i, n:] = VOCAB - 1
    return ids


def hf_clip(seed: int, act: str = "gelu") -> CLIPModel:
    cfg = CLIPConfig(text_config=TEXT, vision_config={**VISION, "hidden_act": act}, projection_dim=PROJ)
    model = CLIPModel(cfg)
    randomize(model, seed)
    return model.eval()


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("languagebind")
    models = {"image": hf_clip(1, "quick_gelu"), "depth": hf_clip(2), "thermal": hf_clip(3)}
    dirs = {}
    for m, model in models.items():
        sd = model.state_dict()
        sd["vision_model.embeddings.position_ids"] = torch.arange((IMG // 14) ** 2 + 1)[None]
        dirs[m] = write_dir(
            root / f"LanguageBind_{m.capitalize()}", sd, m, vision={"hidden_act": model.config.vision_config.hidden_act}
        )
    return models, dirs


@pytest.mark.parametrize("modality", ["image", "depth", "thermal"])
def test_hf_clip_modalities_match_transformers(hf_dirs, tmp_path, modality):
    models, dirs = hf_dirs
    ref = models[modality]
    out = convert_languagebind(dirs[modality], tmp_path / "out")
    model = bind.load_model(out)
    assert model.modalities == ["text", modality]
    x, ids = torch.randn(2, 3, IMG, IMG), text_ids()
    with torch.no_grad():
        want_x = F.normalize(ref.get_image_features(pixel_values=x).pooler_output, dim=-1) * ref.logit_scale.exp()
        want_t = F.normalize(ref.get_text_features(input_ids=ids).pooler_output, dim=-1)
        got_x = model.encode(modality, x) * model.logit_scale(modality)
        got_t = model.encode("text", ids) * model.logit_scale("text")
    assert (got_x - want_x).abs().max().item() <= 1e-5 * 30
    assert (got_t - want_t).abs().max().item() <= 1e-5
    assert model.logit_scale(modality).item() == pytest.approx(30.0, rel=1e-6)
    assert model.logit_scale("text").item() == 1.0


def test_hand_written_reference_agrees_with_transformers():
    """The video/audio reference tower computes HF CLIP's vision math (checked on images, frames=0)."""
    hf = CLIPVisionModel(CLIPVisionConfig(**VISION))
    randomize(hf, 7)
    ref = RefVision()
    missing, unexpected = ref.load_state_dict(
        {k.removeprefix("vision_model."): v for k, v in hf.state_dict().items()}, strict=False
    )
    assert not missing and not unexpected
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        torch.testing.assert_close(ref(x), hf.eval()(pixel_values=x).pooler_output, atol=1e-5, rtol=0)


def video_reference(seed: int) -> RefLanguageBind:
    ref = RefLanguageBind(RefVision(frames=FRAMES))
    randomize(ref, seed)
    return ref.eval()


def test_video_ft_divided_space_time_matches_reference(tmp_path):
    ref = video_reference(11)
    d = write_dir(
        tmp_path / "LanguageBind_Video_FT", ref.state_dict(), "video", {"add_time_attn": True, "num_frames": FRAMES}
    )
    model = bind.load_model(convert_languagebind(d, tmp_path / "out"))
    enc = model.encoder("video")
    assert enc.cfg.attention == "divided" and enc.cfg.stem["num_frames"] == FRAMES
    x = torch.randn(2, 3, FRAMES, IMG, IMG)  # [B, C, T, H, W]
    with torch.no_grad():
        want, got = ref.image(x), model.encode("video", x) * model.logit_scale("video")
        want_t, got_t = ref.text(text_ids()), model.encode("text", text_ids())
    assert (got - want).abs().max().item() <= 1e-5 * math.e
    assert (got_t - want_t).abs().max().item() <= 1e-5


@pytest.mark.parametrize("peft_style", ["base_layer", "legacy"])
def test_video_lora_checkpoint_is_merged(tmp_path, peft_style):
    from peft import LoraConfig, get_peft_model

    ref = video_reference(12)
    targets = ["temporal_attn.q_proj", "temporal_attn.k_proj", "temporal_attn.v_proj", "temporal_attn.out_proj"]
    lora = get_peft_model(
        ref.vision_model.encoder, LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, bias="none")
    )
    ref.vision_model.encoder = lora  # LanguageBind's convert_to_lora
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.3)
    sd = ref.state_dict()
    keys = [k for k in sd if "lora_A" in k]
    assert keys and all(k.startswith("vision_model.encoder.base_model.model.layers.") for k in keys)
    if peft_style == "legacy":  # peft < 0.7 / single-adapter layout: no base_layer, no adapter name
        sd = {k.replace(".base_layer.", ".").replace(".default.", "."): v for k, v in sd.items()}
    d = write_dir(
        tmp_path / "LanguageBind_Video",
        sd,
        "video",
        {"add_time_attn": True, "num_frames": FRAMES, "lora_r": 4, "lora_alpha": 8},
    )
    model = bind.load_model(convert_languagebind(d, tmp_path / "out"))
    x = torch.randn(2, 3, FRAMES, IMG, IMG)
    with torch.no_grad():
        want = ref.eval().image(x)  # peft's unmerged forward: W x + (alpha / r) B A x
        got = model.encode("video", x) * model.logit_scale("video")
    assert (got - want).abs().max().item() <= 1e-5 * math.e


def test_audio_non_square_grid_matches_reference(tmp_path):
    ref = RefLanguageBind(RefVision(grid=(MEL // 14, TARGET // 14)))
    randomize(ref, 13)
    d = write_dir(
        tmp_path / "LanguageBind_Audio_FT",
        ref.eval().state_dict(),
        "audio",
        {"num_mel_bins": MEL, "target_length": TARGET},
    )
    model = bind.load_model(convert_languagebind(d, tmp_path / "out"))
    assert model.encoder("audio").cfg.preprocess["num_mel_bins"] == MEL
    x = torch.randn(2, 3, MEL, TARGET)  # [B, 3 windows, mel, frames]
    with torch.no_grad():
        want, got = ref.image(x), model.encode("audio", x) * model.logit_scale("audio")
    assert (got - want).abs().max().item() <= 1e-5 * math.e


def test_several_checkpoints_make_one_model_with_the_last_text_tower(hf_dirs, tmp_path):
    models, dirs = hf_dirs
    out = convert_languagebind([dirs["depth"], dirs["thermal"]], tmp_path / "out")
    model = bind.load_model(out)
    assert model.modalities == ["text", "depth", "thermal"]
    ids = text_ids()
    with torch.no_grad():
        want = F.normalize(models["thermal"].get_text_features(input_ids=ids).pooler_output, dim=-1)
        want_d = F.normalize(
            models["depth"].get_image_features(pixel_values=torch.ones(1, 3, IMG, IMG)).pooler_output, dim=-1
        )
        assert (model.encode("text", ids) - want).abs().max() <= 1e-5
        assert (model.encode("depth", torch.ones(1, 3, IMG, IMG)) - want_d).abs().max() <= 1e-5


def test_round_trip_and_tokenizer(hf_dirs, tmp_path):
    _, dirs = hf_dirs
    out = convert_languagebind(dirs["image"], tmp_path / "out")
    a = bind.load_model(out)
    b = bind.load_model(a.save_pretrained(tmp_path / "again"))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    ids = a.prepare("text", ["abc", "de"])  # LanguageBind's tokenizer files, loaded as a plain CLIP tokenizer
    assert ids.shape == (2, CONTEXT) and ids[0, 0] == VOCAB - 2 and ids[0, 2] == VOCAB - 1
    x = torch.randn(1, 3, IMG, IMG)
    with torch.no_grad():
        assert torch.equal(a.encode("image", x), b.encode("image", x))
        assert torch.equal(a.encode("text", ids), b.encode("text", ids))


def test_load_model_through_named_config(hf_dirs, tmp_path, monkeypatch):
    models, dirs = hf_dirs
    raw = bind.registry.model_config_dict("languagebind-depth")
    raw["embed_dim"] = PROJ
    raw["defaults"].update(width=32, depth=2, heads=4, mlp_ratio=3.0)
    raw["encoders"]["text"].update(width=24, depth=2, heads=2, mlp_ratio=2.0)
    raw["encoders"]["text"]["stem"].update(vocab_size=VOCAB, context_length=CONTEXT, eot_token_id=VOCAB - 1)
    raw["encoders"]["depth"]["preprocess"].update(size=IMG, crop_size=IMG)
    (tmp_path / "languagebind-depth.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("BIND_MODEL_CONFIGS", str(tmp_path))
    model = bind.load_model("languagebind-depth", checkpoint=str(dirs["depth"]))
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        want = F.normalize(models["depth"].get_image_features(pixel_values=x).pooler_output, dim=-1)
        assert (model.encode("depth", x) - want).abs().max() <= 1e-5
    raw["defaults"]["act"] = "quick_gelu"  # the checkpoint's config.json says gelu
    (tmp_path / "languagebind-depth.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(CheckpointError, match=r"depth\.act: checkpoint 'gelu', model 'quick_gelu'"):
        bind.load_model("languagebind-depth", checkpoint=str(dirs["depth"]))


def test_bad_checkpoints_fail_naming_the_keys(hf_dirs, tmp_path):
    models, dirs = hf_dirs
    sd = models["thermal"].state_dict()

    def convert(state, name):
        d = write_dir(tmp_path / name, state, "thermal")
        with pytest.raises(CheckpointError) as err:
            convert_languagebind(d, tmp_path / f"{name}-out")
        assert not (tmp_path / f"{name}-out").exists()  # nothing half-converted is written
        return str(err.value)

    msg = convert({**sd, "vision_model.encoder.layers.0.mystery.weight": torch.zeros(2)}, "unknown")
    assert "unknown checkpoint keys" in msg and "vision_model.encoder.layers.0.mystery.weight" in msg
    msg = convert({k: v for k, v in sd.items() if k != "vision_model.post_layernorm.bias"}, "missing")
    assert "missing checkpoint keys" in msg and "vision_model.post_layernorm.bias" in msg
    msg = convert({**sd, "visual_projection.weight": torch.zeros(PROJ, 7)}, "misshaped")
    assert "misshaped" in msg
    assert "visual_projection.weight [16, 7] -> encoders.thermal.head.proj.weight [16, 32]" in msg
    lora_a = {
        **sd,
        "vision_model.encoder.base_model.model.layers.0.self_attn.q_proj.lora_A.default.weight": torch.zeros(2, 32),
    }
    assert "lora_A without its pair" in convert(lora_a, "half-lora")


def test_pickled_code_in_pytorch_model_bin_is_refused(hf_dirs, tmp_path):
    models, _ = hf_dirs
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    d = write_dir(tmp_path / "LanguageBind_Image", {**models["image"].state_dict(), "x": Payload()}, "image")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: refused: the pickle carries code"):
        convert_languagebind(d, tmp_path / "out")
    assert not marker.exists()


def test_merge_lora_formula():
    w, a, b = torch.randn(6, 5), torch.randn(2, 5), torch.randn(6, 2)
    merged = merge_lora(
        {
            "m.base_model.model.fc.base_layer.weight": w,
            "m.base_model.model.fc.lora_A.default.weight": a,
            "m.base_model.model.fc.lora_B.default.weight": b,
        },
        alpha=16,
        rank=2,
        origin="t",
    )
    assert merged.keys() == {"m.fc.weight"}
    torch.testing.assert_close(merged["m.fc.weight"], w + 8 * b @ a)


def test_cli_convert_languagebind(hf_dirs, tmp_path, capsys):
    from bind.cli import main

    _, dirs = hf_dirs
    assert main(["convert", "languagebind", "--checkpoint", str(dirs["thermal"]), "--out", str(tmp_path / "out")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["converted"] == "languagebind"
    model = bind.load_model(tmp_path / "out")
    assert model.modalities == ["text", "thermal"]
    assert model.config.extra["converted_from"]["dirs"] == ["LanguageBind_Thermal"]
    assert main(["convert", "languagebind", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o2")]) == 1
    assert "no config.json" in capsys.readouterr().err


@pytest.mark.parametrize("modality", ["video", "audio"])
def test_named_configs_take_full_size_languagebind_layout(modality):
    """languagebind-video / -audio are the published architectures: a full-size LanguageBind state dict (ViT-L/14
    + CLIP-L text, shapes only on the meta device) and its config.json convert with nothing unknown, missing,
    misshaped or differently configured."""
    from bind.checkpoints.common import load_checked
    from bind.checkpoints.languagebind import _check_architecture, convert_languagebind_tensors
    from bind.factory import expand_config
    from bind.model import BindModel

    text = dict(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="gelu",
        eos_token_id=2,
    )
    vision = dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        hidden_act="gelu",
        **LB_EXTRAS,
    )
    if modality == "video":
        vision.update(add_time_attn=True, num_frames=8, lora_r=16)
        grid = (16, 16)
    else:
        vision.update(num_mel_bins=112, target_length=1036)
        grid = (8, 74)
    cfg = {"projection_dim": 768, "text_config": text, "vision_config": vision}
    with torch.device("meta"):
        ref = RefLanguageBind(RefVision(grid, 8 if modality == "video" else 0, vision), text, 768)
        model = BindModel(expand_config(bind.registry.model_config_dict(f"languagebind-{modality}")))
    _check_architecture(model, cfg, modality, "full-size")
    load_checked(model, convert_languagebind_tensors(ref.state_dict(), cfg, model, modality, "full-size"), "full-size")
    assert model.encoder(modality).cfg.preprocess["preset"] == "languagebind"
