"""``anchor_whitening``: the loss compares embeddings in a whitened copy of the frozen anchor's space, so factors the
anchor barely separates (one word of a caption) weigh as much as the ones it separates widely."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("lightning")

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("cube", "sphere", "cone")
MOTIONS = ("moving left", "moving right", "moving up", "moving down")
CAPTIONS = [f"a video of a {c} {s} {m}." for c, s, m in itertools.product(COLOURS, SHAPES, MOTIONS)]


@pytest.fixture(scope="module")
def module():
    from bind.train.module import BindTrainModule

    torch.manual_seed(0)
    return BindTrainModule(model="bind-minilm-tiny", modalities=["image"], anchor_whitening=0.05).eval()


def _anchor(module, captions: list[str]) -> torch.Tensor:
    from bind.registry import get_modality

    text, cfg = get_modality("text"), module.model.preprocess_config("text")
    return module._anchor_embed(torch.stack([text.process(c, cfg) for c in captions]))


def _mean_cos(e: torch.Tensor, pairs: list[tuple[int, int]]) -> float:
    return float(torch.stack([e[i] @ e[j] for i, j in pairs]).mean())


def test_whitening_pulls_apart_the_captions_the_anchor_barely_tells_apart(module):
    module._whitening = module.fit_whitening({"image": CAPTIONS})
    raw = _anchor(module, CAPTIONS)
    white = module._whiten("image", raw)
    assert torch.allclose(white.norm(dim=-1), torch.ones(len(CAPTIONS)), atol=1e-5)
    index = {c: i for i, c in enumerate(CAPTIONS)}
    by_motion = [  # captions that differ only in the motion words (the anchor's smallest differences)
        (index[f"a video of a {c} {s} {a}."], index[f"a video of a {c} {s} {b}."])
        for c, s in itertools.product(COLOURS, SHAPES)
        for a, b in itertools.combinations(MOTIONS, 2)
    ]
    by_colour = [
        (index[f"a video of a {a} {s} {m}."], index[f"a video of a {b} {s} {m}."])
        for s, m in itertools.product(SHAPES, MOTIONS)
        for a, b in itertools.combinations(COLOURS, 2)
    ]
    raw_motion, raw_colour = _mean_cos(raw, by_motion), _mean_cos(raw, by_colour)
    white_motion, white_colour = _mean_cos(white, by_motion), _mean_cos(white, by_colour)
    assert white_motion < raw_motion - 0.1  # motion captions now far apart
    # and the factors weigh more alike: motion's distance relative to colour's grows towards 1
    raw_ratio, white_ratio = (1 - raw_motion) / (1 - raw_colour), (1 - white_motion) / (1 - white_colour)
    assert raw_ratio < 0.5 and white_ratio > 2 * raw_ratio


def test_whitened_loss_prefers_the_encoder_that_gets_the_small_factor_right(module):
    from bind.losses import contrastive_loss

    module._whitening = module.fit_whitening({"image": CAPTIONS})
    anchors = _anchor(module, CAPTIONS)
    # an encoder that swaps the motion of every caption (left <-> right, up <-> down) but is otherwise exact
    swap = {0: 1, 1: 0, 2: 3, 3: 2}
    wrong = anchors[[i - i % 4 + swap[i % 4] for i in range(len(CAPTIONS))]]
    scale = torch.tensor(20.0)
    raw_gap = contrastive_loss(wrong, anchors, scale, gather=False)[0] - contrastive_loss(anchors, anchors, scale)[0]
    white = lambda x: module._whiten("image", x)  # noqa: E731
    white_gap = (
        contrastive_loss(white(wrong), white(anchors), scale, gather=False)[0]
        - contrastive_loss(white(anchors), white(anchors), scale, gather=False)[0]
    )
    assert white_gap > 2 * raw_gap > 0  # the mistake costs far more in the whitened space


def test_off_by_default_and_checked():
    from bind.train.module import BindTrainModule

    plain = BindTrainModule(model="bind-minilm-tiny", modalities=["image"])
    x = F.normalize(torch.randn(3, plain.model.embed_dim), dim=-1)
    assert torch.equal(plain._whiten("image", x), x)
    with pytest.raises(ValueError, match="anchor_whitening"):
        BindTrainModule(model="bind-minilm-tiny", modalities=["image"], anchor_whitening=-1.0)
    with pytest.raises(ValueError, match=r"names \['video'\], not trained"):
        BindTrainModule(model="bind-minilm-tiny", modalities=["image"], anchor_whitening={"video": 0.3})
    with pytest.raises(ValueError, match="2 or more"):
        plain.fit_whitening({"image": ["one caption", "one caption"]})


def test_fit_trains_in_the_whitened_space(tmp_path):
    from bind_world.shapes import write_shapes_dataset

    from bind.train import fit

    manifest = write_shapes_dataset(tmp_path / "shapes", train=32, val=16, size=32)
    result = fit(
        manifest,
        modalities=["image"],
        model="bind-minilm-tiny",
        run_dir=tmp_path / "run",
        max_epochs=1,
        batch_size=16,
        num_workers=0,
        export=False,
        progress_bar=False,
        encoders={"image": {"stem": {"patch_size": 8}, "preprocess": {"size": 32, "crop_size": 32}}},
        anchor_whitening=0.3,
        accelerator="cpu",
    )
    mean, w = result.module._whitening["image"]
    assert mean.shape == (384,) and w.shape == (384, 384) and torch.allclose(w, w.T, atol=1e-4)
    assert torch.isfinite(torch.tensor(list(result.metrics.values()))).all()
