"""LoRA adapters: trainable-parameter budget on ViT-B/16, training touches only adapters + stem/head, saved adapters
reload exactly, merging gives the adapter-wrapped embeddings as a plain model directory."""

from __future__ import annotations

import pytest
import torch

import bind
from bind.lora import (
    LoraSpec,
    apply_lora,
    format_trainable_report,
    load_adapters,
    lora_specs,
    merge_lora,
    save_adapters,
    trainable_report,
)


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    return bind.create_model("bind-tiny", modalities=["image", "text"]).eval()


def _randomise_lora(model) -> None:
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.fixture
def images():
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_vit_b16_trunk_budget():
    torch.manual_seed(0)
    model = bind.create_model("bind-base", modalities=["image"])
    spec = apply_lora(model, "image", {"r": 16})
    report = trainable_report(model)["image"]
    width, depth = 768, 12
    per_block = spec.r * (width + 3 * width) + spec.r * (width + width)  # qkv and output projection
    assert report["lora"] == per_block * depth
    assert report["trunk_trainable"] == report["lora"]
    assert report["trunk_percent"] <= 2.0
    assert report["percent"] < 3.0  # stem + head + CLS + scale stay fully trainable
    assert "image" in format_trainable_report(trainable_report(model))


def test_only_adapters_and_outer_parts_train(images):
    model = _tiny()
    model.freeze(["text"])
    apply_lora(model, "image", {"r": 4, "alpha": 8})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith("encoders.image.") for n in trainable)
    trunk = {n for n in trainable if ".trunk." in n}
    assert trunk and all("lora_" in n for n in trunk)
    assert {"encoders.image.cls_token", "encoders.image.logit_scale", "encoders.image.head.proj.weight"} <= trainable
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    emb = model.encode("image", images)
    (emb @ emb.T).sum().backward()
    opt.step()
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert any("lora_" in n for n in changed)
    assert not any("base_layer" in n or n.startswith("encoders.text.") for n in changed)


def test_adapters_reload_to_identical_outputs_and_merge(tmp_path, images):
    model = _tiny()
    apply_lora(model, "image", {"r": 4, "alpha": 8, "targets": ["qkv", "proj", "fc1", "fc2"]})
    _randomise_lora(model)
    with torch.no_grad():
        model.encoder("image").head.proj.weight.mul_(1.5)  # a trained outer part travels with the adapters
        wrapped = model.encode("image", images)
        base_out = _tiny().encode("image", images)
    assert not torch.allclose(wrapped, base_out, atol=1e-3)  # the adapters do something

    save_adapters(model, tmp_path / "adapters")
    assert {p.name for p in (tmp_path / "adapters").iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    reloaded = load_adapters(_tiny(), tmp_path / "adapters")
    assert lora_specs(reloaded)["image"].targets == ("qkv", "proj", "fc1", "fc2")
    with torch.no_grad():
        assert torch.equal(reloaded.encode("image", images), wrapped)

    merge_lora(reloaded)
    assert not lora_specs(reloaded)
    assert not any("lora_" in n or "base_layer" in n for n, _ in reloaded.named_parameters())
    with torch.no_grad():
        merged = reloaded.encode("image", images)
    assert torch.allclose(merged, wrapped, atol=1e-5)
    reloaded.save_pretrained(tmp_path / "merged")
    with torch.no_grad():
        again = bind.load_model(tmp_path / "merged").encode("image", images)
    assert torch.allclose(again, wrapped, atol=1e-5)


def test_spec_defaults_and_errors(tmp_path):
    assert LoraSpec.from_dict({}, "depth").r == bind.get_modality("depth").lora_rank == 2  # LanguageBind's ranks
    assert LoraSpec.from_dict({}, "audio").r == 16 and LoraSpec.from_dict({}, "audio").alpha == 16
    assert LoraSpec.from_dict({"rank": 8}).r == 8
    with pytest.raises(ValueError, match="unknown fields"):
        LoraSpec.from_dict({"rnak": 8})
    with pytest.raises(ValueError, match="rank must be"):
        LoraSpec(r=0)
    model = _tiny()
    with pytest.raises(ValueError, match="none of the LoRA targets"):
        apply_lora(model, "image", {"targets": ["query"]})
    apply_lora(model, "image", {"r": 2})
    with pytest.raises(ValueError, match="already applied"):
        apply_lora(model, "image", {"r": 2})
    with pytest.raises(ValueError, match="no LoRA adapters"):
        merge_lora(model, ["text"])
    with pytest.raises(FileNotFoundError, match="not an adapter directory"):
        load_adapters(_tiny(), tmp_path)
