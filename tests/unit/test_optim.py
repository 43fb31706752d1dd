"""One learning-rate schedule (:mod:`bind.optim`) for every training loop: bind.train's module and bind.qa.fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bind.optim import warmup_cosine, warmup_cosine_schedule

ROOT = Path(__file__).resolve().parents[2]


def test_warmup_cosine_schedule_steps_the_multiplier_per_batch():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    entry = warmup_cosine_schedule(opt, warmup_steps=2, total_steps=10)
    assert entry["interval"] == "step"
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        entry["scheduler"].step()
    assert lrs == pytest.approx([2.0 * warmup_cosine(s, 2, 10) for s in range(10)])
    assert lrs[:3] == pytest.approx([1.0, 2.0, 2.0]) and lrs[-1] < 0.1
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))  # decays after the warmup
    assert warmup_cosine(10, 2, 10, min_ratio=0.1) == pytest.approx(0.1)


def test_no_training_loop_writes_its_own_schedule():
    owners = sorted(str(f.relative_to(ROOT)) for f in (ROOT / "bind").rglob("*.py") if "LambdaLR" in f.read_text())
    assert owners == ["bind/optim.py"]


def test_qa_fit_and_the_train_module_use_the_shared_schedule(monkeypatch):
    import bind.optim
    import bind.train.module
    from bind.qa import fit

    calls = []

    def spy(opt, warmup_steps, total_steps, min_ratio=0.0):
        calls.append((warmup_steps, total_steps))
        return warmup_cosine_schedule(opt, warmup_steps, total_steps, min_ratio)

    monkeypatch.setattr(bind.optim, "warmup_cosine_schedule", spy)
    layer = torch.nn.Linear(2, 1)
    losses = fit(
        layer,
        lambda batch: layer(torch.stack(batch)).pow(2).mean(),
        [torch.ones(2)] * 8,
        epochs=2,
        lr=0.1,
        batch_size=2,
        log=None,
    )
    assert len(losses) == 2 and calls == [(1, 8)]  # 2 epochs x 4 batches, warmup 1/20 of them (at least 1)
    assert bind.train.module.warmup_cosine_schedule is warmup_cosine_schedule
