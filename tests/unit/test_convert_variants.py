"""Converters without friction (issue #19): the reference's own files, other sizes, the exactness a user expects.

* LanguageBind directories in the exact form LanguageBind's classes ``save_pretrained`` them: the full HF
  ``config.json`` with ``vision_config.image_size`` rewritten to a list by their ``resize_pos``, ``pytorch_model.bin``,
  peft LoRA keys with / without ``base_layer``, LanguageBind tokenizer files;
* ImageBind state dicts that are not Huge: sizes inferred from the tensors, heads given;
* video with fewer frames than trained equals LanguageBind's ``temporal_embedding[:, :T]``;
* scales as each source defines them; a missing checkpoint / tokenizer fails in seconds offline, naming the file.

The references are the hand-written ImageBind / LanguageBind modules of ``test_convert_imagebind`` /
``test_convert_languagebind`` (published key layouts, cross-checked against transformers there).
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from test_convert_imagebind import AUDIO_LEN as IB_AUDIO_LEN
from test_convert_imagebind import (
    BIND,
    DIMS,
    IMU_LEN,
    MEL,
    VOCAB,
    example_inputs,
    make_reference,
    tiny_config,
    write_bpe,
)
from test_convert_languagebind import (
    FRAMES,
    IMG,
    LB_EXTRAS,
    PROJ,
    TARGET,
    TEXT,
    VISION,
    RefLanguageBind,
    RefVision,
    hf_clip,
    randomize,
    text_ids,
    write_tokenizer,
)
from test_convert_languagebind import MEL as LB_MEL
from transformers import CLIPConfig

import bind
from bind.checkpoints import CheckpointError, convert_imagebind, convert_languagebind

LB_NAMES = {
    "video": "LanguageBindVideo",
    "audio": "LanguageBindAudio",
    "depth": "LanguageBindDepth",
    "thermal": "LanguageBindThermal",
    "image": "LanguageBindImage",
}


def save_like_languagebind(
    d, state: dict, modality: str, vision_extra: dict | None = None, image_size: list[int] | None = None
):
    """A directory as ``LanguageBind<Modality>.save_pretrained`` + its tokenizer's ``save_pretrained`` write it:
    the whole serialised HF config (every default included) whose ``vision_config.image_size`` their ``__init__``
    rewrote in place to ``[H, W]``, ``pytorch_model.bin`` (transformers 4.31, LanguageBind's pin), tokenizer files."""
    d.mkdir(parents=True, exist_ok=True)
    hf = CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=PROJ).to_dict()
    hf["vision_config"].update({**LB_EXTRAS, **(vision_extra or {})})
    hf["vision_config"]["image_size"] = image_size or [IMG, IMG]
    hf.update(
        architectures=[LB_NAMES[modality]],
        model_type=LB_NAMES[modality],
        torch_dtype="float32",
        transformers_version="4.31.0",
        _name_or_path=f"LanguageBind/{LB_NAMES[modality]}",
    )
    (d / "config.json").write_text(json.dumps(hf, indent=2))
    torch.save(dict(state), d / "pytorch_model.bin")
    write_tokenizer(d)
    (d / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>"})
    )
    return d


def test_languagebind_saved_depth_dir_with_list_image_size(tmp_path):
    ref = hf_clip(21)
    d = save_like_languagebind(tmp_path / "LanguageBind_Depth", ref.state_dict(), "depth")
    assert json.loads((d / "config.json").read_text())["vision_config"]["image_size"] == [IMG, IMG]
    model = bind.load_model(convert_languagebind(d, tmp_path / "out"))
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        want = torch.nn.functional.normalize(ref.get_image_features(pixel_values=x).pooler_output, dim=-1)
        assert (model.encode("depth", x) - want).abs().max() <= 1e-5


def test_languagebind_saved_audio_dir_with_mel_by_frames_image_size(tmp_path):
    ref = RefLanguageBind(RefVision(grid=(LB_MEL // 14, TARGET // 14)))
    randomize(ref, 22)
    d = save_like_languagebind(
        tmp_path / "LanguageBind_Audio_FT",
        ref.eval().state_dict(),
        "audio",
        {"num_mel_bins": LB_MEL, "target_length": TARGET},
        image_size=[LB_MEL, TARGET],
    )
    model = bind.load_model(convert_languagebind(d, tmp_path / "out"))
    x = torch.randn(2, 3, LB_MEL, TARGET)
    with torch.no_grad():
        want, got = ref.image(x), model.encode("audio", x) * model.logit_scale("audio")
    assert (got - want).abs().max().item() <= 1e-5 * math.e


def test_non_square_image_size_is_one_clear_error(tmp_path):
    d = save_like_languagebind(
        tmp_path / "LanguageBind_Depth", hf_clip(23).state_dict(), "depth", image_size=[IMG, 2 * IMG]
    )
    with pytest.raises(CheckpointError, match=r"image_size \[28, 56\] is not square"):
        convert_languagebind(d, tmp_path / "out")


def _lora_video(seed: int, peft_style: str):
    from peft import LoraConfig, get_peft_model

    ref = RefLanguageBind(RefVision(frames=FRAMES))
    randomize(ref, seed)
    targets = ["temporal_attn.q_proj", "temporal_attn.v_proj", "self_attn.k_proj", "self_attn.out_proj"]
    ref.vision_model.encoder = get_peft_model(
        ref.vision_model.encoder, LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, bias="none")
    )
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed))
    sd = ref.state_dict()
    assert any(".base_layer." in k for k in sd)
    if peft_style == "legacy":  # peft < 0.7: no base_layer, no adapter name
        sd = {k.replace(".base_layer.", ".").replace(".default.", "."): v for k, v in sd.items()}
    return ref.eval(), sd


def _reference_frames(ref: RefLanguageBind, frames: int) -> RefLanguageBind:
    """LanguageBind run on ``frames`` frames: each layer's ``t`` is the frame count, ``temporal_embedding[:, :t]``
    added for ``t != 1`` (modeling_video.py), temporal attention always."""
    ref = copy.deepcopy(ref)
    layers = ref.vision_model.encoder.get_base_model().layers
    for layer in layers:
        layer.t = frames
        if frames == 1:
            with torch.no_grad():
                layer.temporal_embedding.zero_()  # the reference adds nothing for a single frame
    return ref


@pytest.mark.parametrize("peft_style", ["base_layer", "legacy"])
def test_languagebind_saved_video_lora_dir_and_fewer_frames_slice(tmp_path, peft_style):
    ref, sd = _lora_video(31, peft_style)
    d = save_like_languagebind(
        tmp_path / "LanguageBind_Video",
        sd,
        "video",
        {"add_time_attn": True, "num_frames": FRAMES, "lora_r": 4, "lora_alpha": 8},
    )
    model = bind.load_model(convert_languagebind(d, tmp_path / "out"))
    for frames in (FRAMES, 2, 3, 1):
        x = torch.randn(2, 3, frames, IMG, IMG, generator=torch.Generator().manual_seed(frames))
        with torch.no_grad():
            want = _reference_frames(ref, frames).image(x)
            got = model.encode("video", x) * model.logit_scale("video")
        assert (got - want).abs().max().item() <= 1e-5 * math.e, frames


def test_more_frames_than_trained_interpolate():
    from bind.nn.transformer import resize_temporal, temporal_positions

    emb = torch.randn(1, 4, 6)
    assert torch.equal(temporal_positions(emb, 3), emb[:, :3])
    assert torch.equal(temporal_positions(emb, 4), emb)
    assert torch.equal(temporal_positions(emb, 7), resize_temporal(emb, 7)) and temporal_positions(emb, 7).shape[1] == 7


def test_languagebind_logit_scale_is_uncapped(tmp_path):
    ref = hf_clip(24)
    with torch.no_grad():
        ref.logit_scale.fill_(5.0)
    d = save_like_languagebind(tmp_path / "LanguageBind_Thermal", ref.state_dict(), "thermal")
    model = bind.load_model(convert_languagebind(d, tmp_path / "out"))
    assert float(model.logit_scale("thermal")) == pytest.approx(math.exp(5.0), rel=1e-6)  # 148.4, not 100
    assert float(model.logit_scale("text")) == 1.0
    assert model.config.encoders["thermal"].logit_scale_max is None


# --- ImageBind -------------------------------------------------------------------------------------------------------

HEADS = {BIND[ib]: h for ib, (_, _, h) in DIMS.items()}
AUDIO_SET = {"audio": {"preprocess": {"num_mel_bins": MEL, "target_length": IB_AUDIO_LEN}}}


@pytest.fixture(scope="module")
def small_imagebind(tmp_path_factory):
    d = tmp_path_factory.mktemp("imagebind-small")
    ref = make_reference(VOCAB)
    with torch.no_grad():
        ref.modality_postprocessors["text"][1].log_logit_scale.fill_(math.log(200.0))  # beyond ImageBind's clip
    ckpt = d / "imagebind_small.pth"
    torch.save(ref.state_dict(), ckpt)
    bpe = d / "bpe_simple_vocab_16e6.txt.gz"
    write_bpe(bpe)
    return ref, ckpt, bpe


def test_imagebind_of_another_size_converts_with_sizes_inferred_and_heads_given(small_imagebind, tmp_path):
    ref, ckpt, bpe = small_imagebind
    out = convert_imagebind(ckpt, tmp_path / "out", tokenizer=bpe, heads=HEADS, overrides=AUDIO_SET)
    model = bind.load_model(out)
    assert model.embed_dim == 20 and model.encoder("image").cfg.width == 32 and model.encoder("text").cfg.depth == 2
    assert model.encoder("imu").cfg.preprocess["window"] == IMU_LEN
    inputs = example_inputs(VOCAB)
    for ib, m in BIND.items():
        with torch.no_grad():
            want = ref({ib: inputs[ib]})[ib]
            got = model.encode(m, inputs[ib]) * model.logit_scale(m)
        assert (got - want).abs().max().item() <= 1e-5 * max(1.0, float(model.logit_scale(m))), m


def test_imagebind_text_scale_is_clipped_to_exactly_100(small_imagebind, tmp_path):
    _, ckpt, bpe = small_imagebind
    model = bind.load_model(
        convert_imagebind(ckpt, tmp_path / "out", tokenizer=bpe, heads=HEADS, overrides=AUDIO_SET, modalities=["text"])
    )
    assert float(model.logit_scale("text")) == 100.0  # torch.clip(exp(log 200), max=100)


def test_missing_heads_are_named_in_one_line(small_imagebind, tmp_path):
    _, ckpt, bpe = small_imagebind
    with pytest.raises(CheckpointError) as err:
        convert_imagebind(ckpt, tmp_path / "out", tokenizer=bpe, overrides=AUDIO_SET)
    msg = str(err.value)
    assert "\n" not in msg and "head counts are not stored" in msg and "--heads image=N" in msg
    assert not (tmp_path / "out").exists()


def _cli(args: list[str], env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m bind ARGS`` with its default flags; prints ELAPSED = seconds spent after the imports."""
    code = textwrap.dedent("""
        import sys, time
        import transformers, bind.checkpoints, modalities.text  # imports are not what is timed
        from transformers import AutoTokenizer
        from bind.cli import main
        t = time.perf_counter()
        try:
            rc = main(sys.argv[1:])
        finally:
            print(f"ELAPSED {time.perf_counter() - t:.3f}", file=sys.stderr)
        sys.exit(rc)
    """)
    full = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), **(env or {})}
    full = {k: v for k, v in full.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=full, timeout=timeout
    )


def _elapsed(r: subprocess.CompletedProcess) -> float:
    return float(r.stderr.rsplit("ELAPSED", 1)[1])


def _error(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("ELAPSED")]
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.slow
def test_cli_convert_config_yaml_heads_and_set(small_imagebind, tmp_path):
    ref, ckpt, bpe = small_imagebind
    cfg = tmp_path / "my-imagebind.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(VOCAB)))
    r = _cli(
        [
            "convert",
            "imagebind",
            "--checkpoint",
            str(ckpt),
            "--out",
            str(tmp_path / "a"),
            "--config",
            str(cfg),
            "--tokenizer",
            str(bpe),
        ]
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["precision"] == "fp32"
    model = bind.load_model(tmp_path / "a")
    assert model.config.name == "imagebind-tiny-test" and model.precision == "fp32"
    heads = [f"{m}={h}" for m, h in HEADS.items()]
    r = _cli(
        [
            "convert",
            "imagebind",
            "--checkpoint",
            str(ckpt),
            "--out",
            str(tmp_path / "b"),
            "--tokenizer",
            str(bpe),
            "--modalities",
            "image",
            "audio",
            "--heads",
            *heads,
            "--precision",
            "auto",
            "--set",
            f"audio.preprocess.num_mel_bins={MEL}",
            f"audio.preprocess.target_length={IB_AUDIO_LEN}",
        ]
    )
    assert r.returncode == 0, r.stderr
    model = bind.load_model(tmp_path / "b")
    assert model.modalities == ["image", "audio"] and model.precision == "auto"
    x = example_inputs(VOCAB)["audio"]
    with torch.no_grad():
        assert (model.encode("audio", x) * 20.0 - ref({"audio": x})["audio"]).abs().max() <= 2e-4
    r = _cli(
        [
            "convert",
            "imagebind",
            "--checkpoint",
            str(ckpt),
            "--out",
            str(tmp_path / "c"),
            "--tokenizer",
            str(bpe),
            "--modalities",
            "image",
            "--heads",
            "image=4",
            "--set",
            "image.preprocess.crop_size=56",
        ]
    )
    line = _error(r)
    assert "misshaped" in line and "--config PATH.yaml" in line and not (tmp_path / "c").exists()
    line = _error(
        _cli(
            [
                "convert",
                "imagebind",
                "--checkpoint",
                str(ckpt),
                "--out",
                str(tmp_path / "d"),
                "--config",
                str(tmp_path / "nope.yaml"),
            ]
        )
    )
    assert "nope.yaml: model config file not found" in line


@pytest.mark.parametrize("hub", ["offline", "unreachable"])
def test_missing_checkpoint_and_tokenizer_fail_in_seconds(hf_style_dir, tmp_path, hub):
    env = (
        {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        if hub == "offline"
        else {
            "HF_HUB_OFFLINE": None,
            "TRANSFORMERS_OFFLINE": None,
            "HF_ENDPOINT": "http://127.0.0.1:9",
            "HF_HOME": str(tmp_path / "hf"),
        }
    )
    r = _cli(["convert", "imagebind", "--checkpoint", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "o")], env)
    assert "nope.pth: checkpoint file not found" in _error(r) and _elapsed(r) <= 5.0
    r = _cli(["convert", "languagebind", "--checkpoint", str(hf_style_dir), "--out", str(tmp_path / "o")], env)
    line = _error(r)
    assert "no tokenizer files (vocab.json, merges.txt missing)" in line and str(hf_style_dir) in line
    assert ("HF_HUB_OFFLINE" in line) if hub == "offline" else ("unreachable" in line)
    assert _elapsed(r) <= 5.0 and not (tmp_path / "o").exists()


@pytest.fixture
def hf_style_dir(tmp_path):
    d = save_like_languagebind(tmp_path / "LanguageBind_Depth", hf_clip(25).state_dict(), "depth")
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (d / f).unlink()
    return d


def test_missing_local_tokenizer_path_fails_at_once():
    from modalities.text import load_tokenizer

    with pytest.raises(FileNotFoundError, match=r"text: tokenizer '/no/such/tokenizer': no such file or directory"):
        load_tokenizer("/no/such/tokenizer")


def test_bpe_inside_an_installed_imagebind_package_is_used(small_imagebind, tmp_path, monkeypatch):
    _, ckpt, bpe = small_imagebind
    pkg = tmp_path / "site" / "imagebind"
    (pkg / "bpe").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('the package is found, never imported')\n")
    (pkg / "bpe" / "bpe_simple_vocab_16e6.txt.gz").write_bytes(bpe.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    from bind.checkpoints.common import imagebind_bpe

    assert imagebind_bpe() == pkg / "bpe" / "bpe_simple_vocab_16e6.txt.gz"
    model = bind.load_model(
        convert_imagebind(ckpt, tmp_path / "out", heads=HEADS, overrides=AUDIO_SET, modalities=["text"])
    )
    ids = model.prepare("text", ["a cat", "dog"])
    with gzip.open(bpe, "rt") as f:
        assert "ca t</w>" in f.read()
    assert ids[0, 0] == VOCAB - 2  # <|startoftext|> of the packaged BPE's vocabulary


def test_converted_models_default_to_fp32_where_parity_holds(small_imagebind, tmp_path):
    _, ckpt, bpe = small_imagebind
    out = convert_imagebind(
        ckpt, tmp_path / "out", tokenizer=bpe, heads=HEADS, overrides=AUDIO_SET, modalities=["image"]
    )
    assert json.loads((out / "config.json").read_text())["extra"]["precision"] == "fp32"
    assert bind.load_model(out).precision == "fp32" and bind.load_model(out, precision="bf16").precision == "bf16"
    assert not bind.load_model(out).untrained_modalities
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        assert text_ids is not None and bind.load_model(out).encode("image", x).dtype == torch.float32


@pytest.mark.parametrize(
    "tower, cause", [("/no/such/tower", "no such file or directory"), ("someorg/not-cached-model", "HF_HUB_OFFLINE")]
)
def test_towers_look_locally_first_and_fail_in_seconds(tower, cause, monkeypatch):
    import time

    from bind.config import EncoderConfig
    from bind.towers import build_tower

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(FileNotFoundError) as err:
        build_tower(EncoderConfig(modality="text", tower=tower, embed_dim=16))
    assert time.perf_counter() - t <= 5.0
    assert tower in str(err.value) and cause in str(err.value) and "\n" not in str(err.value)


def test_full_size_huge_state_dict_infers_exactly_the_named_config():
    """Inference changes nothing for ImageBind-Huge itself: no option needed, the expanded config is the named one."""
    from test_convert_imagebind import ImageBindReference

    from bind.checkpoints.imagebind import imagebind_config
    from bind.factory import expand_config
    from bind.registry import model_config_dict

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
    inferred = expand_config(imagebind_config(ref.state_dict(), "imagebind-huge"))
    assert inferred.to_dict() == expand_config(model_config_dict("imagebind-huge")).to_dict()
