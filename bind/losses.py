"""Contrastive losses between a modality's embeddings and its anchor's, local + all-gather across ranks.

* Symmetric InfoNCE (van den Oord et al. 2018; CLIP, Radford et al. 2021) in open_clip's ``ClipLoss`` layout
  (Cherti et al. 2023): every rank scores its *local* rows against the rows gathered from all ranks, with gradients
  flowing back through the gather (``torch.distributed.nn.functional.all_gather``), so the sum over ranks of the
  local losses is the full-batch loss and DDP's gradient averaging gives exactly the single-process gradient.
* Sigmoid loss (SigLIP, Zhai et al. 2023): ``-mean_i sum_j log sigmoid(z_ij (t x_i.y_j + b))``, temperature init
  ln 10 and bias -10.

Batches may mix samples carrying different modality subsets, so each rank may hold a different number of pairs
for a modality (even none): sizes are exchanged first and rows padded to the largest before gathering. The local
loss is scaled by ``world_size / n_global`` so that (a) averaging the per-rank values gives the global mean loss
(what one logs) and (b) DDP's mean of gradients equals the gradient of the global mean loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bind.config import LOGIT_SCALE_INIT, LOGIT_SCALE_MAX

LOSSES = ("infonce", "siglip")
SIGLIP_SCALE_INIT, SIGLIP_BIAS_INIT = math.log(10.0), -10.0


def logit_scale_init(loss: str) -> float:
    """Initial ``log`` temperature: ln(1/0.07) for InfoNCE (CLIP), ln 10 for SigLIP."""
    return SIGLIP_SCALE_INIT if loss == "siglip" else LOGIT_SCALE_INIT


def clamp_logit_scale_(param: torch.Tensor) -> None:
    """Clamp a ``log`` temperature to ``[0, ln 100]`` in place (open_clip does this after every optimiser step)."""
    with torch.no_grad():
        param.clamp_(0.0, LOGIT_SCALE_MAX)


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_sizes(n: int, device: torch.device) -> list[int]:
    """The row count of every rank (``[n]`` when not distributed)."""
    rank, world = _dist()
    if world == 1:
        return [n]
    local = torch.tensor([n], device=device, dtype=torch.long)
    out = [torch.zeros_like(local) for _ in range(world)]
    torch.distributed.all_gather(out, local)
    return [int(t) for t in out]


def all_gather_rows(x: torch.Tensor, sizes: list[int], with_grad: bool = True) -> torch.Tensor:
    """Concatenate ``x [n_rank, ...]`` of every rank (ranks may differ in ``n``), in rank order.

    With ``with_grad`` the backward pass returns each rank the gradient that all ranks' losses put on its rows
    (``torch.distributed.nn.functional.all_gather``).
    """
    if len(sizes) == 1:
        return x
    pad = max(sizes) - x.shape[0]
    if pad:
        x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))], dim=0)
    if with_grad:
        from torch.distributed.nn.functional import all_gather

        parts = all_gather(x.contiguous())
    else:
        parts = [torch.empty_like(x) for _ in sizes]
        torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)


def contrastive_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    kind: str = "infonce",
    logit_bias: torch.Tensor | None = None,
    gather: bool = True,
    gather_y_grad: bool | None = None,
    negatives: torch.Tensor | None = None,
    negatives_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Loss between paired unit-norm rows ``x [n, D]`` (the modality) and ``y [n, D]`` (its anchor).

    ``logit_scale`` is the *exponentiated* temperature (``exp(log_scale)``). Returns ``(loss, n_global)``: the loss
    of this rank (to back-propagate; see the module docstring for its scaling) and the number of pairs over all
    ranks. When no rank holds a pair the loss is a zero that still depends on ``logit_scale`` (so every parameter
    stays in the graph). ``gather_y_grad`` (default: ``y.requires_grad``) lets a frozen anchor skip the gradient
    exchange.

    ``negatives [K, D]`` (InfoNCE only): more anchor rows every ``x`` row is scored against, beside the gathered
    ``y`` (a queue of earlier batches' anchors, the same on every rank); ``negatives_mask [n, K]`` marks the entries
    that are no negative of a row (its own caption), left out of its softmax.
    """
    if kind not in LOSSES:
        raise ValueError(f"unknown contrastive loss {kind!r}; expected one of {LOSSES}")
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(f"contrastive_loss: x {tuple(x.shape)} and y {tuple(y.shape)} must be equal [n, D]")
    if negatives is not None and kind != "infonce":
        raise ValueError(f"contrastive_loss: queued negatives need the infonce loss, not {kind!r}")
    rank, world = _dist() if gather else (0, 1)
    sizes = gather_sizes(x.shape[0], x.device) if world > 1 else [x.shape[0]]
    n_global, offset = sum(sizes), sum(sizes[:rank])
    if n_global == 0:
        zero = logit_scale * 0.0
        return (zero + logit_bias * 0.0 if logit_bias is not None else zero), 0
    gather_y_grad = y.requires_grad if gather_y_grad is None else gather_y_grad
    # collectives in the same order on every rank: sizes, x (InfoNCE only), y
    x_all = all_gather_rows(x, sizes, with_grad=True) if world > 1 and kind == "infonce" else x
    y_all = all_gather_rows(y, sizes, with_grad=gather_y_grad) if world > 1 else y
    n = x.shape[0]
    if n == 0:  # no pair on this rank: contribute nothing, but keep the gathers in the graph (their backward is a
        # collective every rank must join)
        local = (x_all.sum() + y_all.sum()) * 0.0 + logit_scale * 0.0
        return (local + logit_bias * 0.0 if logit_bias is not None else local), n_global
    diag = torch.arange(offset, offset + n, device=x.device)
    logits_xy = logit_scale * x @ y_all.T  # local x rows vs every y
    if negatives is not None and negatives.shape[0]:
        queued = logit_scale * x @ negatives.to(x.dtype).T
        if negatives_mask is not None:
            queued = queued.masked_fill(negatives_mask, float("-inf"))
        logits_xy = torch.cat([logits_xy, queued], dim=1)
    if kind == "infonce":
        logits_yx = logit_scale * y @ x_all.T  # local y rows vs every x
        total = (
            F.cross_entropy(logits_xy.float(), diag, reduction="sum")
            + F.cross_entropy(logits_yx.float(), diag, reduction="sum")
        ) / 2
    else:
        if logit_bias is None:
            raise ValueError("the siglip loss needs a logit_bias")
        z = -torch.ones_like(logits_xy)
        z[torch.arange(n, device=x.device), diag] = 1.0
        # each (i, j) pair is scored once over all ranks, as local row i of x
        total = -F.logsigmoid(z * (logits_xy + logit_bias)).float().sum()
    return total * (world / n_global), n_global
