"""The one batched-embedding path (``BindModel.embed_sources`` / ``embed_tensors``): batches, padding trimmed."""

from __future__ import annotations

import numpy as np
import torch

from bind.registry import get_modality

TEXTS = ["a red cube", "a big green sphere moving left fast", "cone", "a small purple torus turning", "a cylinder"]


def test_embed_sources_batches_and_trims_text_padding(tiny_model, monkeypatch):
    encode, widths = tiny_model.encode, []

    def spy(modality, x, **kwargs):
        widths.append(x.shape[1])
        return encode(modality, x, **kwargs)

    full = encode("text", tiny_model.prepare("text", TEXTS))  # one batch, padded to the context length
    monkeypatch.setattr(tiny_model, "encode", spy)
    out = tiny_model.embed_sources("text", TEXTS, batch_size=2)
    context = tiny_model.prepare("text", TEXTS).shape[1]
    lengths = [int((tiny_model.prepare("text", [t]) != 0).sum()) for t in TEXTS]
    assert widths == [max(lengths[0:2]), max(lengths[2:4]), lengths[4]] and max(widths) < context
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)  # trimming is exact

    plugin, cfg = get_modality("text"), tiny_model.preprocess_config("text")
    tensors = [plugin.process(t, cfg) for t in TEXTS]
    torch.testing.assert_close(tiny_model.embed_tensors("text", tensors, batch_size=3), out, atol=1e-5, rtol=1e-5)
    assert tiny_model.embed_sources("text", []).shape == (0, tiny_model.embed_dim)


def test_embed_tensors_of_media_match_one_encode(tiny_model):
    rng = np.random.default_rng(0)
    batch = tiny_model.prepare("image", [rng.integers(0, 255, (40, 48, 3), dtype=np.uint8) for _ in range(5)])
    out = tiny_model.embed_tensors("image", list(batch), batch_size=2)
    torch.testing.assert_close(out, tiny_model.encode("image", batch), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5))


def test_a_fresh_process_loads_a_tower_model_and_embeds_audio(tmp_path):
    """Loading builds the model on the meta device first; a transformers tower imports torchaudio lazily there, whose
    module-level tensors then stayed meta and every later audio fbank failed ("Cannot copy out of meta tensor")."""
    import subprocess
    import sys
    from pathlib import Path

    import bind
    from tests.media import tone, write_audio

    root = Path(__file__).resolve().parents[2]
    bind.create_model("bind-minilm-tiny", modalities=["text", "audio"]).save_pretrained(tmp_path / "model")
    wav = write_audio(tmp_path / "a.wav", tone(1.0))
    model = str(tmp_path / "model")
    code = f"import bind; m = bind.load_model({model!r}); print(tuple(m.embed_sources('audio', [{str(wav)!r}]).shape))"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "(1, 384)"
