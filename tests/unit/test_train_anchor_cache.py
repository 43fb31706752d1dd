"""The anchor cache is padding-invariant: a caption's cached embedding has the same bits whichever batch (and so
whichever padding) first held it — what makes a resumed run, whose cache starts empty, exact."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("lightning")


@pytest.fixture(scope="module")
def module():
    from bind.train.module import BindTrainModule

    torch.manual_seed(0)
    return BindTrainModule(model="bind-minilm-tiny", modalities=["image"], cache_anchors=True).eval()


def _ids(module, captions: list[str]) -> torch.Tensor:
    from bind.registry import get_modality

    text, cfg = get_modality("text"), module.model.preprocess_config("text")
    return torch.stack([text.transform(text.load(c, cfg), cfg, train=False) for c in captions])


SHORT, LONG = "a red circle", "a very small dark blue triangle drawn in the lower left corner of a noisy grey picture"


def test_cached_caption_does_not_depend_on_its_batch(module):
    alone = module._anchor_embed(_ids(module, [SHORT]), [SHORT])[0].clone()
    module._anchor_cache.clear()
    padded = module._anchor_embed(_ids(module, [LONG, SHORT, LONG + " again"]), [LONG, SHORT, LONG + " again"])
    assert torch.equal(padded[1], alone)  # bitwise, although the batch was padded to the long captions
    assert torch.equal(module._anchor_cache[SHORT], alone)
    module._anchor_cache.clear()


def test_cache_full_falls_back_to_the_same_values(module):
    ids = _ids(module, [LONG, SHORT])
    cached = module._anchor_embed(ids, [LONG, SHORT]).clone()
    module._anchor_cache.clear()
    module.hparams.anchor_cache_size = 0
    try:
        uncached = module._anchor_embed(ids, [LONG, SHORT])
    finally:
        module.hparams.anchor_cache_size = 100_000
    assert not module._anchor_cache and torch.equal(uncached, cached)


CAPTIONS = [SHORT, LONG, "a green square", "a big yellow star on a white background", "a red circle in the middle"]


def test_filled_up_front_with_the_same_bits_whatever_the_order(module):
    module._anchor_cache.clear()
    assert module.fill_anchor_cache(CAPTIONS + CAPTIONS[:2], chunk=2) == len(CAPTIONS)  # each distinct caption once
    first = {c: e.clone() for c, e in module._anchor_cache.items()}
    module._anchor_cache.clear()
    module.fill_anchor_cache(list(reversed(CAPTIONS)), chunk=2)
    assert first.keys() == module._anchor_cache.keys()
    assert all(torch.equal(first[c], module._anchor_cache[c]) for c in CAPTIONS)
    for c in CAPTIONS:  # batched, the values are the ones a caption gets alone (to rounding)
        module._anchor_cache.clear()
        torch.testing.assert_close(first[c], module._anchor_embed(_ids(module, [c]), [c])[0], atol=1e-5, rtol=0)
    module._anchor_cache.clear()
    assert module.fill_anchor_cache(CAPTIONS) == len(CAPTIONS) and module.fill_anchor_cache(CAPTIONS) == 0


def test_filling_keeps_to_the_cache_size(module):
    module._anchor_cache.clear()
    module.hparams.anchor_cache_size = 2
    try:
        assert module.fill_anchor_cache(CAPTIONS) == 2
        assert set(module._anchor_cache) == {"a green square", SHORT}  # the shortest first
    finally:
        module.hparams.anchor_cache_size = 100_000
        module._anchor_cache.clear()


def test_fit_embeds_every_training_and_validation_caption_before_the_first_step(tmp_path, fit_tiny_image, monkeypatch):
    from bind_world.shapes import write_shapes_dataset
    from lightning.pytorch.callbacks import Callback

    from bind.data.manifest import read_manifest
    from bind.train.module import BindTrainModule

    seen, fill = {}, BindTrainModule.fill_anchor_cache

    def spy(self, captions, chunk=256):  # the frozen tower embeds in eval mode: no dropout in the cached anchors
        seen["dropout"] = any(m.training for m in self.model.encoder("text").modules())
        return fill(self, captions, chunk)

    monkeypatch.setattr(BindTrainModule, "fill_anchor_cache", spy)

    class AtFirstStep(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.setdefault("cached", set(module._anchor_cache))

    manifest = write_shapes_dataset(tmp_path / "shapes", train=24, val=8, size=32)
    fit_tiny_image(manifest, tmp_path / "run", max_epochs=1, cache_anchors=True, callbacks=[AtFirstStep()])
    records = [r for r in read_manifest(manifest) if r.split in ("train", "val")]
    assert seen["cached"] == {c for r in records for c in r.anchor_captions("image")}
    assert seen["dropout"] is False
