"""ImageBind -> bind conversion: a tiny ImageBind written with the published module tree (so its state dict has the
published key layout) is saved as a real ``.pth``, converted, and every modality's forward is compared with the
reference forward (``nn.MultiheadAttention`` trunks, ImageBind's head order and logit-scale postprocessors).

The reference below restates facebookresearch/ImageBind (imagebind_model.py, multimodal_preprocessors.py,
transformer.py, helpers.py) in as few lines as keep its module names.
"""

from __future__ import annotations

import copy
import gzip
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bind
from bind.checkpoints import CheckpointError, convert_imagebind, convert_imagebind_state_dict
from bind.checkpoints.common import bytes_to_unicode
from bind.factory import expand_config
from bind.model import BindModel
from bind.registry import get_modality, model_config_dict

# --- reference ImageBind (published module names) -----------------------------------------------------------------


class PadIm2Video(nn.Module):
    def forward(self, x):
        x = x.unsqueeze(2) if x.ndim == 4 else x
        return x.repeat(1, 1, 2, 1, 1) if x.shape[2] == 1 else x


class PatchEmbedGeneric(nn.Module):
    def __init__(self, proj_stem, norm_layer=None):
        super().__init__()
        self.proj = nn.Sequential(*proj_stem) if len(proj_stem) > 1 else proj_stem[0]
        self.norm_layer = norm_layer

    def forward(self, x):
        x = self.proj(x).flatten(2).transpose(1, 2)
        return self.norm_layer(x) if self.norm_layer is not None else x


class PosHelper(nn.Module):
    def __init__(self, n, d):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, n, d))


class RGBDTPreprocessor(nn.Module):
    def __init__(self, stem_name, stem, num_patches, d):
        super().__init__()
        self.stem_name = stem_name
        setattr(self, stem_name, stem)
        self.pos_embedding_helper = PosHelper(1 + num_patches, d)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d))

    def forward(self, x):
        tokens = getattr(self, self.stem_name)(x)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        return tokens + self.pos_embedding_helper.pos_embed, None, None


class TextPreprocessor(nn.Module):
    def __init__(self, vocab, context, d):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, d)
        self.pos_embed = nn.Parameter(torch.randn(1, context, d))
        self.register_buffer("mask", torch.full((context, context), float("-inf")).triu_(1))

    def forward(self, text):
        return self.token_embedding(text) + self.pos_embed, self.mask, text.argmax(dim=-1)


class IMUPreprocessor(nn.Module):
    def __init__(self, length, kernel, d):
        super().__init__()
        self.kernel_size = kernel
        self.imu_stem = PatchEmbedGeneric([nn.Linear(6 * kernel, d, bias=False)], nn.LayerNorm(d))
        self.pos_embed = nn.Parameter(torch.randn(1, length // kernel + 1, d))
        self.cls_token = nn.Parameter(torch.randn(1, 1, d))

    def forward(self, imu):
        imu = imu.unfold(-1, self.kernel_size, self.kernel_size).permute(0, 2, 1, 3)
        imu = imu.reshape(imu.size(0), imu.size(1), -1)
        tokens = self.imu_stem.norm_layer(self.imu_stem.proj(imu))
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        return tokens + self.pos_embed, None, None


class Mlp(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class BlockWithMasking(nn.Module):
    def __init__(self, d, heads, add_bias_kv):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, bias=True, add_bias_kv=add_bias_kv)
        self.norm_1, self.norm_2, self.mlp = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6), Mlp(d)

    def forward(self, x, attn_mask):
        y = self.norm_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.norm_2(x))


class SeqFirst(nn.Module):  # EinOpsRearrange("b l d -> l b d"): no parameters
    def forward(self, x):
        return x.transpose(0, 1)


class SimpleTransformer(nn.Module):
    def __init__(self, d, depth, heads, pre_ln, add_bias_kv):
        super().__init__()
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(d, eps=1e-6) if pre_ln else nn.Identity(), SeqFirst())
        self.blocks = nn.Sequential(*[BlockWithMasking(d, heads, add_bias_kv) for _ in range(depth)])

    def forward(self, tokens, attn_mask=None):
        x = self.pre_transformer_layer(tokens)
        for blk in self.blocks:
            x = blk(x, attn_mask)
        return x.transpose(0, 1)


class SelectElement(nn.Module):
    def forward(self, x):
        return x[:, 0, ...]


class SelectEOSAndProject(nn.Module):
    def __init__(self, proj):
        super().__init__()
        self.proj = proj

    def forward(self, x, seq_len):
        return self.proj(x[torch.arange(x.shape[0]), seq_len])


class Normalize(nn.Module):
    def forward(self, x):
        return F.normalize(x, dim=-1, p=2)


class LearnableLogitScaling(nn.Module):
    def __init__(self, init, learnable):
        super().__init__()
        value = torch.ones([]) * math.log(init)
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def forward(self, x):
        return torch.clip(self.log_logit_scale.exp(), max=100) * x


# tiny dimensions, one distinct shape per modality; real ImageBind-Huge layout otherwise
DIMS = {
    "vision": (32, 2, 4),
    "text": (24, 2, 2),
    "audio": (16, 2, 2),
    "depth": (24, 1, 3),
    "thermal": (16, 2, 4),
    "imu": (16, 2, 2),
}
OUT, VOCAB_MERGES, CONTEXT = 20, ["c a", "ca t</w>", "d o", "do g</w>"], 16
IMG, MAP, MEL, AUDIO_LEN, IMU_LEN = 28, 32, 36, 46, 64


class ImageBindReference(nn.Module):
    def __init__(
        self,
        vocab,
        dims=DIMS,
        out=OUT,
        img=IMG,
        map_size=MAP,
        mel=MEL,
        audio_len=AUDIO_LEN,
        imu_len=IMU_LEN,
        context=CONTEXT,
    ):
        super().__init__()
        dv, da, dd, dt, di = (dims[m][0] for m in ("vision", "audio", "depth", "thermal", "imu"))
        grid_audio = ((mel - 16) // 10 + 1) * ((audio_len - 16) // 10 + 1)
        self.modality_preprocessors = nn.ModuleDict(
            {
                "vision": RGBDTPreprocessor(
                    "rgbt_stem",
                    PatchEmbedGeneric([PadIm2Video(), nn.Conv3d(3, dv, (2, 14, 14), (2, 14, 14), bias=False)]),
                    (img // 14) ** 2,
                    dv,
                ),
                "text": TextPreprocessor(vocab, context, dims["text"][0]),
                "audio": RGBDTPreprocessor(
                    "rgbt_stem",
                    PatchEmbedGeneric([nn.Conv2d(1, da, 16, 10, bias=False)], nn.LayerNorm(da)),
                    grid_audio,
                    da,
                ),
                "depth": RGBDTPreprocessor(
                    "depth_stem",
                    PatchEmbedGeneric([nn.Conv2d(1, dd, 16, 16, bias=False)], nn.LayerNorm(dd)),
                    (map_size // 16) ** 2,
                    dd,
                ),
                "thermal": RGBDTPreprocessor(
                    "rgbt_stem",
                    PatchEmbedGeneric([nn.Conv2d(1, dt, 16, 16, bias=False)], nn.LayerNorm(dt)),
                    (map_size // 16) ** 2,
                    dt,
                ),
                "imu": IMUPreprocessor(imu_len, 8, di),
            }
        )
        self.modality_trunks = nn.ModuleDict(
            {
                m: SimpleTransformer(d, depth, heads, pre_ln=m == "vision", add_bias_kv=m not in ("vision", "text"))
                for m, (d, depth, heads) in dims.items()
            }
        )
        heads = {
            m: nn.Sequential(nn.LayerNorm(d, eps=1e-6), SelectElement(), nn.Linear(d, out, bias=False))
            for m, (d, _, _) in dims.items()
            if m not in ("text", "imu")
        }
        heads["text"] = SelectEOSAndProject(
            nn.Sequential(nn.LayerNorm(dims["text"][0], eps=1e-6), nn.Linear(dims["text"][0], out, bias=False))
        )
        heads["imu"] = nn.Sequential(
            nn.LayerNorm(di, eps=1e-6), SelectElement(), nn.Dropout(0.5), nn.Linear(di, out, bias=False)
        )
        self.modality_heads = nn.ModuleDict(heads)
        post = {"vision": Normalize(), "text": nn.Sequential(Normalize(), LearnableLogitScaling(1 / 0.07, True))}
        for m, s in (("audio", 20.0), ("depth", 5.0), ("thermal", 10.0), ("imu", 5.0)):
            post[m] = nn.Sequential(Normalize(), LearnableLogitScaling(s, False))
        self.modality_postprocessors = nn.ModuleDict(post)

    def forward(self, inputs):
        out = {}
        for m, x in inputs.items():
            reduce = x.ndim >= 5  # several clips per sample (ImageBind's reduce_list)
            if reduce:
                b, s = x.shape[:2]
                x = x.reshape(b * s, *x.shape[2:])
            tokens, mask, seq_len = self.modality_preprocessors[m](x)
            tokens = self.modality_trunks[m](tokens, attn_mask=mask)
            y = self.modality_heads[m](tokens, seq_len) if m == "text" else self.modality_heads[m](tokens)
            y = self.modality_postprocessors[m](y)
            out[m] = y.reshape(b, s, -1).mean(dim=1) if reduce else y
        return out


def make_reference(vocab: int) -> ImageBindReference:
    torch.manual_seed(0)
    ref = ImageBindReference(vocab)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "log_logit_scale" in name:
                p.fill_(math.log(12.5))  # text: learnable, not the init value
            elif p.ndim == 1 and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))  # LayerNorm gains near 1
            else:
                p.copy_(torch.randn_like(p) * (0.5 if p.ndim > 1 else 0.1) / math.sqrt(max(p.shape[-1], 1)))
    return ref.eval()


# --- bind side ---------------------------------------------------------------------------------------------------


def tiny_config(vocab: int, modalities: tuple[str, ...] | None = None) -> dict:
    """The imagebind-huge named config with tiny dimensions (the only change)."""
    raw = model_config_dict("imagebind-huge")
    raw["name"], raw["embed_dim"] = "imagebind-tiny-test", OUT
    names = {"image": "vision", "text": "text", "audio": "audio", "depth": "depth", "thermal": "thermal", "imu": "imu"}
    for m, ib in names.items():
        d, depth, heads = DIMS[ib]
        raw["encoders"][m].update(width=d, depth=depth, heads=heads)
    enc = raw["encoders"]
    enc["image"]["preprocess"].update(size=IMG, crop_size=IMG)
    enc["text"]["stem"].update(vocab_size=vocab, context_length=CONTEXT, eot_token_id=vocab - 1)
    enc["text"]["preprocess"].update(context_length=CONTEXT)
    enc["audio"]["preprocess"].update(AUDIO_PREPROCESS)
    for m in ("depth", "thermal"):
        enc[m]["preprocess"].update(size=MAP, crop_size=MAP)
    enc["imu"]["preprocess"].update(window=IMU_LEN)
    if modalities is not None:
        raw["encoders"] = {m: raw["encoders"][m] for m in modalities}
    return raw


AUDIO_PREPROCESS = {"num_mel_bins": MEL, "target_length": AUDIO_LEN}


def write_bpe(path, merges=VOCAB_MERGES) -> int:
    """A gzipped CLIP-format BPE merges file; returns the vocabulary size it yields."""
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(["#version: 0.2", *merges]) + "\n")
    return 2 * len(bytes_to_unicode()) + len(merges) + 2


def example_inputs(vocab: int, batch: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab - 2, (batch, CONTEXT), generator=g)
    for i, n in enumerate((5, CONTEXT - 1, 9)[:batch]):  # EOT (the largest id) then padding with 0
        ids[i, n], ids[i, n + 1 :] = vocab - 1, 0
    return {
        "vision": torch.randn(batch, 3, IMG, IMG, generator=g),
        "text": ids,
        "audio": torch.randn(batch, 1, MEL, AUDIO_LEN, generator=g),
        "depth": torch.randn(batch, 1, MAP, MAP, generator=g),
        "thermal": torch.randn(batch, 1, MAP, MAP, generator=g),
        "imu": torch.randn(batch, 6, IMU_LEN, generator=g),
    }


BIND = {"vision": "image", "text": "text", "audio": "audio", "depth": "depth", "thermal": "thermal", "imu": "imu"}
VOCAB = 2 * 256 + len(VOCAB_MERGES) + 2


def available(ib: str) -> bool:
    try:
        get_modality(BIND[ib])
    except KeyError:
        return False
    return True


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(reference, checkpoint path, converted bind model directory, modalities present)."""
    d = tmp_path_factory.mktemp("imagebind")
    ref = make_reference(VOCAB)
    ckpt = d / "imagebind_tiny.pth"
    torch.save(ref.state_dict(), ckpt)
    present = tuple(m for m in BIND.values() if available({v: k for k, v in BIND.items()}[m]))
    bpe = d / "bpe_simple_vocab_16e6.txt.gz"
    assert write_bpe(bpe) == VOCAB
    out = convert_imagebind(ckpt, d / "converted", config=tiny_config(VOCAB, present), tokenizer=bpe)
    return ref, ckpt, out, present


@pytest.mark.parametrize("ib", list(DIMS))
def test_every_modality_matches_reference(converted, ib):
    ref, _, out, present = converted
    if BIND[ib] not in present:
        pytest.skip(f"modality plugin {BIND[ib]!r} not available")
    model = bind.load_model(out)
    x = example_inputs(VOCAB)[ib]
    with torch.no_grad():
        expected = ref({ib: x})[ib]
        got = model.encode(BIND[ib], x)
        scale = model.logit_scale(BIND[ib])
    # ImageBind bakes the logit scale into its output; bind keeps it beside the unit-norm embedding
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(len(x)), atol=1e-6, rtol=0)
    assert (got * scale - expected).abs().max().item() <= 1e-5 * max(1.0, float(scale))
    expected_scale = {"vision": 1.0, "text": 12.5, "audio": 20.0, "depth": 5.0, "thermal": 10.0, "imu": 5.0}[ib]
    assert float(scale) == pytest.approx(expected_scale, rel=1e-6)


def test_multi_clip_average_matches_reference_direction(converted):
    ref, _, out, present = converted
    model = bind.load_model(out)
    x = torch.randn(2, 3, 1, MAP, MAP)  # [B, clips, C, H, W]
    with torch.no_grad():
        expected = ref({"depth": x})["depth"]  # mean of scaled clip embeddings, not re-normalised
        got = model.encode("depth", x)
    assert (got - F.normalize(expected, dim=-1)).abs().max().item() <= 1e-5


def test_round_trip_is_bit_identical(converted, tmp_path):
    ref, ckpt, out, present = converted
    model = BindModel(expand_config(tiny_config(VOCAB, present)))
    convert_imagebind_state_dict(torch.load(ckpt, weights_only=True), model)
    reloaded = bind.load_model(out)
    sd, sd2 = model.state_dict(), reloaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    x = example_inputs(VOCAB)
    with torch.no_grad():
        for ib in ("vision", "text", "imu"):
            assert torch.equal(model.eval().encode(BIND[ib], x[ib]), reloaded.encode(BIND[ib], x[ib]))
    reloaded.save_pretrained(tmp_path / "again")
    again = bind.load_model(tmp_path / "again")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in sd2.items())


def test_converted_tokenizer_from_bpe_tokenizes_like_clip(converted):
    _, _, out, _ = converted
    model = bind.load_model(out)
    ids = model.prepare("text", ["cat dog", "a cat"])
    tok_vocab = VOCAB
    assert ids.shape == (2, CONTEXT)
    assert ids[0, 0] == tok_vocab - 2  # <|startoftext|>
    byte = bytes_to_unicode()
    first = 2 * len(byte) + VOCAB_MERGES.index("ca t</w>")  # "cat" merges into one token
    assert ids[0, 1] == first
    eot = (ids[0] == tok_vocab - 1).nonzero()[0].item()
    assert model.encoder("text").forward_tokens(ids)[2][0] == eot


def test_load_model_with_checkpoint_through_named_config(converted, tmp_path, monkeypatch):
    import yaml

    ref, ckpt, out, present = converted
    cfg = tiny_config(VOCAB, ("image", "imu"))
    (tmp_path / "imagebind-tiny-test.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("BIND_MODEL_CONFIGS", str(tmp_path))
    model = bind.load_model("imagebind-tiny-test", checkpoint=str(ckpt))
    x = example_inputs(VOCAB)["imu"]
    with torch.no_grad():
        assert (model.encode("imu", x) * 5.0 - ref({"imu": x})["imu"]).abs().max() <= 5e-5
    assert model.config.extra["converted_from"]["format"] == "imagebind"


def _fresh(present=("image", "imu", "text")):
    return BindModel(expand_config(tiny_config(VOCAB, present)))


def test_unknown_missing_and_misshaped_keys_are_named(converted):
    ref, ckpt, _, _ = converted
    sd = torch.load(ckpt, weights_only=True)
    model = _fresh()
    before = copy.deepcopy(model.state_dict())

    broken = dict(sd)
    broken["modality_trunks.vision.blocks.0.attn.extra_thing"] = torch.zeros(3)
    with pytest.raises(
        CheckpointError,
        match=r"unknown checkpoint keys.*modality_trunks\.vision\.blocks\.0\.attn"
        r"\.extra_thing",
    ):
        convert_imagebind_state_dict(broken, model)

    broken = dict(sd)
    del broken["modality_heads.imu.3.weight"]
    with pytest.raises(CheckpointError, match=r"missing checkpoint keys.*modality_heads\.imu\.3\.weight"):
        convert_imagebind_state_dict(broken, model)

    broken = dict(sd)
    broken["modality_trunks.imu.blocks.1.mlp.fc1.weight"] = torch.zeros(5, 5)
    with pytest.raises(
        CheckpointError,
        match=r"misshaped.*modality_trunks\.imu\.blocks\.1\.mlp\.fc1\.weight \[5, 5\]"
        r" -> encoders\.imu\.trunk\.blocks\.1\.mlp\.fc1\.weight",
    ):
        convert_imagebind_state_dict(broken, model)

    broken = {k: v for k, v in sd.items() if not k.startswith("modality_trunks.text.blocks.1.")}
    with pytest.raises(CheckpointError, match=r"does not provide.*encoders\.text\.trunk\.blocks\.1\.attn\.qkv\.weight"):
        convert_imagebind_state_dict(broken, model)
    # nothing was loaded by any failed attempt
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_architecture_mismatch_is_refused(converted):
    _, ckpt, _, _ = converted
    sd = torch.load(ckpt, weights_only=True)
    raw = tiny_config(VOCAB, ("imu",))
    raw["encoders"]["imu"]["depth"] = 3  # the checkpoint has 2 blocks
    with pytest.raises(CheckpointError, match=r"does not provide.*encoders\.imu\.trunk\.blocks\.2\."):
        convert_imagebind_state_dict(sd, BindModel(expand_config(raw)))
    raw = tiny_config(VOCAB, ("imu",))
    raw["encoders"]["imu"]["kv_bias_tokens"] = False
    with pytest.raises(CheckpointError, match=r"no place for.*bias_k -> encoders\.imu\.trunk\.blocks\.0\.attn\.bias_k"):
        convert_imagebind_state_dict(sd, BindModel(expand_config(raw)))


def test_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"modality_heads.vision.2.weight": torch.zeros(2, 2), "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pth: refused: the pickle carries code"):
        bind.load_model("imagebind-huge", checkpoint=str(path), modalities=["imu"])
    assert not marker.exists()
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pth: not a"):
        convert_imagebind(tmp_path / "garbage.pth", tmp_path / "out", config=tiny_config(VOCAB, ("imu",)))


def test_video_through_imagebind_vision_weights(converted):
    """ImageBind embeds video with its vision encoder on 2-frame clips: a bind ``video`` encoder (joint attention,
    2-frame tubelet) takes the same weights; clips are averaged (bind re-normalises, ImageBind does not)."""
    ref, ckpt, _, _ = converted
    raw = tiny_config(VOCAB, ("image",))
    d, depth, heads = DIMS["vision"]
    raw["encoders"]["video"] = {
        "width": d,
        "depth": depth,
        "heads": heads,
        "ln_pre": True,
        "attention": "joint",
        "logit_scale_init": 0.0,
        "logit_scale_learnable": False,
        "stem": {"patch_size": 14, "temporal_patch": 2, "num_frames": 2, "in_chans": 3},
        "preprocess": {"preset": "imagebind", "size": IMG, "crop_size": IMG},
    }
    model = BindModel(expand_config(raw))
    convert_imagebind_state_dict(torch.load(ckpt, weights_only=True), model)
    clips = torch.randn(2, 3, 3, 2, IMG, IMG)  # [B, clips, C, T=2, H, W]
    with torch.no_grad():
        expected = ref({"vision": clips})["vision"]
        got = model.encode("video", clips)
        still = torch.randn(2, 3, IMG, IMG)  # an image is the 2-frame clip of itself in both encoders
        torch.testing.assert_close(
            model.encode("image", still),
            model.encode("video", still[:, :, None].repeat(1, 1, 2, 1, 1)),
            atol=1e-6,
            rtol=0,
        )
    assert (got - F.normalize(expected, dim=-1)).abs().max().item() <= 1e-5


def test_cli_convert_imagebind(converted, tmp_path, monkeypatch, capsys):
    import json

    import yaml

    from bind.cli import main

    _, ckpt, _, _ = converted
    (tmp_path / "imagebind-tiny-cli.yaml").write_text(yaml.safe_dump(tiny_config(VOCAB, ("imu", "depth"))))
    monkeypatch.setenv("BIND_MODEL_CONFIGS", str(tmp_path))
    bpe = tmp_path / "bpe.txt.gz"
    write_bpe(bpe)
    assert (
        main(
            [
                "convert",
                "imagebind",
                "--checkpoint",
                str(ckpt),
                "--out",
                str(tmp_path / "out"),
                "--config",
                "imagebind-tiny-cli",
                "--tokenizer",
                str(bpe),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["out"] == str(tmp_path / "out")
    assert bind.load_model(tmp_path / "out").modalities == ["depth", "imu"]
    assert (
        main(
            [
                "convert",
                "imagebind",
                "--checkpoint",
                str(tmp_path / "missing.pth"),
                "--out",
                str(tmp_path / "out2"),
                "--config",
                "imagebind-tiny-cli",
            ]
        )
        == 1
    )
    assert "missing.pth" in capsys.readouterr().err


def test_imagebind_huge_config_takes_the_full_size_published_layout():
    """The named config is ImageBind-Huge exactly: a full-size state dict in the published layout (shapes only, on
    the meta device) converts with no unknown, missing or misshaped key."""
    huge = {
        "vision": (1280, 32, 16),
        "text": (1024, 24, 16),
        "audio": (768, 12, 12),
        "depth": (384, 12, 8),
        "thermal": (768, 12, 12),
        "imu": (512, 6, 8),
    }
    with torch.device("meta"):
        ref = ImageBindReference(
            49408, huge, out=1024, img=224, map_size=224, mel=128, audio_len=204, imu_len=2000, context=77
        )
        model = BindModel(expand_config(model_config_dict("imagebind-huge")))
    sd = ref.state_dict()
    assert "modality_trunks.audio.blocks.11.attn.bias_k" in sd and "modality_preprocessors.text.mask" in sd
    convert_imagebind_state_dict(sd, model)
    n_ref, n_bind = (sum(p.numel() for p in m.parameters()) for m in (ref, model))
    # bind has no CLS positions (folded into cls_token) and one zero temporal position for the tubelet
    assert n_bind == n_ref - sum(d for m, (d, _, _) in huge.items() if m != "text") + huge["vision"][0]
    assert round(n_bind / 1e6) == 1201  # ImageBind-Huge: 1.2 B parameters


def test_bench_parity_suite_smoke():
    from bind.bench.imagebind_parity import run_parity

    res = run_parity(batch=1, device="cpu", backends=("sdpa", "math"), iters=1, width=32, depth=1, heads=2)
    rows = {r["impl"]: r for r in res["results"]}
    assert set(rows) == {"reference nn.MultiheadAttention", "bind (sdpa)", "bind (math)"}
    assert all(rows[k]["max_abs_diff_unit_embedding"] <= 1e-5 for k in ("bind (sdpa)", "bind (math)"))
    assert res["input_shape"] == [1, 1, 128, 204]
