"""Contrastive losses: InfoNCE / SigLIP against direct formulas, scaling, empty batches, temperature clamping."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bind.losses import (
    SIGLIP_BIAS_INIT,
    SIGLIP_SCALE_INIT,
    clamp_logit_scale_,
    contrastive_loss,
    logit_scale_init,
)


def _pair(n: int = 6, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    y = F.normalize(x + 0.5 * torch.randn(n, d, generator=g), dim=-1)
    return x, y


def test_infonce_is_the_symmetric_cross_entropy():
    x, y = _pair()
    scale = torch.tensor(14.0)
    loss, n = contrastive_loss(x, y, scale)
    logits = scale * x @ y.T
    p_xy = logits.softmax(1).diagonal()
    p_yx = logits.T.softmax(1).diagonal()
    expected = -(p_xy.log().mean() + p_yx.log().mean()) / 2
    assert n == 6
    assert torch.allclose(loss, expected, atol=1e-6)


def test_siglip_matches_its_definition():
    x, y = _pair(5)
    t, b = torch.tensor(10.0), torch.tensor(-10.0)
    loss, _ = contrastive_loss(x, y, t, kind="siglip", logit_bias=b)
    z = 2 * torch.eye(5) - 1
    expected = -torch.log(torch.sigmoid(z * (t * x @ y.T + b))).sum() / 5
    assert torch.allclose(loss, expected, atol=1e-5)
    with pytest.raises(ValueError, match="logit_bias"):
        contrastive_loss(x, y, t, kind="siglip")


def test_loss_prefers_matching_pairs_and_has_gradients():
    x, y = _pair()
    shuffled = y[torch.tensor([1, 2, 3, 4, 5, 0])]
    scale = torch.tensor(20.0, requires_grad=True)
    good, _ = contrastive_loss(x, y, scale)
    bad, _ = contrastive_loss(x, shuffled, scale)
    assert good < bad
    xr = x.clone().requires_grad_()
    loss, _ = contrastive_loss(xr, y, scale)
    loss.backward()
    assert xr.grad.abs().sum() > 0 and scale.grad is not None


def test_empty_batch_is_zero_but_connected():
    scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    loss, n = contrastive_loss(torch.zeros(0, 4), torch.zeros(0, 4), scale.exp())
    assert n == 0 and loss.item() == 0.0
    loss.backward()
    assert scale.grad is not None and float(scale.grad) == 0.0


def test_shape_and_kind_errors():
    x, y = _pair()
    with pytest.raises(ValueError, match="must be equal"):
        contrastive_loss(x, y[:3], torch.tensor(1.0))
    with pytest.raises(ValueError, match="unknown contrastive loss"):
        contrastive_loss(x, y, torch.tensor(1.0), kind="triplet")


def test_temperature_conventions():
    assert logit_scale_init("infonce") == pytest.approx(math.log(1 / 0.07))
    assert logit_scale_init("siglip") == pytest.approx(math.log(10)) == SIGLIP_SCALE_INIT
    assert SIGLIP_BIAS_INIT == -10.0
    p = torch.nn.Parameter(torch.tensor([-1.0, 2.0, 7.0]))
    clamp_logit_scale_(p)
    assert p.tolist() == pytest.approx([0.0, 2.0, math.log(100)])
