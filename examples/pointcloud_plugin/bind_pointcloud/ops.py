"""Point operations in plain PyTorch (CPU and GPU, batched): farthest point sampling and k-nearest-neighbour grouping,
as Point-BERT (Yu et al., CVPR 2022) and Point-MAE (Pang et al., ECCV 2022) use them to cut a cloud into patches."""

from __future__ import annotations

import torch


@torch.no_grad()
def farthest_point_sample(xyz: torch.Tensor, m: int) -> torch.Tensor:
    """Indices ``[B, m]`` of ``m`` points of ``xyz [B, N, 3]`` chosen by farthest point sampling.

    Deterministic: the first pick is the point farthest from the centroid (ties: the lowest index), every next the
    point farthest from those picked. ``m > N`` repeats the picks cyclically.
    """
    b, n, _ = xyz.shape
    if m > n:
        return farthest_point_sample(xyz, n)[:, torch.arange(m, device=xyz.device) % n]
    pts = xyz.float()
    idx = torch.empty(b, m, dtype=torch.long, device=xyz.device)
    dist = torch.full((b, n), float("inf"), device=xyz.device)
    far = ((pts - pts.mean(1, keepdim=True)) ** 2).sum(-1).argmax(-1)
    rows = torch.arange(b, device=xyz.device)
    for i in range(m):
        idx[:, i] = far
        dist = torch.minimum(dist, ((pts - pts[rows, far][:, None]) ** 2).sum(-1))
        far = dist.argmax(-1)
    return idx


def gather_points(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x [B, N, C]`` at ``idx [B, *S]`` -> ``[B, *S, C]``."""
    b = x.shape[0]
    flat = idx.reshape(b, -1)
    out = torch.gather(x, 1, flat[..., None].expand(-1, -1, x.shape[-1]))
    return out.reshape(*idx.shape, x.shape[-1])


@torch.no_grad()
def knn(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[B, M, k]`` of the ``k`` nearest ``points [B, N, 3]`` of every ``query [B, M, 3]`` (nearest
    first; ``k > N`` repeats)."""
    d = torch.cdist(query.float(), points.float())
    kk = min(k, points.shape[1])
    idx = d.topk(kk, dim=-1, largest=False, sorted=True).indices
    if kk < k:
        idx = idx[..., torch.arange(k, device=idx.device) % kk]
    return idx
