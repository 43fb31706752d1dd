"""The convolutional stem option (``stem: {conv: [...]}``, Xiao et al. 2021) of the patch and tubelet stems."""

from __future__ import annotations

import pytest
import torch
from torch.nn import Conv3d

import bind
from bind.nn.stems import PatchStem2d, TubeletStem


def test_patch_stem_conv_keeps_the_token_grid_and_learns_below_the_patch():
    plain = PatchStem2d(3, 32, 8, (64, 64))
    conv = PatchStem2d(3, 32, 8, (64, 64), conv=(8, 16))
    x = torch.randn(2, 3, 64, 64)
    assert plain(x).shape == conv(x).shape == (2, 64, 32)
    assert conv.proj.kernel_size == (2, 2) and conv.proj.in_channels == 16
    conv(x).sum().backward()
    assert conv.conv[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="multiples of 8"):
        PatchStem2d(3, 32, 4, (64, 64), conv=(8, 16, 32))


@pytest.mark.parametrize("in_chans", [1, 3])
def test_2d_conv_stem_runs_channels_last_with_the_same_values_and_state_dict(in_chans):
    """The 2-D conv stem's convolutions run channels-last (oneDNN's fast CPU layout), a 1-channel input too; the
    values and gradients are those of the default layout, and the parameters (the state dict) keep theirs."""
    torch.manual_seed(0)
    stem = PatchStem2d(in_chans, 32, 8, (32, 32), conv=(8, 16))
    x = torch.randn(2, in_chans, 32, 32)
    first = stem.conv[0](x)
    assert first.is_contiguous(memory_format=torch.channels_last) and not first.is_contiguous()
    assert all(p.is_contiguous() for p in stem.state_dict().values())
    runs = []
    for layout in ("channels_last", "default"):
        if layout == "default":
            for m in stem.conv:
                if isinstance(m, torch.nn.Conv2d):
                    m.__class__ = torch.nn.Conv2d
        stem.zero_grad()
        y = stem(x)
        y.square().sum().backward()
        runs.append((y.detach(), [p.grad.clone() for p in stem.parameters()]))
    torch.testing.assert_close(runs[0][0], runs[1][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(runs[0][1], runs[1][1]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_tubelet_stem_conv_runs_per_frame():
    stem = TubeletStem(3, 32, 16, 64, num_frames=8, temporal_patch=2, conv=(8, 16))
    x = torch.randn(2, 3, 8, 64, 64)
    out = stem(x)
    assert out.tokens.shape == (2, 4 * 16, 32) and out.time_steps == 4
    # each frame goes through the 2-D stem alone: changing frame 7 leaves the first tubelet's tokens unchanged
    stem.eval()
    y = x.clone()
    y[:, :, 7] += 1
    a, b = stem(x).tokens, stem(y).tokens
    assert torch.equal(a[:, :16], b[:, :16]) and not torch.allclose(a[:, -16:], b[:, -16:])


def test_tubelet_stem_conv_time_kernel_mixes_neighbouring_frames():
    stem = TubeletStem(3, 32, 16, 64, num_frames=8, temporal_patch=2, conv=(8, 16), conv_time_kernel=3).eval()
    assert isinstance(stem.conv[0], torch.nn.Conv3d) and stem.conv[0].kernel_size == (3, 3, 3)
    x = torch.randn(2, 3, 8, 64, 64)
    assert stem(x).tokens.shape == (2, 4 * 16, 32)  # the same token grid as the per-frame stem
    # frame 2 opens the second tubelet; a 3-frame kernel also carries it into the first one (frames 0-1)
    y = x.clone()
    y[:, :, 2] += 1
    a, b = stem(x).tokens, stem(y).tokens
    assert not torch.allclose(a[:, :16], b[:, :16]) and torch.equal(a[:, -16:], b[:, -16:])
    with pytest.raises(ValueError, match="odd"):
        TubeletStem(3, 32, 16, 64, num_frames=8, conv=(8, 16), conv_time_kernel=2)


def test_tubelet_stem_conv_time_stride_keeps_the_token_grid_and_every_frame():
    torch.manual_seed(0)
    kw = dict(num_frames=8, temporal_patch=4, conv=(8, 16), conv_time_kernel=3)
    stem = TubeletStem(3, 32, 16, 64, conv_time_stride=[2, 1], **kw).eval()
    assert stem.conv[0].stride == (2, 2, 2) and stem.proj.kernel_size == (2, 4, 4)
    x = torch.randn(2, 3, 8, 64, 64)
    assert stem(x).tokens.shape == (2, 2 * 16, 32)  # the grid of the unstrided stem: 8 frames / 4 per tubelet
    assert TubeletStem(3, 32, 16, 64, **kw)(x).tokens.shape == (2, 2 * 16, 32)
    for frame in range(8):  # strided in time, yet no frame is skipped: each one reaches some token
        y = x.clone()
        y[:, :, frame] += 1
        assert not torch.allclose(stem(x).tokens, stem(y).tokens)
    with pytest.raises(ValueError, match="one stride >= 1 per conv layer"):
        TubeletStem(3, 32, 16, 64, conv_time_stride=[2], **kw)
    with pytest.raises(ValueError, match=r"^video: conv stem time stride \[2\]"):  # the model names the modality
        bind.create_model(
            "bind-tiny", modalities=["video"], stem={"conv": [8, 16], "conv_time_kernel": 3, "conv_time_stride": [2]}
        )
    with pytest.raises(ValueError, match="3-D layers"):
        TubeletStem(3, 32, 16, 64, num_frames=8, temporal_patch=4, conv=(8, 16), conv_time_stride=[2, 1])
    with pytest.raises(ValueError, match="temporal_patch 2 must be a multiple of 4"):
        TubeletStem(3, 32, 16, 64, **{**kw, "temporal_patch": 2}, conv_time_stride=[2, 2])


def test_video_plugin_reads_conv_time_stride_from_the_config(tmp_path):
    stem = {"patch_size": 16, "temporal_patch": 4, "conv": [8, 16], "conv_time_kernel": 3, "conv_time_stride": [2, 1]}
    model = bind.create_model("bind-tiny", modalities=["video"], precision="fp32", stem=stem, attn_backend="math")
    x = torch.randn(2, 3, 8, 224, 224)
    conv = model.encoder("video").stem.conv
    assert isinstance(conv[0], Conv3d) and conv[0].stride == (2, 2, 2) and conv[3].stride == (1, 2, 2)
    again = bind.load_model(model.save_pretrained(tmp_path / "m"), precision="fp32").encoder("video")
    torch.testing.assert_close(model.encoder("video")(x), again(x))


@pytest.mark.parametrize("modality", ["image", "depth", "thermal", "video"])
def test_conv_stem_is_a_config_switch_that_saves_and_loads(tmp_path, modality):
    model = bind.create_model(
        "bind-tiny", modalities=[modality], precision="fp32", stem={"conv": [8, 16]}, attn_backend="math"
    )
    enc = model.encoder(modality)
    assert enc.stem is not None and any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules())
    size = model.config.encoders[modality].preprocess.get("crop_size", 224)
    chans = 3 if modality in ("image", "video") else 1
    x = torch.randn(2, chans, 4, size, size) if modality == "video" else torch.randn(2, chans, size, size)
    want = enc(x)
    again = bind.load_model(model.save_pretrained(tmp_path / "m"), precision="fp32").encoder(modality)(x)
    torch.testing.assert_close(want, again)


def test_frame_difference_sees_motion_that_a_still_clip_lacks():
    torch.manual_seed(0)
    stem = TubeletStem(3, 16, 8, 32, num_frames=4, temporal_patch=2, frame_difference=True).eval()
    assert stem.proj.in_channels == 6
    still = torch.randn(1, 3, 1, 32, 32).expand(-1, -1, 4, -1, -1)
    moving = torch.roll(still, shifts=1, dims=-1).clone()
    moving[:, :, :2] = still[:, :, :2]  # frames 0-1 equal, 2-3 shifted: the second tubelet holds a change
    # a still clip has no differences: zeroing the difference filters leaves its tokens; a moving clip's change
    with torch.no_grad():
        full_still, full_moving = stem(still).tokens, stem(moving).tokens
        stem.proj.weight[:, 3:] = 0
        assert torch.equal(full_still, stem(still).tokens)
        assert not torch.allclose(full_moving, stem(moving).tokens)


@pytest.mark.parametrize("frames", [4, 3])
@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("frame_difference", [False, True])
def test_3d_conv_stem_input_is_built_in_one_pass_with_the_same_values(autocast, frame_difference, frames):
    """The 3-D conv stem's input (frames, their differences, channels-last, autocast's dtype) is written into one
    buffer: tokens and weight gradients equal those of concatenating (then padding to whole tubelets, converting the
    layout, casting in the convolution) bit for bit, and gradients still reach the clips (saliency, attacks)."""
    from unittest import mock

    from bind.nn import stems

    def concatenated(clips: torch.Tensor, difference: bool) -> torch.Tensor:
        return torch.cat([clips, torch.diff(clips, dim=2, prepend=clips[:, :, :1])], dim=1) if difference else clips

    torch.manual_seed(0)
    stem = TubeletStem(
        3, 16, 8, 32, 4, temporal_patch=2, conv=[8, 8], conv_time_kernel=3, frame_difference=frame_difference
    )
    x = torch.randn(3, 3, frames, 32, 32, requires_grad=True)
    runs = []
    for reference in (False, True):
        stem.zero_grad()
        x.grad = None
        with (
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
            mock.patch.object(stems, "_conv3d_input", concatenated if reference else stems._conv3d_input),
        ):
            y = stem(x).tokens
        y.float().square().sum().backward()
        runs.append((y.detach(), [p.grad.clone() for p in (*stem.conv.parameters(), *stem.proj.parameters())], x.grad))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][0].dtype == (torch.bfloat16 if autocast else torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    # the clips' gradient: the same sums in another order (a padded clip's repeated frame summed in bf16 here)
    tol = {"atol": 4e-3, "rtol": 1.6e-2} if autocast else {}
    torch.testing.assert_close(runs[0][2], runs[1][2], **tol)
