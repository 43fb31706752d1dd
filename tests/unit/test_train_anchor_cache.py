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
