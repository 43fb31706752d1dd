"""``progressive_resize``: a modality's training inputs shrunk for the first part of training, then full size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bind.data.augment import resize_spatial

pytest.importorskip("lightning")

ENCODERS = {"image": {"stem": {"patch_size": 8}, "preprocess": {"size": 32, "crop_size": 32}}}


def test_resize_spatial_treats_every_frame_and_channel_alike():
    x = torch.randn(2, 3, 5, 64, 48)
    y = resize_spatial(x, 0.75)
    assert y.shape == (2, 3, 5, 48, 36)
    frame = F.interpolate(x[1, :, 3][None], size=(48, 36), mode="bilinear", antialias=True, align_corners=False)[0]
    assert torch.equal(y[1, :, 3], frame)
    assert resize_spatial(torch.randn(3, 32, 32), 0.5).shape == (3, 16, 16)
    assert resize_spatial(x, 1.0) is x
    flat = torch.full((1, 3, 40, 40), 0.25)  # a flat image stays flat (antialiased weights sum to one)
    assert torch.allclose(resize_spatial(flat, 0.6), torch.full((1, 3, 24, 24), 0.25))
    for bad in (0.0, 1.5, -0.5):
        with pytest.raises(ValueError, match="scale must lie in"):
            resize_spatial(x, bad)


def test_the_schedule_is_checked():
    from bind.train.module import BindTrainModule

    kw = dict(model="bind-minilm-tiny", modalities=["image"], encoders=ENCODERS)
    for bad, match in (
        ({"video": {"scale": 0.5, "until": 0.5}}, "not trained here"),
        ({"image": {"scale": 0.5}}, "expected"),
        ({"image": {"scale": 0.5, "until": 0.5, "ramp": 1}}, "expected"),
        ({"image": 0.5}, "expected"),
        ({"image": {"scale": 0.0, "until": 0.5}}, "must lie in"),
        ({"image": {"scale": 0.5, "until": 1.5}}, "must lie in"),
        ({"image": [{"scale": 0.25, "until": 0.5}, {"scale": 0.5, "until": 0.5}]}, "must exceed"),
        ({"image": [{"scale": 0.25, "until": 0.5}, {"until": 0.8}]}, "expected"),
    ):
        with pytest.raises(ValueError, match=match):
            BindTrainModule(progressive_resize=bad, **kw)


@pytest.mark.parametrize(
    "schedule, expect",
    [
        ({"scale": 0.5, "until": 0.5}, {(0, 16), (1, 32)}),
        ([{"scale": 0.25, "until": 0.25}, {"scale": 0.5, "until": 0.75}], {(0, 8), (1, 16), (2, 16), (3, 32)}),
    ],
)
def test_fit_trains_small_first_then_full_size_and_validates_full_size(tmp_path, fit_tiny_image, schedule, expect):
    """``until: 0.5`` over two epochs: the encoder sees 16-pixel images in epoch 0 and 32-pixel ones in epoch 1; a
    list of stages steps the size up (8, 16, 16, 32 over four epochs); validation always gets the full 32 pixels."""
    import lightning as L
    from bind_world.shapes import write_shapes_dataset

    seen: list[tuple[str, int, int]] = []

    class Record(L.Callback):
        def on_fit_start(self, trainer, module):
            def hook(_, args):
                seen.append(("train" if module.training else "val", trainer.current_epoch, args[0].shape[-1]))

            module.model.encoder("image").stem.register_forward_pre_hook(hook)

    manifest = write_shapes_dataset(tmp_path / "shapes", train=16, val=8, size=32)
    result = fit_tiny_image(
        manifest,
        tmp_path / "run",
        max_epochs=max(e for e, _ in expect) + 1,
        progressive_resize={"image": schedule},
        callbacks=[Record()],
    )
    train = {(e, size) for kind, e, size in seen if kind == "train"}
    assert train == expect
    assert {size for kind, _, size in seen if kind == "val"} == {32}
    assert torch.isfinite(torch.tensor(list(result.metrics.values()))).all()
