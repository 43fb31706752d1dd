"""Precision policy: what `auto` resolves to, bf16 autocast in eval only, fp32 unit-norm embeddings out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import bind
from bind import precision as P


def test_explicit_precision_wins_and_auto_follows_env_then_hardware(monkeypatch):
    assert P.resolve_precision("fp32") == "fp32" and P.resolve_precision("bf16") == "bf16"
    monkeypatch.delenv(P.ENV_VAR, raising=False)
    monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda: True)
    assert P.resolve_precision("auto", "cpu") == "bf16" and P.lightning_precision("auto", "cpu") == "bf16-mixed"
    monkeypatch.setattr(P, "cpu_has_fast_bf16", lambda: False)
    assert P.resolve_precision(None, "cpu") == "fp32" and P.lightning_precision("auto", "cpu") == "32-true"
    monkeypatch.setenv(P.ENV_VAR, "bf16")
    assert P.resolve_precision("auto", "cpu") == "bf16" and P.resolve_precision("fp32", "cpu") == "fp32"
    monkeypatch.setenv(P.ENV_VAR, "fp16")
    with pytest.raises(ValueError, match=P.ENV_VAR):
        P.resolve_precision("auto")
    with pytest.raises(ValueError, match="precision"):
        P.resolve_precision("half")
    assert P.lightning_precision("16-mixed") == "16-mixed"  # Lightning's own names pass through


def test_cpu_detection_matches_torch_dispatch():
    cpu = torch._C._cpu
    assert P.cpu_has_fast_bf16() == (cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())


def test_bf16_encode_returns_fp32_unit_norm_close_to_fp32(tiny_model):
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = tiny_model.encode("image", x, precision="fp32")
        low = tiny_model.encode("image", x, precision="bf16")
    assert low.dtype == torch.float32 and torch.allclose(low.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert not torch.equal(low, ref)  # bf16 really ran
    assert F.cosine_similarity(low, ref).min() > 0.99
    tiny_model.precision = "bf16"
    with torch.no_grad():
        assert torch.equal(tiny_model.encode("image", x), low)  # the model's own setting is the default
        tiny_model.train()
        assert torch.allclose(tiny_model.encode("image", x), ref, atol=1e-6)  # training: the caller decides


def test_precision_reaches_loaded_models_and_cli(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "m")
    assert bind.load_model(tmp_path / "m", precision="bf16").precision == "bf16"
    assert bind.create_model("bind-tiny").precision == "auto"
    with pytest.raises(ValueError, match="precision"):
        bind.create_model("bind-tiny", precision="fp8")
    from bind.cli import build_parser

    args = build_parser().parse_args(
        [
            "embed",
            "--model",
            "bind-tiny",
            "--modality",
            "text",
            "--inputs",
            "a.txt",
            "--out",
            "e.safetensors",
            "--precision",
            "bf16",
        ]
    )
    assert args.precision == "bf16"


def test_compiled_encoders_keep_weights_and_outputs(tiny_model):
    keys = list(tiny_model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = tiny_model.encode("image", x)
        tiny_model.compile_encoders(["image"], backend="eager")  # eager backend: the wrapping, not inductor's build
        assert list(tiny_model.state_dict()) == keys
        torch.testing.assert_close(tiny_model.encode("image", x), ref)


def test_embed_cli_honours_precision_and_compile(monkeypatch, tmp_path):
    from bind.cli import main
    from bind.model import BindModel

    seen = {}
    real_encode = BindModel.encode

    def spy_encode(self, modality, x, normalize=True, precision=None):
        seen["precision"] = self.precision
        return real_encode(self, modality, x, normalize, precision)

    monkeypatch.setattr(BindModel, "compile_encoders", lambda self, *a, **k: seen.setdefault("compiled", self))
    monkeypatch.setattr(BindModel, "encode", spy_encode)
    (tmp_path / "a.txt").write_text("a red cube")
    out = tmp_path / "e.safetensors"
    assert (
        main(
            [
                "embed",
                "--model",
                "bind-tiny",
                "--modality",
                "text",
                "--inputs",
                str(tmp_path / "a.txt"),
                "--out",
                str(out),
                "--precision",
                "bf16",
                "--compile",
                "-q",
            ]
        )
        == 0
    )
    assert out.is_file() and seen["precision"] == "bf16" and "compiled" in seen
