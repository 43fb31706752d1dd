"""PNG plots of evaluation results (matplotlib, Agg backend, no display needed): the any-pair recall matrix
(query modality x gallery modality, as ImageBind's emergent-retrieval tables) and a query x gallery similarity
heatmap."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_pair_matrix(
    values: dict[tuple[str, str], float],
    modalities: Sequence[str],
    path: str | Path,
    title: str = "recall@1 (query rows, gallery columns)",
) -> Path:
    """Heatmap of ``values[(query_modality, gallery_modality)]``; missing pairs are left blank."""
    plt = _pyplot()
    n = len(modalities)
    grid = torch.full((n, n), float("nan"))
    for (q, g), v in values.items():
        if q in modalities and g in modalities:
            grid[modalities.index(q), modalities.index(g)] = v
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.5, 1.0 * n + 2))
    im = ax.imshow(grid.numpy(), vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(n), modalities, rotation=45, ha="right")
    ax.set_yticks(range(n), modalities)
    ax.set_xlabel("gallery")
    ax.set_ylabel("query")
    for i in range(n):
        for j in range(n):
            if not torch.isnan(grid[i, j]):
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.2f}",
                    ha="center",
                    va="center",
                    color="white" if grid[i, j] < 0.6 else "black",
                    fontsize=9,
                )
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_similarity(
    scores: torch.Tensor,
    path: str | Path,
    query_labels: Sequence[str] | None = None,
    gallery_labels: Sequence[str] | None = None,
    title: str = "similarity",
    xlabel: str = "gallery",
    ylabel: str = "query",
) -> Path:
    """Heatmap of a ``[Q, G]`` similarity matrix (tick labels shown when there are at most 40 per axis)."""
    plt = _pyplot()
    q, g = scores.shape
    fig, ax = plt.subplots(figsize=(min(2 + 0.25 * g, 16), min(1.5 + 0.25 * q, 16)))
    im = ax.imshow(scores.float().numpy(), cmap="magma", aspect="auto")
    if gallery_labels is not None and g <= 40:
        ax.set_xticks(range(g), list(gallery_labels), rotation=90, fontsize=7)
    if query_labels is not None and q <= 40:
        ax.set_yticks(range(q), list(query_labels), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
