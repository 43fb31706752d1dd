"""Batched training augmentation: ``random_shift`` moves every item as a whole, and the trainer applies each plugin's
``augment`` (``train_shift``) to training batches — also to samples a sample cache decoded once in eval mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bind.data.augment import random_shift


def _offset(item: torch.Tensor, shifted: torch.Tensor, pad: int) -> tuple[int, int] | None:
    """The (dy, dx) that turns ``item`` ``[..., H, W]`` into ``shifted``, or None."""
    h, w = item.shape[-2:]
    padded = F.pad(item.reshape(1, -1, h, w), (pad,) * 4, mode="replicate")[0]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            if torch.equal(padded[:, dy : dy + h, dx : dx + w].reshape(item.shape), shifted):
                return dy - pad, dx - pad
    return None


def test_each_clip_moves_as_a_whole_by_its_own_offset():
    clips = torch.randn(16, 3, 4, 12, 12, generator=torch.Generator().manual_seed(0))  # [B, C, T, H, W]
    torch.manual_seed(0)
    out = random_shift(clips, 3)
    offsets = [_offset(c, o, 3) for c, o in zip(clips, out)]
    assert None not in offsets  # every channel and frame of a clip moved by the same offset (motion kept)
    assert all(max(abs(dy), abs(dx)) <= 3 for dy, dx in offsets)
    assert len(set(offsets)) > 1  # items draw their own offsets
    torch.manual_seed(0)
    assert torch.equal(random_shift(clips, 3), out)  # the global RNG decides: seeded per step by the trainer
    assert random_shift(clips, 0) is clips
    with pytest.raises(ValueError, match="pad must be >= 0"):
        random_shift(clips, -1)


@pytest.mark.parametrize(("shape", "pad"), [((16, 3, 4, 12, 12), 3), ((8, 2, 10, 7), 4), ((6, 2, 3, 3), 5)])
def test_shift_equals_replicate_pad_then_crop(shape, pad):
    """Built from copies (no padded tensor), the shift is DrQ's definition value for value, with the same draws —
    also where the offset passes the whole image (pad 5 on 3 x 3: every pixel is the edge's)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    b, h, w = shape[0], shape[-2], shape[-1]
    for seed in range(4):
        torch.manual_seed(seed)
        dy, dx = torch.randint(0, 2 * pad + 1, (2, b)).tolist()
        padded = F.pad(x.reshape(b, -1, h, w), (pad,) * 4, mode="replicate")
        expected = torch.stack([padded[k, :, dy[k] : dy[k] + h, dx[k] : dx[k] + w] for k in range(b)])
        torch.manual_seed(seed)
        out = random_shift(x, pad)
        assert out.is_contiguous() and torch.equal(out, expected.reshape(shape))


def test_trainer_augments_training_batches_of_modalities_that_ask():
    pytest.importorskip("lightning")
    from bind.train.module import BindTrainModule

    shifted = {"preprocess": {"size": 32, "crop_size": 32, "train_shift": 2}}
    module = BindTrainModule(model="bind-minilm-tiny", modalities=["image", "depth"], encoders={"image": shifted})
    images, depths = torch.randn(4, 3, 32, 32), torch.randn(4, 1, 32, 32)
    batch = {"ids": list("abcd"), "inputs": {"image": images, "depth": depths}}
    torch.manual_seed(1)
    out = module.augment(batch)
    assert out["inputs"]["depth"] is depths  # no train_shift: untouched
    assert not torch.equal(out["inputs"]["image"], images)
    assert all(_offset(i, o, 2) is not None for i, o in zip(images, out["inputs"]["image"]))
    assert batch["inputs"]["image"] is images  # the caller's batch is not modified
    negative = {"preprocess": {"size": 32, "crop_size": 32, "train_shift": -1}}
    bad = BindTrainModule(model="bind-minilm-tiny", modalities=["image"], encoders={"image": negative})
    with pytest.raises(ValueError, match=r"^image: preprocess train_shift must be >= 0 pixels, got -1$"):
        bad.augment(batch)
