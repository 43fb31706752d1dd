"""``anchor_queue``: earlier batches' anchor embeddings scored as more negatives on the modality -> anchor side of
InfoNCE, with an item's own caption left out of its softmax."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("lightning")

ENCODERS = {"image": {"stem": {"patch_size": 8}, "preprocess": {"size": 32, "crop_size": 32}}}


def _batch(module, captions: list[str]) -> dict:
    from bind.registry import get_modality

    text, cfg = get_modality("text"), module.model.preprocess_config("text")
    g = torch.Generator().manual_seed(len(captions) + sum(map(len, captions)))
    return {
        "ids": [str(i) for i in range(len(captions))],
        "inputs": {"image": torch.rand(len(captions), 3, 32, 32, generator=g)},
        "anchors": {"image": torch.stack([text.process(c, cfg) for c in captions])},
        "anchor_keys": {"image": captions},
    }


def _module(**kw):
    from bind.train.module import BindTrainModule

    torch.manual_seed(0)
    return BindTrainModule(model="bind-minilm-tiny", modalities=["image"], encoders=ENCODERS, **kw).train()


def test_the_loss_scores_queued_captions_except_an_items_own():
    module = _module(anchor_queue={"image": 16})
    first = _batch(module, [f"a photo of shape number {i}." for i in range(6)])
    second = _batch(module, [f"a photo of shape number {i}." for i in (4, 5, 6, 7)])  # 4 and 5 are queued
    with torch.no_grad():
        module.pair_losses(first)
        queued = module._anchor_embed(first["anchors"]["image"])
        loss, n = module.pair_losses(second)["image"]
        x = module.model.encode("image", second["inputs"]["image"])
        y = module._anchor_embed(second["anchors"]["image"])
    scale = module.model.logit_scale("image")
    queue_logits = scale * x @ queued.T
    queue_logits[0, 4] = queue_logits[1, 5] = float("-inf")  # rows 0 and 1 hold the queued captions 4 and 5
    xy = torch.cat([scale * x @ y.T, queue_logits], dim=1)
    diag = torch.arange(4)
    expected = (F.cross_entropy(xy, diag) + F.cross_entropy(scale * y @ x.T, diag)) / 2
    assert n == 4
    assert torch.allclose(loss, expected, atol=1e-5), (float(loss), float(expected))
    plain = _module()
    plain.load_state_dict(module.state_dict())
    with torch.no_grad():
        assert float(loss) > float(plain.pair_losses(second)["image"][0]) + 0.1  # the queue made it harder


def test_the_queue_keeps_the_newest_k_and_only_grows_in_training():
    module = _module(anchor_queue=5)
    with torch.no_grad():
        module.pair_losses(_batch(module, [f"caption {i}." for i in range(4)]))
        module.pair_losses(_batch(module, [f"caption {i}." for i in range(4, 7)]))
        embeddings, keys = module._queue["image"]
        assert embeddings.shape == (5, module.model.embed_dim)
        from bind.train.module import caption_hashes

        assert keys.tolist() == caption_hashes([f"caption {i}." for i in (4, 5, 6, 0, 1)]).tolist()
        module.eval()
        module.pair_losses(_batch(module, ["caption 9."]))
        assert module._queue["image"][1].tolist() == keys.tolist()  # validation leaves it alone


def test_the_queue_travels_in_checkpoints():
    module = _module(anchor_queue={"image": 8})
    with torch.no_grad():
        module.pair_losses(_batch(module, [f"caption {i}." for i in range(3)]))
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    fresh = _module(anchor_queue={"image": 8})
    fresh.on_load_checkpoint(checkpoint)
    for a, b in zip(module._queue["image"], fresh._queue["image"]):
        assert torch.equal(a, b)


def test_hashes_are_blake2b_so_every_process_agrees():
    """Python's ``hash`` of a string differs between processes (PYTHONHASHSEED); DDP ranks must agree."""
    import hashlib

    from bind.train.module import caption_hashes

    keys = ["a red cube.", "a red cube.", "x"]
    expected = [
        int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little", signed=True) for k in keys
    ]
    got = caption_hashes(keys).tolist()
    assert got == expected and got[0] == got[1] != got[2]


def test_sizes_and_loss_are_checked():
    with pytest.raises(ValueError, match="anchor_queue needs the infonce loss"):
        _module(anchor_queue=8, loss="siglip")
    with pytest.raises(ValueError, match="anchor_queue: sizes must be whole numbers"):
        _module(anchor_queue=2.5)
    with pytest.raises(ValueError, match="anchor_queue: every weight must be >= 0"):
        _module(anchor_queue=-4)
    with pytest.raises(ValueError, match=r"anchor_queue names \['video'\], not trained"):
        _module(anchor_queue={"video": 8})


def test_a_run_resumed_from_its_checkpoint_ends_with_the_uninterrupted_runs_weights(tmp_path, fit_tiny_image):
    from bind_world.shapes import write_shapes_dataset
    from lightning.pytorch.callbacks import Callback

    from bind.train.module import QUEUE_KEY

    class StopAfterOneEpoch(Callback):
        def on_train_epoch_end(self, trainer, module):
            trainer.should_stop = True

    manifest = write_shapes_dataset(tmp_path / "shapes", train=48, val=16, size=32)

    def run(name: str, ckpt: Path | None = None, stop: bool = False) -> dict[str, torch.Tensor]:
        return fit_tiny_image(
            manifest,
            tmp_path / name,
            max_epochs=2,
            anchor_queue={"image": 40},
            ckpt_path=None if ckpt is None else str(ckpt),
            callbacks=[StopAfterOneEpoch()] if stop else [],
        ).model.state_dict()

    def differ(a, b):
        return [k for k in a if not torch.equal(a[k], b[k])]

    whole = run("whole")
    run("stopped", stop=True)
    last = tmp_path / "stopped/checkpoints/last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    saved = checkpoint[QUEUE_KEY]["image"]
    assert saved["embeddings"].shape[0] == saved["keys"].shape[0] == 40  # 3 steps of 16: the newest 40 kept
    assert not differ(whole, run("resumed", last))
    del checkpoint[QUEUE_KEY]  # the control: resumed with an empty queue, the run ends elsewhere
    torch.save(checkpoint, tmp_path / "no_queue.ckpt")
    assert differ(whole, run("resumed_without_queue", tmp_path / "no_queue.ckpt"))
