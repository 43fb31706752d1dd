"""Two CPU processes (gloo, DDP) give the loss and gradients of one process on the same global batch.

The encoder is bind's tiny image encoder with a learnable temperature (and SigLIP bias); the anchor embeddings are
fixed. The global batch mixes samples with and without the modality, so the ranks hold different numbers of pairs —
in the second case one rank holds none. With a queue (``anchor_queue``), every rank scores its rows against the same
queued negatives as well, some masked per row.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytestmark = [pytest.mark.distributed]
WORLD, N, DIM = 2, 8, 64


class Head(nn.Module):
    """bind-tiny's image encoder (+ a bias for SigLIP): what a training step differentiates."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        import bind

        torch.manual_seed(0)
        model = bind.create_model("bind-tiny", modalities=["image"], attn_backend="math")
        self.encoder = model.encoder("image").train()
        self.bias = nn.Parameter(torch.tensor(-10.0)) if kind == "siglip" else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return self.encoder(x), self.encoder.get_logit_scale(), None if self.bias is None else self.bias * 1.0


def _batch(present_mask: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 3, 32, 32, generator=g)
    y = F.normalize(torch.randn(N, DIM, generator=g), dim=-1)
    return x, y, torch.tensor(present_mask)


def _queue() -> tuple[torch.Tensor, torch.Tensor]:
    """Queued negatives [5, DIM] and, per global row, the entries masked out of its softmax."""
    negatives = F.normalize(torch.randn(5, DIM, generator=torch.Generator().manual_seed(2)), dim=-1)
    return negatives, (torch.arange(N)[:, None] + torch.arange(5)[None]) % 3 == 0


def _step(model: nn.Module, x, y, present, kind: str, gather: bool, queue: tuple | None = None):
    from bind.losses import contrastive_loss

    emb, scale, bias = model(x[present] if present.any() else x[:1])
    emb = emb if present.any() else emb[:0]  # a rank without pairs still runs the encoder (as BindTrainModule does)
    negatives, mask = queue if queue is not None else (None, None)
    loss, n = contrastive_loss(
        emb,
        y[present],
        scale,
        kind=kind,
        logit_bias=bias,
        gather=gather,
        gather_y_grad=False,
        negatives=negatives,
        negatives_mask=None if mask is None else mask[present],
    )
    loss.backward()
    return loss.detach(), n


CASES = {
    "infonce-unequal": ("infonce", [True, True, False, True, True, False, False, True]),  # rank 0: 3 pairs, rank 1: 2
    "infonce-rank-without-pairs": ("infonce", [True, True, True, True, False, False, False, False]),
    "siglip-unequal": ("siglip", [True, False, True, True, True, True, False, True]),
    "infonce-queue": ("infonce", [True, True, False, True, True, False, False, True]),
}


def _worker(rank: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    # a file rendezvous: no port picked, released and raced for (a TCP store on a "free" port once aborted rank 1)
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=WORLD)
    try:
        for name, (kind, mask) in CASES.items():
            model = Head(kind)
            ddp = DDP(model)
            x, y, present = _batch(mask)
            rows = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
            queue = _queue() if name.endswith("queue") else None
            if queue is not None:
                queue = (queue[0], queue[1][rows])
            loss, n = _step(ddp, x[rows], y[rows], present[rows], kind, gather=True, queue=queue)
            logged = loss.clone()
            dist.all_reduce(logged)
            torch.save(
                {
                    "loss": logged / WORLD,
                    "n": n,
                    "grads": {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None},
                },
                f"{out}/{name}-rank{rank}.pt",
            )
            del ddp, model  # the reducer holds the process group: free it before the group goes
        dist.barrier()  # no rank tears down its connections while its peer still uses them
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(out),), nprocs=WORLD, join=True)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_process_loss_and_grads_equal_single_process(ddp_results, case):
    kind, mask = CASES[case]
    model = Head(kind)
    x, y, present = _batch(mask)
    loss, n = _step(model, x, y, present, kind, gather=False, queue=_queue() if case.endswith("queue") else None)
    ref = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert any(float(g.abs().max()) > 1e-4 for g in ref.values())  # the comparison is not between zeros
    for rank in range(WORLD):
        got = torch.load(ddp_results / f"{case}-rank{rank}.pt")
        assert got["n"] == n == sum(mask)
        assert abs(float(got["loss"]) - float(loss)) <= 1e-5
        assert set(got["grads"]) == set(ref)
        worst = max(float((got["grads"][k] - ref[k]).abs().max()) for k in ref)
        assert worst <= 1e-5, f"rank {rank}: largest gradient difference {worst}"
